"""Model and dataset cards rendered from the Jinja templates in ``model_cards/``.

huggingface_hub does the rendering and writes the YAML metadata (licence, tags,
``model-index`` with the measured results), so the cards validate on the Hub.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

TEMPLATES = Path(os.environ.get("IMAGEZOO_CARD_TEMPLATES", Path(__file__).resolve().parents[2] / "model_cards"))


def dataset_card(template: str, card_data: dict, **context) -> DatasetCard:
    """Render ``model_cards/<template>`` as a dataset card with ``card_data`` as YAML."""
    return DatasetCard.from_template(DatasetCardData(**card_data), template_path=str(TEMPLATES / template), **context)


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
    ]
    data = ModelCardData(eval_results=eval_results, **card_data)
    return ModelCard.from_template(data, template_path=str(TEMPLATES / template), **context)
