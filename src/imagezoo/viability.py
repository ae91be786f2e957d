"""Score every annotated cell of a slide and summarise the slide's viability.

Cells are cropped exactly as in training (the model's ``crop_context`` from its
config.json), so a slide scored here, in the Space or in the batch job gets the same
per-cell answers the model card's numbers describe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from imagezoo.data.voc import Box, cell_inputs, clip_boxes
from imagezoo.tasks import DEAD, LIVE

if TYPE_CHECKING:  # the classifier's batch rows use viability(); a runtime import would be circular
    from imagezoo.inference import ImageClassifier


@dataclass(frozen=True)
class CellScore:
    box: Box
    label: str
    score: float
    probabilities: dict[str, float]


def score_boxes(classifier: "ImageClassifier", image: Image.Image, boxes: list[Box], batch_size: int = 128) -> list[CellScore]:
    """Classify the crop around each box (boxes outside the image are dropped)."""
    kept = [box for _, box in clip_boxes(boxes, image)]
    transform = classifier.uint8_transform
    scores = []
    for start in range(0, len(kept), batch_size):
        chunk = kept[start:start + batch_size]
        for box, row in zip(chunk, classifier.predict_tensor(classifier.normalize(cell_inputs(image, chunk, transform, classifier.crop_context)))):
            best = int(row.argmax())
            probabilities = dict(zip(classifier.label_names, map(float, row)))
            scores.append(CellScore(box, classifier.label_names[best], float(row[best]), probabilities))
    return scores


def viability_fraction(n_live: int, n_dead: int) -> float | None:
    """live / (live + dead); ``None`` when there is no cell."""
    return n_live / (n_live + n_dead) if n_live + n_dead else None


def viability_percent(n_live: int, n_dead: int) -> str:
    """Viability with one decimal, "100%" or "0%" only when every cell has one class: 1999 live and 1 dead
    cell read "100.0%" with plain rounding, which hides the dead cell."""
    if not n_live + n_dead:
        raise ValueError("viability is undefined without a cell")
    if not n_dead or not n_live:
        return "100%" if n_live else "0%"
    percent = f"{100 * n_live / (n_live + n_dead):.1f}"
    return {"100.0": ">99.9%", "0.0": "<0.1%"}.get(percent, f"{percent}%")


def viability(labels: list[str]) -> dict:
    """``n_live``, ``n_dead`` and live / (live + dead), None when no cell was scored."""
    n_live, n_dead = labels.count(LIVE), labels.count(DEAD)
    return {"n_live": n_live, "n_dead": n_dead, "viability": viability_fraction(n_live, n_dead)}
