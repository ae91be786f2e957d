"""Pascal-VOC annotation files: the box format of LDC and of most labelling tools."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class AnnotationError(ValueError):
    """A VOC file that is missing or cannot be read; the message names the file."""


@dataclass(frozen=True)
class Box:
    """One labelled box in pixel coordinates (VOC's inclusive xmin/ymin, exclusive-ish max)."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int

    def clip(self, width: int, height: int) -> "Box | None":
        """The box clipped to an image, or None when nothing of it is left."""
        xmin, ymin = max(0, self.xmin), max(0, self.ymin)
        xmax, ymax = min(width, self.xmax), min(height, self.ymax)
        if xmax <= xmin or ymax <= ymin:
            return None
        return Box(self.name, xmin, ymin, xmax, ymax)


def read_voc(path: str | Path, image_size: tuple[int, int] | None = None) -> list[Box]:
    """Parse the ``<object>`` boxes of one VOC XML file (an image with no cells gives []).

    ``image_size`` (width, height): the image the boxes go with; an annotation whose ``<size>`` names
    another (a resized or rotated copy of the image, another image's file) is refused rather than read
    as boxes in the wrong places. A ``<size>`` of 0 or none says nothing (some tools write no size).
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise AnnotationError(f"{path}: not valid XML ({err})") from err
    if root.tag != "annotation":
        raise AnnotationError(f"{path}: not a Pascal-VOC annotation (its root element is <{root.tag}>, not <annotation>)")
    stated = annotated_size(root)
    if image_size is not None and stated is not None and stated != tuple(image_size):
        raise AnnotationError(f"{path}: annotates a {stated[0]}x{stated[1]} image, not this {image_size[0]}x"
                              f"{image_size[1]} one")
    boxes = []
    for obj in root.iter("object"):
        bndbox = obj.find("bndbox")
        try:
            coords = [int(round(float(bndbox.findtext(tag)))) for tag in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError, OverflowError) as err:  # OverflowError: "inf"
            raise AnnotationError(f"{path}: object without a numeric bndbox") from err
        boxes.append(Box((obj.findtext("name") or "").strip(), *coords))
    return boxes


def annotated_size(root: ET.Element) -> tuple[int, int] | None:
    """The (width, height) an annotation's ``<size>`` states, None when it states none."""
    try:
        size = int(float(root.findtext("size/width"))), int(float(root.findtext("size/height")))
    except (TypeError, ValueError, OverflowError):
        return None
    return size if all(size) else None


def voc_sibling(image_path: str | Path) -> Path:
    """The XML that annotates ``image_path``: same folder, same stem."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + ".xml") if image_path.suffix else Path(f"{image_path}.xml")


def crop_cell(image: Image.Image, box: Box, context: float) -> Image.Image:
    """Square crop centred on ``box``, ``context`` x its longer side wider on each side.

    Near the slide's edge the missing part is mirrored in rather than cut off, so every
    crop is square with the cell in the middle, as in the interior of a slide.
    """
    side = max(1, round(max(box.xmax - box.xmin, box.ymax - box.ymin) * (1 + 2 * context)))
    left = round((box.xmin + box.xmax - side) / 2)
    top = round((box.ymin + box.ymax - side) / 2)
    right, bottom = left + side, top + side
    if left >= 0 and top >= 0 and right <= image.width and bottom <= image.height:
        return image.crop((left, top, right, bottom))
    pixels = np.asarray(image)
    pad = [(max(0, -top), max(0, bottom - image.height)), (max(0, -left), max(0, right - image.width))]
    pad += [(0, 0)] * (pixels.ndim - 2)
    padded = np.pad(pixels, pad, mode="symmetric")
    top, left = top + pad[0][0], left + pad[1][0]
    return Image.fromarray(padded[top:bottom + pad[0][0], left:right + pad[1][0]])


def clip_boxes(boxes: list[Box], image: Image.Image) -> list[tuple[int, Box]]:
    """(index in the annotation, box clipped to the image) for every box that overlaps the image."""
    return [(i, clipped) for i, box in enumerate(boxes) if (clipped := box.clip(image.width, image.height)) is not None]


def cell_inputs(image: Image.Image, boxes: list[Box], transform, context: float) -> torch.Tensor:
    """Model inputs (one per box) cropped exactly as the training crops were."""
    return torch.stack([transform(crop_cell(image, box, context)) for box in boxes])
