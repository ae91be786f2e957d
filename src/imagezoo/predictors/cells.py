"""The ``"cell-counter"`` predictor: a U-Net folder -> every cell of a slide, its class, counts and viability.

The U-Net predicts one channel per class (``dead``, ``live``), and optionally the cells'
centres; cells are the blobs of the strongest class channel, split from the centres when there
are any (:func:`imagezoo.cells.find_cells`). Each cell is labelled by the channel
means over its blob or, when the folder ships a crop classifier (``_imagezoo.classifier``,
a timm folder inside the model's), by that classifier on the blob's box, cropped exactly as
in its training. Everything else (any image size, label images, object tables) is the
nuclei segmenter's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from imagezoo.cells import (
    Cell,
    call_class,
    cell_geometry,
    channel_probabilities,
    class_channels,
    find_cells,
    make_cells,
    outline,
)
from imagezoo.data.voc import Box
from imagezoo.inference import ImageClassifier
from imagezoo.instances import encode_rle
from imagezoo.predictors.base import Item, JobOptions, prob_column, register_predictor
from imagezoo.predictors.segmenter import InstanceSegmenter, Segmentation
from imagezoo.segmentation import load_unet
from imagezoo.viability import score_boxes, viability


@dataclass
class CellSegmentation(Segmentation):
    """A slide's instance labels and probabilities plus one :class:`~imagezoo.cells.Cell` per label."""

    cells: list[Cell] = field(default_factory=list)
    label_names: tuple[str, ...] = ()
    min_probability: tuple[str, float] | None = None  # the counter's calling rule (:func:`~imagezoo.cells.call_class`)

    def cell_class(self, cell: Cell) -> int:
        return call_class(cell.probabilities, self.label_names, self.min_probability)

    def cell_label(self, cell: Cell) -> str:
        return self.label_names[self.cell_class(cell)]

    def cell_score(self, cell: Cell) -> float:
        """The probability of the class the cell is called."""
        return cell.probabilities[self.cell_class(cell)]

    def outlined(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB ``image`` with live cells outlined green, dead red."""
        return outline(image, self.labels, {cell.label_id: self.cell_label(cell) for cell in self.cells})

    @property
    def summary(self) -> dict:
        """``n_live``, ``n_dead`` and ``viability`` (``None`` without cells)."""
        return viability([self.cell_label(cell) for cell in self.cells])


@register_predictor
@dataclass
class CellCounter(InstanceSegmenter):
    """A class-per-channel U-Net (plus a centre channel, last, when ``settings.channels`` name
    one), its post-processing settings and an optional crop classifier."""

    kind = "cell-counter"

    classifier: ImageClassifier | None = None

    @classmethod
    def from_folder(cls, folder: Path, config: dict, model_id: str, revision: str, **options) -> "CellCounter":
        cls.refuse_options(model_id, options)
        model, settings = load_unet(folder)
        classifier = None
        if settings.classifier:
            classifier = ImageClassifier.from_pretrained(str(folder / settings.classifier))
        label_names = class_channels(settings.channels)
        if classifier is not None and set(classifier.label_names) != set(label_names):
            raise ValueError(f"{model_id}: its classifier's labels {classifier.label_names} are not {label_names}")
        return cls(model, settings, model_id, revision, config, label_names=label_names, classifier=classifier)

    @property
    def has_centres(self) -> bool:
        return len(self.settings.channels) > len(self.label_names)

    def split_centre(self, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The network's probabilities as (class channels, the centre channel or ``None``)."""
        n_classes = len(self.label_names)
        return probabilities[:n_classes], probabilities[n_classes] if self.has_centres else None

    def instances(
        self, probabilities: np.ndarray, threshold: float | None = None, min_size: int | None = None
    ) -> np.ndarray:
        settings = self.postprocess_settings(threshold, min_size)
        classes, centre = self.split_centre(probabilities)
        return find_cells(
            classes, settings.postprocess, settings.threshold, settings.min_size, settings.border_min_size, centre
        )

    def classify(self, image: torch.Tensor, probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(n_cells, n_classes) class probabilities, in ``label_names`` order."""
        if self.classifier is None:
            return channel_probabilities(self.split_centre(probabilities)[0], labels)
        return self.classify_boxes(image, [box for _, _, box in cell_geometry(labels)])

    def classify_boxes(self, image: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
        """(n_boxes, n_classes): the crop classifier's probabilities for (xmin, ymin, xmax, ymax) boxes."""
        picture = Image.fromarray(image.permute(1, 2, 0).numpy())
        scores = score_boxes(self.classifier, picture, [Box("", *box) for box in boxes])
        return np.array([[score.probabilities[name] for name in self.label_names] for score in scores],
                        dtype=np.float32).reshape(len(boxes), len(self.label_names))

    def from_probabilities(self, image: torch.Tensor, probabilities: np.ndarray, threshold: float | None = None,
                           min_size: int | None = None) -> CellSegmentation:
        """Cells, classified, from already computed probabilities."""
        labels = self.instances(probabilities, threshold, min_size)
        cells = make_cells(labels, self.classify(image, probabilities, labels))
        return CellSegmentation(labels, probabilities, cells, self.label_names, self.settings.min_probability)

    def check_options(self, options: JobOptions) -> None:
        if options.boxes:
            raise ValueError(f"--boxes needs an image classifier; {self.model_id} finds the cells itself")

    def rows(self, item: Item, output: CellSegmentation) -> list[dict]:
        """A per-image summary row (counts, viability, mask), then one row per cell."""
        summary = {
            "n_objects": len(output.cells),
            "foreground_fraction": output.foreground_fraction,
            "mask_rle": encode_rle(output.labels > 0),
            **output.summary,
        }
        cells = [
            {
                "box_index": cell.label_id,
                "box_xmin": cell.box[0], "box_ymin": cell.box[1], "box_xmax": cell.box[2], "box_ymax": cell.box[3],
                "center_x": cell.centre[0], "center_y": cell.centre[1],
                "label": output.cell_label(cell), "score": output.cell_score(cell),
                **{prob_column(name): p for name, p in zip(self.label_names, cell.probabilities)},
            }
            for cell in output.cells
        ]
        return [summary, *cells]
