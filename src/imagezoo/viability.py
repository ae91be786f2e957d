"""Score every annotated cell of a slide and summarise the slide's viability.

Cells are cropped exactly as in training (the model's ``crop_context`` from its
config.json), so a slide scored here, in the Space or in the batch job gets the same
per-cell answers the model card's numbers describe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from imagezoo.data.voc import Box, crop_cell
from imagezoo.inference import ImageClassifier

DEFAULT_CONTEXT = 0.5


@dataclass(frozen=True)
class CellScore:
    box: Box
    label: str
    score: float
    probabilities: dict[str, float]


def clip_boxes(boxes: list[Box], image: Image.Image) -> list[tuple[int, Box]]:
    """(index in the annotation, box clipped to the image) for every box that overlaps the image."""
    return [(i, clipped) for i, box in enumerate(boxes) if (clipped := box.clip(image.width, image.height)) is not None]


def cell_inputs(image: Image.Image, boxes: list[Box], transform, context: float = DEFAULT_CONTEXT) -> torch.Tensor:
    """Model inputs (one per box) cropped exactly as the training crops were."""
    return torch.stack([transform(crop_cell(image, box, context)) for box in boxes])


def score_boxes(classifier: ImageClassifier, image: Image.Image, boxes: list[Box], batch_size: int = 128) -> list[CellScore]:
    """Classify the crop around each box (boxes outside the image are dropped)."""
    context = classifier.config.get("crop_context", DEFAULT_CONTEXT)
    kept = [box for _, box in clip_boxes(boxes, image)]
    transform = classifier.uint8_transform
    scores = []
    for start in range(0, len(kept), batch_size):
        chunk = kept[start:start + batch_size]
        for box, row in zip(chunk, classifier.predict_tensor(classifier.normalize(cell_inputs(image, chunk, transform, context)))):
            best = int(row.argmax())
            probabilities = dict(zip(classifier.label_names, map(float, row)))
            scores.append(CellScore(box, classifier.label_names[best], float(row[best]), probabilities))
    return scores


def viability(labels: list[str]) -> dict:
    """``n_live``, ``n_dead`` and live / (live + dead), None when no cell was scored."""
    n_live, n_dead = labels.count("live"), labels.count("dead")
    total = n_live + n_dead
    return {"n_live": n_live, "n_dead": n_dead, "viability": n_live / total if total else None}
