"""One interface for every servable model: ``load_predictor`` picks the class from the folder's config.

    from imagezoo.predictors import load_predictor
    predictor = load_predictor("models/nuclei-unet")      # or a classifier folder, or "hf-hub:ORG/NAME"
"""

from __future__ import annotations

import json
from pathlib import Path

from imagezoo.predictors.base import (
    CONFIG_KEY,
    GATE_KEY,
    PREDICTORS,
    Item,
    JobOptions,
    Predictor,
    Preparer,
    local_folder,
    predictor_class,
    prob_column,
    register_predictor,
    resolve_model_folder,
)
from imagezoo.tasks import HUB_PREFIX


def default_gate(model_id: str, revision: str | None = None) -> str | None:
    """The gate a model's config says it is served behind (``config.json["gate"]``, the gate's name), as a
    model id beside it: the sibling folder, or the repo of that name in the same Hub organisation."""
    if model_id.startswith(HUB_PREFIX):
        from huggingface_hub import hf_hub_download

        config = Path(hf_hub_download(model_id[len(HUB_PREFIX):], "config.json", revision=revision))
    else:
        config = local_folder(model_id) / "config.json"  # read only: the folder's revision is hashed once, later
    name = json.loads(config.read_text()).get(GATE_KEY) if config.is_file() else None
    if not name:
        return None
    if model_id.startswith(HUB_PREFIX):
        return f"{HUB_PREFIX}{model_id[len(HUB_PREFIX):].rsplit('/', 1)[0]}/{name}"
    gate = local_folder(model_id).resolve().parent / name
    if not gate.is_dir():
        raise FileNotFoundError(f"{model_id} is served behind the gate {name!r}, not found at {gate}: give the "
                                "gate's id (gate=..., --gate), or gate=False (--no-gate) to serve it without")
    return str(gate)


def load_predictor(model_id: str, revision: str | None = None, gate: str | bool | None = None,
                   **options) -> Predictor:
    """The model in ``model_id`` (folder, ``local-dir:`` or ``hf-hub:`` id) as its registered predictor;
    ``options`` go to its loader (a classifier's ``runtime``). With ``gate`` (a gate model's id), the
    classifier behind that gate (:class:`~imagezoo.predictors.gated.GatedClassifier`); by default
    (``None``) behind the gate its config names (:func:`default_gate`: the brain tumour model refuses
    to label a cat photo); ``False`` serves it alone."""
    if gate is None:
        gate = default_gate(model_id, revision)
    if gate:
        from imagezoo.predictors.gated import GatedClassifier

        if revision is not None:
            raise ValueError("revision pins one model; pin a gated pipeline's models by folder or Hub id")
        return GatedClassifier.from_ids(model_id, gate, **options)
    return Predictor.from_pretrained(model_id, revision, **options)


__all__ = [
    "CONFIG_KEY", "GATE_KEY", "PREDICTORS", "Item", "JobOptions", "Predictor", "Preparer", "default_gate", "load_predictor",
    "predictor_class", "prob_column", "register_predictor", "resolve_model_folder",
]
