"""One brain MRI analysis, as the Space, the chat and tests see it: gate, tumour type, tumour yes/no.

The gate runs first; a refused image gets no tumour output at all. The tumour probability is
``1 - p(notumor)`` of the type model, which beat a separate yes/no model on the de-duplicated
yes/no test split (``training/compare_tumor_detection.py``; both model cards give the comparison). A prediction whose top two
probabilities are closer than the type model's ``decisive_margin`` (its config.json, from the task registry) is
flagged "not decisive" rather than shown as an answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from imagezoo.chat.corpus import ModelFacts
from imagezoo.images import ImageSource
from imagezoo.inference import ImageClassifier
from imagezoo.predictors.base import local_folder, resolve_model_folder
from imagezoo.predictors.gated import GatedClassifier
from imagezoo.tasks import HUB_PREFIX, NO_TUMOUR, default_model_id


@dataclass(frozen=True)
class ScanAnalysis:
    """What one image gave; tumour fields are ``None`` when the gate refused it."""

    gate: str
    gate_score: float
    accepted: bool
    probabilities: dict[str, float] | None = None
    label: str | None = None
    probability: float | None = None
    tumour_probability: float | None = None
    decisive: bool | None = None

    def as_context(self) -> dict:
        """The plain dict the chat keeps as "the last scan"."""
        return asdict(self)


def load_pipeline(models_dir: str = "models", runtime: str = "torch") -> GatedClassifier:
    """The gate in front of the type model: ``$IMAGEZOO_MODEL`` / ``$IMAGEZOO_GATE`` (folders or Hub ids),
    else ``models_dir/<task>``, else the Hub repos. ``runtime="torch"`` keeps Grad-CAM possible."""
    classifier = default_model_id("brain-tumor-type", models_dir)
    gate = default_model_id("brain-mri-gate", models_dir, env="IMAGEZOO_GATE")
    return GatedClassifier.from_ids(classifier, gate, runtime=runtime)


def served_facts(pipeline: GatedClassifier) -> ModelFacts:
    """The chat's numbers about our models, read from the very folders the pipeline serves (local, or
    the Hub snapshot it downloaded), so the chat and the model cards never disagree."""
    return ModelFacts.from_folders(*(served_folder(p) for p in (pipeline.classifier, pipeline.gate)))


def served_folder(predictor: ImageClassifier) -> Path:
    """The folder a loaded model was read from: the Hub snapshot of the commit it serves (from the
    download cache), or its local folder (not hashed again)."""
    if predictor.model_id.startswith(HUB_PREFIX):
        return resolve_model_folder(predictor.model_id, predictor.revision)[0]
    return local_folder(predictor.model_id)


def analyse(pipeline: GatedClassifier, image: ImageSource) -> ScanAnalysis:
    """Gate, then tumour type and yes/no for one image."""
    row = pipeline.predict([image])[0]
    if not row["accepted"]:
        return ScanAnalysis(row["gate"], row["gate_score"], False)
    probabilities = row["probabilities"]
    label = max(probabilities, key=probabilities.get)
    return ScanAnalysis(
        gate=row["gate"],
        gate_score=row["gate_score"],
        accepted=True,
        probabilities=probabilities,
        label=label,
        probability=probabilities[label],
        tumour_probability=1.0 - probabilities[NO_TUMOUR],
        decisive=row["decisive"] is not False,  # a type model without a margin names its top class
    )
