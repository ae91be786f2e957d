"""Training and evaluation helpers of the cell-counting U-Net (``ldc-viability``).

Whole slides with labelled boxes become class-per-channel ellipse targets
(:func:`imagezoo.cells.box_targets`) for the nuclei path's training loop; every evaluation
goes through the served :class:`~imagezoo.predictors.cells.CellCounter`, so tuning and the
card's test numbers describe exactly what users get (epochs are selected through it too, with
the default post-processing and without test-time augmentation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import torch
from torch import nn

from imagezoo.cells import CLASS_COLOURS, box_targets, class_channels, viability_metrics
from imagezoo.inference import ImageClassifier
from imagezoo.predictors.cells import CellCounter, CellSegmentation
from imagezoo.segmentation import SegmenterConfig
from imagezoo.tasks import LIVE

logger = logging.getLogger(__name__)

@dataclass
class Slides:
    """Decoded whole-slide rows: uint8 RGB images, boxes ``[xmin, ymin, xmax, ymax]`` and box labels."""

    sources: list[str]
    images: list[np.ndarray]
    boxes: list[list[list[int]]]
    box_labels: list[list[int]]

    @classmethod
    def from_rows(cls, rows: Iterable[dict]) -> "Slides":
        data = cls([], [], [], [])
        for row in rows:
            data.sources.append(row["source"])
            data.images.append(np.array(row["image"].convert("RGB")))
            data.boxes.append([list(box) for box in row["boxes"]])
            data.box_labels.append(list(row["box_labels"]))
        return data

    def __len__(self) -> int:
        return len(self.images)

    def targets(self, n_classes: int, centre_scale: float | None = None) -> list[np.ndarray]:
        return [
            box_targets(image.shape[:2], boxes, labels, n_classes, centre_scale)
            for image, boxes, labels in zip(self.images, self.boxes, self.box_labels)
        ]

    def tensors(self) -> list[torch.Tensor]:
        return [torch.from_numpy(image).permute(2, 0, 1) for image in self.images]


@dataclass
class TuningCounter(CellCounter):
    """A :class:`CellCounter` that remembers the crop classifier's verdict per (slide, box): tuning
    re-runs the post-processing dozens of times on the same slides, and the verdict on a box
    does not depend on the post-processing that found it."""

    verdicts: dict = field(default_factory=dict)

    def classify_boxes(self, image: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
        slide = hashlib.sha1(image.numpy().tobytes()).hexdigest()
        missing = [box for box in boxes if (slide, box) not in self.verdicts]
        if missing:
            self.verdicts.update(zip(((slide, box) for box in missing), super().classify_boxes(image, missing)))
        rows = [self.verdicts[slide, box] for box in boxes]
        return np.array(rows, dtype=np.float32).reshape(len(boxes), len(self.label_names))


def counter_for(model: nn.Module, config: SegmenterConfig, classifier: ImageClassifier | None = None) -> TuningCounter:
    """A :class:`CellCounter` around an in-memory model, as serving would load it (plus the verdict memo)."""
    return TuningCounter(model, config, "(training)", "", {}, label_names=class_channels(config.channels),
                         classifier=classifier)


def predicted_cells(segmentation: CellSegmentation) -> list[tuple[float, float, int]]:
    """(x, y, class index) of every cell found."""
    return [(*cell.centre, segmentation.cell_class(cell)) for cell in segmentation.cells]


def evaluate_counter(counter: CellCounter, slides: Slides, probabilities: Sequence[np.ndarray]) -> dict:
    """:func:`~imagezoo.cells.viability_metrics` of ``counter`` on ``slides`` from precomputed probabilities."""
    predictions = [
        predicted_cells(counter.from_probabilities(tensor, probs))
        for tensor, probs in zip(slides.tensors(), probabilities)
    ]
    return viability_metrics(predictions, slides.boxes, slides.box_labels, counter.label_names)


def selection_key(metrics: dict) -> tuple[float, float]:
    """What model selection and tuning maximise: the weaker class's count F1, then viability MAE."""
    overall = metrics["overall"]
    mae = overall["viability_mae"]
    return overall["min_class_f1"], -(1.0 if mae is None else mae)


