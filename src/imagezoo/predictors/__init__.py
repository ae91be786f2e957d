"""One interface for every servable model: ``load_predictor`` picks the class from the folder's config.

    from imagezoo.predictors import load_predictor
    predictor = load_predictor("models/nuclei-unet")      # or a classifier folder, or "hf-hub:ORG/NAME"
"""

from __future__ import annotations

from imagezoo.predictors.base import (
    CONFIG_KEY,
    PREDICTORS,
    Item,
    JobOptions,
    Predictor,
    Preparer,
    predictor_class,
    prob_column,
    register_predictor,
    resolve_model_folder,
)


def load_predictor(model_id: str, revision: str | None = None, gate: str | None = None, **options) -> Predictor:
    """The model in ``model_id`` (folder, ``local-dir:`` or ``hf-hub:`` id) as its registered predictor;
    ``options`` go to its loader (a classifier's ``runtime``). With ``gate`` (a gate model's id), the
    classifier behind that gate (:class:`~imagezoo.predictors.gated.GatedClassifier`)."""
    if gate is not None:
        from imagezoo.predictors.gated import GatedClassifier

        if revision is not None:
            raise ValueError("revision pins one model; pin a gated pipeline's models by folder or Hub id")
        return GatedClassifier.from_ids(model_id, gate, **options)
    return Predictor.from_pretrained(model_id, revision, **options)


__all__ = [
    "CONFIG_KEY", "PREDICTORS", "Item", "JobOptions", "Predictor", "Preparer", "load_predictor",
    "predictor_class", "prob_column", "register_predictor", "resolve_model_folder",
]
