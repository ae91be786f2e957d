"""Model and dataset cards rendered from the Jinja templates in ``model_cards/``.

huggingface_hub does the rendering and writes the YAML metadata (licence, tags,
``model-index`` with the measured results), so the cards validate on the Hub.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

if TYPE_CHECKING:
    from imagezoo.tasks import Recipe, Task

TEMPLATES = Path(os.environ.get("IMAGEZOO_CARD_TEMPLATES", Path(__file__).resolve().parents[2] / "model_cards"))


def template_path(name: str) -> str:
    """``model_cards/<name>`` of the checkout (the templates are not installed with the package)."""
    path = TEMPLATES / name
    if not path.is_file():
        raise FileNotFoundError(f"card template {path} not found: set IMAGEZOO_CARD_TEMPLATES to a checkout's model_cards/")
    return str(path)


def dataset_card(template: str, card_data: dict, **context) -> DatasetCard:
    """Render ``model_cards/<template>`` as a dataset card with ``card_data`` as YAML."""
    return DatasetCard.from_template(DatasetCardData(**card_data), template_path=template_path(template), **context)


def model_card(
    template: str,
    card_data: dict,
    results: dict[str, float],
    task_type: str,
    dataset_name: str,
    dataset_type: str,
    split: str = "test",
    **context,
) -> ModelCard:
    """Render a model card whose ``model-index`` lists ``results`` (metric -> measured value)."""
    eval_results = [
        EvalResult(
            task_type=task_type,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=metric,
            metric_name=metric.replace("_", " "),
            metric_value=round(float(value), 4),
        )
        for metric, value in results.items()
        if value is not None and math.isfinite(value)  # not measured (no test slide with cells; one class only)
    ]
    data = ModelCardData(eval_results=eval_results, **card_data)
    return ModelCard.from_template(data, template_path=template_path(template), **context)


#: the training sentence's loss, by the recipe's ``class_balance`` (one wording for every classifier template)
LOSS_DESCRIPTIONS = {
    "loss": "class-balanced cross-entropy",
    "sampler": "cross-entropy on class-balanced batches (each class drawn equally often)",
    None: "unweighted cross-entropy",
}


def classifier_card(task: "Task", recipe: "Recipe", metrics: dict, folder: Path, repo_id: str, **context) -> ModelCard:
    """The card of a timm classifier folder trained for ``task``: the Hub metadata, the model-index of its
    test ``metrics``, and the task's facts for its template; ``context`` adds what the template shows."""
    return model_card(
        task.card_template,
        dict(
            license="apache-2.0",
            library_name="timm",
            pipeline_tag="image-classification",
            tags=["image-classification", "timm", "imagezoo", *task.card_facts.get("tags", [])],
            datasets=[task.dataset_repo_id],
            metrics=["accuracy", "balanced_accuracy", "roc_auc"],
            model_name=folder.name,
            base_model=f"timm/{recipe.arch}.in1k" if recipe.pretrained else None,
        ),
        results={k: metrics[k] for k in ("balanced_accuracy", "accuracy", "roc_auc", "ece")},
        task_type="image-classification",
        dataset_name=task.dataset_name,
        dataset_type=task.dataset_repo_id,
        **task.card_facts,
        repo_id=repo_id,
        local_dir=str(folder),
        label_names=list(task.label_names),
        metrics=metrics,
        split_description=task.split_description,
        recipe=dataclasses.asdict(recipe),
        loss_description=LOSS_DESCRIPTIONS[recipe.class_balance],
        prepare_command=task.prepare_command,
        keep_known=task.keep_known,
        mahalanobis_keep=task.mahalanobis_keep,
        **context,
    )