def cell_validation(validation: Slides, config: SegmenterConfig) -> Callable[[nn.Module], tuple[dict, tuple]]:
    """Validation of a cell-counting U-Net for :func:`~imagezoo.segmentation_training.fit_segmenter`."""

    def validate(model: nn.Module) -> tuple[dict, tuple]:
        counter = counter_for(model, config)
        metrics = evaluate_counter(counter, validation, [counter.probabilities(t) for t in validation.tensors()])
        overall = metrics["overall"]
        flat = {f"{name}_f1": overall[name]["f1"] for name in (*counter.label_names, "cells")}
        flat["viability_mae"] = overall["viability_mae"]
        return flat, selection_key(metrics)

    return validate


def tune_counter(
    counter: CellCounter,
    slides: Slides,
    probabilities: Sequence[np.ndarray],
    methods: Sequence[str],
    thresholds: Sequence[float],
    min_sizes: Sequence[int],
    border_min_sizes: Sequence[int] = (0,),
    min_probabilities: Sequence[tuple[str, float]] = (),
) -> tuple[CellCounter, dict]:
    """The post-processing (method, threshold, min_size, border_min_size) with the best
    :func:`selection_key` on ``slides`` (validation only), then, for those, the best calling rule
    (:func:`~imagezoo.cells.call_class`): the counter's own (a new one's: the arg-max) or one of ``min_probabilities``.
    Returns the counter with those settings, and its metrics."""
    best, best_metrics = None, None
    grid = itertools.product(methods, thresholds, min_sizes, border_min_sizes)
    for method, threshold, min_size, border_min_size in grid:
        settings = dataclasses.replace(
            counter.settings, postprocess=method, threshold=threshold, min_size=min_size, border_min_size=border_min_size
        )
        candidate = dataclasses.replace(counter, settings=settings)
        metrics = evaluate_counter(candidate, slides, probabilities)
        logger.info("%s threshold %.2f min_size %d border_min_size %s: key %s", method, threshold, min_size,
                    border_min_size, selection_key(metrics))
        if best_metrics is None or selection_key(metrics) > selection_key(best_metrics):
            best, best_metrics = candidate, metrics
    found = best
    for min_probability in min_probabilities:
        candidate = dataclasses.replace(found, settings=dataclasses.replace(found.settings, min_probability=min_probability))
        metrics = evaluate_counter(candidate, slides, probabilities)
        logger.info("calling rule %s: key %s", min_probability, selection_key(metrics))
        if selection_key(metrics) > selection_key(best_metrics):
            best, best_metrics = candidate, metrics
    return best, best_metrics


def save_counter_figure(counter: CellCounter, slides: Slides, probabilities: Sequence[np.ndarray], path: str | Path,
                        count: int = 6) -> Path:
    """The first ``count`` test slides (not the best ones): annotation beside prediction."""
    fig, axes = plt.subplots(2, count, figsize=(2.6 * count, 5.6), dpi=100, squeeze=False)
    for column, (image, boxes, labels, tensor, probs) in enumerate(
        zip(slides.images, slides.boxes, slides.box_labels, slides.tensors(), probabilities)
    ):
        if column == count:
            break
        truth = image.copy()
        for (xmin, ymin, xmax, ymax), label in zip(boxes, labels):
            colour = CLASS_COLOURS[counter.label_names[label]]
            truth[ymin:ymax, [xmin, max(xmin, xmax - 1)]] = colour
            truth[[ymin, max(ymin, ymax - 1)], xmin:xmax] = colour
        segmentation = counter.from_probabilities(tensor, probs)
        found = segmentation.summary
        true_live = sum(counter.label_names[label] == LIVE for label in labels)
        panels = [
            (truth, f"annotation: {true_live} live, {len(labels) - true_live} dead"),
            (segmentation.outlined(image), f"found: {found['n_live']} live, {found['n_dead']} dead"),
        ]
        for row, (picture, title) in enumerate(panels):
            axes[row, column].imshow(picture)
            axes[row, column].set_title(title, fontsize=8)
            axes[row, column].axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
