"""The ``"gated-classifier"`` pipeline: a gate decides whether an image is the kind a classifier was made
for, and only accepted images get the classifier's label.

    predictor = load_predictor("models/brain-tumor-type", gate="models/brain-mri-gate")

Every output row carries the gate's verdict (``gate``) and its probability of the accepted label
(``gate_score``); a refused image's ``label``, ``score`` and ``prob_*`` stay null. Both models read
the same uint8 input, made by the classifier's preprocessing; when the gate was trained at another
size, that input is resized to the gate's (both squash the whole image, so only the resampling differs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import v2

from imagezoo.images import ImageSource, load_image
from imagezoo.inference import CropPreparer, ImageClassifier
from imagezoo.predictors.base import Item, JobOptions, Predictor, absolute_model_id, register_predictor
from imagezoo.tasks import ACCEPT_KEY


@register_predictor
@dataclass
class GatedClassifier(Predictor):
    """A gate (an :class:`ImageClassifier` whose config names the label it accepts) in front of a classifier."""

    kind = "gated-classifier"

    gate: ImageClassifier
    classifier: ImageClassifier

    def __post_init__(self):
        accept_label = self.gate.config.get(ACCEPT_KEY)
        if accept_label not in self.gate.label_names:
            raise ValueError(f"{self.gate.model_id} is not a gate: its config.json[{ACCEPT_KEY!r}] is {accept_label!r}, "
                             f"not one of its labels {list(self.gate.label_names)} (train gates with train_gate.py)")
        refused = (self.gate.config.get("backstop") or {}).get("reject_label")
        if accept_label == refused:
            raise ValueError(f"{self.gate.model_id}: the gate accepts {accept_label!r}, the label its backstop refuses")
        self.accept = self.gate.label_names.index(accept_label)
        self.label_names = self.classifier.label_names
        self.model_id, self.config = self.classifier.model_id, self.classifier.config
        self.revision = f"{self.classifier.revision}+gate:{self.gate.revision}"
        gate_size = self.gate.data_config["input_size"][1:]
        same = gate_size == self.classifier.data_config["input_size"][1:]
        self.gate_resize = None if same else v2.Resize(list(gate_size), antialias=True)

    @classmethod
    def from_folder(cls, folder: Path, config: dict, model_id: str, revision: str, **options) -> "GatedClassifier":
        raise TypeError("a gated classifier is built from two models: load_predictor(classifier_id, gate=gate_id)")

    @classmethod
    def from_ids(cls, classifier_id: str, gate_id: str, **options) -> "GatedClassifier":
        """Both models by folder or ``hf-hub:`` id; ``options`` go to the classifier's loader."""
        gate = ImageClassifier.from_pretrained(gate_id)
        classifier = ImageClassifier.from_pretrained(classifier_id, **options)
        return cls(gate, classifier)

    @property
    def load_spec(self) -> dict:
        # Hub ids stay unpinned (load_predictor pins one model only); the actor checks the combined revision
        return {"model_id": absolute_model_id(self.classifier.model_id), "gate": absolute_model_id(self.gate.model_id)}

    def gate_probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """The gate's probabilities for uint8 inputs made by the classifier's preprocessing."""
        if self.gate_resize is not None:
            batch = self.gate_resize(batch)
        return self.gate.predict_tensor(self.gate.normalize(batch))

    def predict(self, images: Sequence[ImageSource]) -> list[dict]:
        """Per image: ``gate`` (verdict), ``gate_score``, ``accepted``, the classifier's ``probabilities``
        (``{label: p}``) and whether they are ``decisive`` (see :meth:`ImageClassifier.decisive`; both
        ``None`` when refused)."""
        batch = torch.stack([self.classifier.uint8_transform(load_image(image)) for image in images])
        gate = self.gate_probabilities(batch)
        accepted = gate.argmax(axis=1) == self.accept
        probs = self.classifier.predict_tensor(self.classifier.normalize(batch[torch.from_numpy(accepted)]))
        rows, kept = [], iter(probs)
        for scores, ok in zip(gate, accepted):
            row = next(kept) if ok else None
            rows.append({
                "gate": self.gate.label_names[int(scores.argmax())],
                "gate_score": float(scores[self.accept]),
                "accepted": bool(ok),
                "probabilities": dict(zip(self.label_names, map(float, row))) if ok else None,
                "decisive": self.classifier.decisive(row) if ok else None,
            })
        return rows

    # ---------------------------------------------------------------- the batch job's interface

    def check_options(self, options: JobOptions) -> None:
        if options.boxes or options.masks_dir:
            raise ValueError("a gated classifier scores whole images: --boxes and --masks-dir do not apply")

    def preparer(self, options: JobOptions) -> CropPreparer:
        return self.classifier.preparer(options)

    def forward(self, items: Sequence[Item], batch_size: int) -> list[tuple[np.ndarray, np.ndarray | None] | None]:
        """Per item: (gate probabilities, classifier probabilities or ``None`` when refused)."""
        gates = self.gate.forward(items, batch_size) if self.gate_resize is None else [
            None if item.inputs is None else self.gate_probabilities(item.inputs) for item in items]
        accepted = [item for item, gate in zip(items, gates) if gate is not None and gate[0].argmax() == self.accept]
        scored = dict(zip(map(id, accepted), self.classifier.forward(accepted, batch_size)))
        return [None if gate is None else (gate, scored.get(id(item))) for item, gate in zip(items, gates)]

    def rows(self, item: Item, output: tuple[np.ndarray, np.ndarray | None]) -> list[dict]:
        gate, probs = output
        verdict = {"gate": self.gate.label_names[int(gate[0].argmax())], "gate_score": float(gate[0][self.accept])}
        if probs is None:
            return [verdict]
        return [{**verdict, **row} for row in self.classifier.rows(item, probs)]
