"""Cells on whole slides: U-Net targets from boxes, cells from probabilities, count and viability metrics.

A viability U-Net predicts one sigmoid channel per class (``dead``, ``live``): the filled
ellipse inscribed in each annotated box. A cell is a connected blob of the strongest
channel (touching cells split by the nuclei path's distance watershed); its class is the
channel with the larger mean over the blob, or the crop classifier's verdict on the blob's
box. A counter may also learn a ``centre`` channel, each box's ellipse shrunk about its
centre, whose blobs seed the watershed instead: one seed per cell even where cells touch
(the nuclei path's body-minus-border idea for cells without drawn outlines). Counts are
scored the way a biologist checks them: a predicted centre inside a true box of its class,
matched one-to-one.

Serving code: numpy, scipy and scikit-image only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from skimage.draw import ellipse
from skimage.measure import regionprops
from skimage.segmentation import find_boundaries, relabel_sequential

from imagezoo.data.voc import Box
from imagezoo.instances import postprocess
from imagezoo.tasks import DEAD, LIVE
from imagezoo.viability import viability_fraction

#: the colours cells are outlined with, by class
CLASS_COLOURS = {LIVE: (0, 200, 0), DEAD: (230, 0, 0)}
#: the post-processings of a counter's (strongest class[, centre]) channels; ``watershed-border``
#: would read the centre channel as a border, so it is not one of them
COUNTER_METHODS = ("components", "watershed-distance", "watershed-centres")
#: the name of a counter's optional last channel, the cells' centres (see the module docstring)
CENTRE = "centre"


def class_channels(channels: Sequence[str]) -> tuple[str, ...]:
    """A counter's class channels: all its channels but a last :data:`CENTRE` one."""
    return tuple(channels[:-1] if channels[-1] == CENTRE else channels)


def box_targets(
    shape: tuple[int, int],
    boxes: Sequence[Sequence[int]],
    labels: Sequence[int],
    n_classes: int,
    centre_scale: float | None = None,
) -> np.ndarray:
    """uint8 (n_classes, H, W): the filled ellipse inscribed in each ``[xmin, ymin, xmax, ymax]``
    box, in its label's channel; with ``centre_scale``, one more channel (:data:`CENTRE`) holds
    every box's ellipse with its radii scaled by it (at least one pixel)."""
    targets = np.zeros((n_classes + (centre_scale is not None), *shape), dtype=np.uint8)
    for (xmin, ymin, xmax, ymax), label in zip(boxes, labels):
        centre = ((ymin + ymax - 1) / 2, (xmin + xmax - 1) / 2)
        radii = (max((ymax - ymin) / 2, 0.5), max((xmax - xmin) / 2, 0.5))
        targets[(label, *ellipse(*centre, *radii, shape=shape))] = 1
        if centre_scale is not None:
            core = tuple(max(radius * centre_scale, 1.0) for radius in radii)
            targets[(-1, *ellipse(*centre, *core, shape=shape))] = 1
    return targets


@dataclass(frozen=True)
class Cell:
    """One found cell: its id in the label image, centre and box (max exclusive) in pixels,
    and the probability of each class (summing to 1)."""

    label_id: int
    centre: tuple[float, float]  # (x, y)
    box: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax
    probabilities: tuple[float, ...]


def call_class(probabilities: Sequence[float], label_names: Sequence[str],
               min_probability: tuple[str, float] | None = None) -> int:
    """The index of the class a cell is called: the most probable one, except that the label of
    ``min_probability`` (e.g. ``("dead", 0.6)``) is called only at that probability or more, so a
    counter that over-calls one class can be held back (tuned on validation slides)."""
    ranked = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")
    if min_probability is None:
        return int(ranked[0])
    label, threshold = min_probability
    held_back = list(label_names).index(label)
    return int(next((i for i in ranked if i != held_back or probabilities[i] >= threshold), ranked[0]))


