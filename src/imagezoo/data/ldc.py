"""LDC (Living and Dead Cell) slides -> one crop per annotated cell, split by source image.

The public set is a flat folder of PNGs, each with a Pascal-VOC XML naming boxes
``Living Cell`` / ``Dead Cell``. Crops keep some context around the cell (a dead cell's
membrane and halo are part of the signal), and the split is decided per *image content*
so that neither two crops of one slide nor two byte-identical copies of it (the set has
dozens, under different names) land in different splits.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value
from datasets import Image as ImageFeature
from PIL import Image

from imagezoo.data.voc import AnnotationError, crop_cell, read_voc, voc_sibling
from imagezoo.images import ImageError, load_image

logger = logging.getLogger(__name__)

LABEL_NAMES = ("dead", "live")
VOC_TO_LABEL = {"Dead Cell": "dead", "Living Cell": "live"}
SPLITS = ("train", "validation", "test")

FEATURES = Features(
    {
        "image": ImageFeature(),
        "label": ClassLabel(names=list(LABEL_NAMES)),
        "source": Value("string"),
        "image_sha256": Value("string"),
        "box": Sequence(Value("int32"), length=4),
    }
)


@dataclass
class PrepReport:
    """What a preparation run did, including every file it had to skip and why."""

    n_images: int = 0
    n_images_without_cells: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    crops: Counter = field(default_factory=Counter)  # (split, label) -> count

    def summary(self) -> str:
        lines = [f"{self.n_images} images read, {self.n_images_without_cells} without any cell"]
        for split in SPLITS:
            counts = ", ".join(f"{label}={self.crops[split, label]}" for label in LABEL_NAMES)
            lines.append(f"  {split}: {counts}")
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def pixel_sha256(image: Image.Image) -> str:
    """Hash of the normalised pixels: identical slides saved under two names collide."""
    return hashlib.sha256(np.asarray(image).tobytes() + repr(image.size).encode()).hexdigest()


def assign_split(group: str, seed: int = 0, fractions: tuple[float, float] = (0.7, 0.15)) -> str:
    """Deterministic train/validation/test assignment of a group key (stable across runs)."""
    bucket = int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < fractions[0]:
        return "train"
    return "validation" if bucket < fractions[0] + fractions[1] else "test"


def annotated_images(root: str | Path) -> list[Path]:
    """Every non-XML file under ``root`` (recursively); each is expected to have a VOC sibling."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() != ".xml")
    if not files:
        raise ValueError(f"{root}: no image files found")
    return files


def build_ldc_dataset(
    root: str | Path, context: float = 0.5, seed: int = 0
) -> tuple[DatasetDict, PrepReport]:
    """Read an LDC folder and return the crop dataset with a report of skipped files."""
    root = Path(root)
    report = PrepReport()
    rows: dict[str, dict[str, list]] = {split: {name: [] for name in FEATURES} for split in SPLITS}
    for path in annotated_images(root):
        relative = str(path.relative_to(root))
        try:
            boxes = read_voc(voc_sibling(path))
            image = load_image(path)
        except (AnnotationError, ImageError) as err:
            report.skipped.append((relative, str(err)))
            continue
        report.n_images += 1
        digest = pixel_sha256(image)
        split = assign_split(digest, seed)
        n_cells = 0
        for raw in boxes:
            box = raw.clip(image.width, image.height)
            if raw.name not in VOC_TO_LABEL or box is None:
                report.skipped.append((relative, f"box {raw} has an unknown label or lies outside the image"))
                continue
            label = VOC_TO_LABEL[raw.name]
            columns = rows[split]
            columns["image"].append(crop_cell(image, box, context))
            columns["label"].append(LABEL_NAMES.index(label))
            columns["source"].append(relative)
            columns["image_sha256"].append(digest)
            columns["box"].append([box.xmin, box.ymin, box.xmax, box.ymax])
            report.crops[split, label] += 1
            n_cells += 1
        report.n_images_without_cells += n_cells == 0
    if report.n_images == 0:
        raise ValueError(f"{root}: none of the files could be read as an annotated image")
    dataset = DatasetDict({split: Dataset.from_dict(rows[split], features=FEATURES) for split in SPLITS})
    return dataset, report