def find_cells(
    probs: np.ndarray,
    method: str,
    threshold: float,
    min_size: int,
    border_min_size: int | None = None,
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """Instance labels of the cells in (n_classes, H, W) probabilities: ``method``'s instances
    (:data:`~imagezoo.instances.POSTPROCESSORS`) of the per-pixel strongest class, with the
    (H, W) ``centre`` probabilities as a second channel when the counter predicts them.

    Annotators skip cells that the image edge cuts off, so an object touching the edge is kept
    only with at least ``border_min_size`` pixels (``None``: no such rule); objects are then
    numbered 1..N again.
    """
    if method not in COUNTER_METHODS:
        raise ValueError(f"a cell counter's post-processing is one of {list(COUNTER_METHODS)}, not {method!r}")
    channels = probs.max(axis=0, keepdims=True)
    if centre is not None:
        channels = np.concatenate([channels, centre[None]])
    labels = postprocess(method, channels, threshold=threshold, min_size=min_size)
    if border_min_size:
        sizes = np.bincount(labels.ravel())
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        small = edge[(edge > 0) & (sizes[edge] < border_min_size)]
        labels = relabel_sequential(np.where(np.isin(labels, small), 0, labels))[0].astype(np.int32)
    return labels


def channel_probabilities(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n_cells, n_classes): each class's mean probability over each cell, normalised to sum to 1."""
    ids = np.arange(1, labels.max(initial=0) + 1)
    if not len(ids):
        return np.zeros((0, len(probs)), dtype=np.float32)
    means = np.stack([ndi.mean(channel, labels, ids) for channel in probs], axis=1)
    return (means / np.maximum(means.sum(axis=1, keepdims=True), 1e-6)).astype(np.float32)


def cell_geometry(labels: np.ndarray) -> list[tuple[int, tuple[float, float], tuple[int, int, int, int]]]:
    """(label id, centre (x, y), box) of each cell, in label order."""
    return [
        (region.label, (float(region.centroid[1]), float(region.centroid[0])),
         (int(region.bbox[1]), int(region.bbox[0]), int(region.bbox[3]), int(region.bbox[2])))
        for region in regionprops(labels)
    ]


def make_cells(labels: np.ndarray, probabilities: np.ndarray) -> list[Cell]:
    """:class:`Cell` objects from a label image and one row of class probabilities per cell."""
    return [
        Cell(label_id, centre, box, tuple(float(p) for p in row))
        for (label_id, centre, box), row in zip(cell_geometry(labels), probabilities)
    ]


def outline(image: np.ndarray, labels: np.ndarray, classes: dict[int, str]) -> np.ndarray:
    """uint8 RGB ``image`` with each cell (label id -> class name) outlined in its class colour."""
    picture = image.copy()
    colours = np.zeros((labels.max(initial=0) + 1, 3), dtype=np.uint8)
    drawn = np.zeros(len(colours), dtype=bool)
    for label_id, name in classes.items():
        colours[label_id], drawn[label_id] = CLASS_COLOURS.get(name, (255, 255, 0)), True
    # one pass for all cells: each outline pixel takes the colour of the cell it borders
    edges = find_boundaries(labels, mode="outer")
    owner = np.where(edges, ndi.maximum_filter(labels, footprint=ndi.generate_binary_structure(2, 1)), 0)
    coloured = drawn[owner]  # label 0 (no outline) is never drawn
    picture[coloured] = colours[owner[coloured]]
    return picture


def draw_boxes(image: np.ndarray, boxes: list[tuple[Box, str]]) -> np.ndarray:
    """uint8 RGB ``image`` with each (box, class name) drawn in the class colour, as :func:`outline` colours
    cells; lines 1 pixel wide per 500 pixels of the image's longer side, so they show when it is shrunk."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(picture.size) / 500))
    for box, name in boxes:
        draw.rectangle((box.xmin, box.ymin, box.xmax - 1, box.ymax - 1), outline=CLASS_COLOURS.get(name, (255, 255, 0)),
                       width=width)
    return np.asarray(picture)


def match_centres(centres: np.ndarray, boxes: np.ndarray) -> int:
    """How many (x, y) ``centres`` fall inside ``[xmin, ymin, xmax, ymax]`` ``boxes``, one centre per
    box at most (an optimal assignment, nearest box centre first)."""
    if not len(centres) or not len(boxes):
        return 0
    x, y = centres[:, 0:1], centres[:, 1:2]
    inside = (x >= boxes[:, 0]) & (x <= boxes[:, 2]) & (y >= boxes[:, 1]) & (y <= boxes[:, 3])
    box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = np.hypot(x - box_centres[:, 0], y - box_centres[:, 1])
    cost = np.where(inside, distance, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return int(inside[rows, cols].sum())


def image_counts(
    cells: Sequence[tuple[float, float, int]], boxes: Sequence[Sequence[int]], box_labels: Sequence[int], n_classes: int
) -> dict:
    """Per-class true positives, predictions and truths of one image; ``cells`` are (x, y, class).
    ``any`` ignores the class: how well cells are found at all."""
    centres = np.asarray([(x, y) for x, y, _ in cells], dtype=float).reshape(-1, 2)
    classes = np.asarray([c for _, _, c in cells], dtype=int)
    boxes, box_labels = np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(box_labels, dtype=int)
    counts = {}
    for c in range(n_classes):
        counts[c] = dict(tp=match_centres(centres[classes == c], boxes[box_labels == c]),
                         predicted=int((classes == c).sum()), true=int((box_labels == c).sum()))
    counts["any"] = dict(tp=match_centres(centres, boxes), predicted=len(centres), true=len(boxes))
    return counts


def f1(tp: int, predicted: int, true: int) -> dict:
    """Count precision, recall and F1; a class neither present nor predicted scores 1 on all three."""
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0
    score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(precision=precision, recall=recall, f1=score, tp=tp, predicted=predicted, true=true)


def viability_error(image: dict, live: int, dead: int) -> float:
    """Absolute error of one :func:`image_counts` result's viability; when the truth or the prediction
    has no cell (viability undefined), 0 if both have none and 1, the worst case, if only one has."""
    truth = viability_fraction(image[live]["true"], image[dead]["true"])
    predicted = viability_fraction(image[live]["predicted"], image[dead]["predicted"])
    if truth is None or predicted is None:
        return 0.0 if truth is None and predicted is None else 1.0
    return abs(predicted - truth)


def summarise(per_image: Sequence[dict], label_names: Sequence[str]) -> dict:
    """Pooled per-class count F1 and per-image MAEs over :func:`image_counts` results.

    Viability MAE is over every image (:func:`viability_error`: an image where only the truth or only
    the prediction has cells counts as an error of 1), and over the images with at least one true cell.
    """
    if not per_image:
        return {"n_images": 0}
    result: dict = {"n_images": len(per_image)}
    for key, name in [*enumerate(label_names), ("any", "cells")]:
        pooled = {k: sum(image[key][k] for image in per_image) for k in ("tp", "predicted", "true")}
        result[name] = {
            **f1(**pooled),
            "count_mae": float(np.mean([abs(image[key]["predicted"] - image[key]["true"]) for image in per_image])),
            "count_bias": float(np.mean([image[key]["predicted"] - image[key]["true"] for image in per_image])),
        }
    live, dead = label_names.index(LIVE), label_names.index(DEAD)
    errors = [viability_error(image, live, dead) for image in per_image]
    with_cells = [error for image, error in zip(per_image, errors) if image["any"]["true"]]
    result["viability_mae"] = float(np.mean(errors))
    result["viability_mae_with_cells"] = float(np.mean(with_cells)) if with_cells else None
    result["n_images_with_cells"] = len(with_cells)
    result["min_class_f1"] = min(result[name]["f1"] for name in label_names)
    return result


def viability_metrics(
    predictions: Sequence[Sequence[tuple[float, float, int]]],
    boxes: Sequence[Sequence[Sequence[int]]],
    box_labels: Sequence[Sequence[int]],
    label_names: Sequence[str],
) -> dict:
    """Count and viability metrics on every image (``overall``), on the images with cells and
    on those without (where any found cell is a false positive), each as :func:`summarise`."""
    per_image = [image_counts(p, b, y, len(label_names)) for p, b, y in zip(predictions, boxes, box_labels)]
    empty = [image for image in per_image if image["any"]["true"] == 0]
    found = [image["any"]["predicted"] for image in empty]
    return {
        "overall": summarise(per_image, label_names),
        "with_cells": summarise([image for image in per_image if image["any"]["true"]], label_names),
        "without_cells": {
            **summarise(empty, label_names),
            "fraction_with_no_cell_found": float(np.mean([n == 0 for n in found])) if empty else None,
            "cells_found_mean": float(np.mean(found)) if empty else None,
        },
    }
