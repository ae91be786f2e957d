"""LDC (Living and Dead Cell) slides -> one crop per annotated cell, split by source image.

The public set is a flat folder of PNGs, each with a Pascal-VOC XML naming boxes
``Living Cell`` / ``Dead Cell``. Crops keep some context around the cell (a dead cell's
membrane and halo are part of the signal), and the split is decided per *image content*
so that two crops of one slide never land in different splits. Pixel-identical copies of a
slide (the set has dozens, under different names) are read once: a copy would count its
cells twice in training and in every metric. Near-copies (the same field re-exposed or
re-saved, annotated again with nearly the same boxes) share their split: a test slide whose
near-copy was trained on measures memory.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value
from datasets import Image as ImageFeature
from PIL import Image

from imagezoo.data import SPLITS
from imagezoo.data.near_duplicates import near_duplicate_groups
from imagezoo.data.splits import assign_split, pixel_sha256
from imagezoo.data.voc import AnnotationError, Box, crop_cell, read_voc, voc_sibling
from imagezoo.images import ImageError, load_image
from imagezoo.tasks import CELL_CROP_CONTEXT, DEAD, LDC_LABELS, LIVE

logger = logging.getLogger(__name__)

LABEL_NAMES = LDC_LABELS
VOC_TO_LABEL = {"Dead Cell": DEAD, "Living Cell": LIVE}

#: phash bits two slides may differ in and still be near-copies. Measured on the 1979 distinct slides
#: (2026-12-03): 0 bits links 175 slides (78 groups), 4 bits 374, 6 bits 393 in 165 groups of at most 5,
#: 12 bits 742 with a group of 19. Linked pairs of one size correlate at median 0.998 pixel for pixel;
#: a false link only keeps two slides in one split.
NEAR_DUPLICATE_BITS = 6

FEATURES = Features(
    {
        "image": ImageFeature(),
        "label": ClassLabel(names=list(LABEL_NAMES)),
        "source": Value("string"),
        "image_sha256": Value("string"),
        "image_phash": Value("string"),
        "box": Sequence(Value("int32"), length=4),
    }
)

#: One row per whole slide: boxes as [xmin, ymin, xmax, ymax] (clipped to the image) with their labels.
SLIDE_FEATURES = Features(
    {
        "image": ImageFeature(),
        "source": Value("string"),
        "image_sha256": Value("string"),
        "image_phash": Value("string"),
        "boxes": Sequence(Sequence(Value("int32"), length=4)),
        "box_labels": Sequence(ClassLabel(names=list(LABEL_NAMES))),
        "n_live": Value("int32"),
        "n_dead": Value("int32"),
    }
)


@dataclass
class PrepReport:
    """What a preparation run did, including every file it had to skip and why."""

    n_images: int = 0
    n_images_without_cells: int = 0
    duplicates: int = 0  # pixel-identical copies of a slide left out
    near_copies: int = 0  # slides with a near-copy, kept in its split
    slides: Counter = field(default_factory=Counter)  # split -> slides (whole-slide dataset)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    crops: Counter = field(default_factory=Counter)  # (split, label) -> count

    def summary(self) -> str:
        lines = [f"{self.n_images} images read, {self.n_images_without_cells} without any cell, "
                 f"{self.duplicates} duplicate copies left out, {self.near_copies} near-copies kept in one split"]
        for split in SPLITS:
            counts = ", ".join(f"{label}={self.crops[split, label]}" for label in LABEL_NAMES)
            slides = f"{self.slides[split]} slides, " if self.slides else ""
            lines.append(f"  {split}: {slides}{counts}")
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def annotated_images(root: str | Path) -> list[Path]:
    """Every non-XML file under ``root`` (recursively); each is expected to have a VOC sibling."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() != ".xml")
    if not files:
        raise ValueError(f"{root}: no image files found")
    return files


@dataclass
class Slide:
    """One readable annotated image: its boxes clipped to it, with known labels only."""

    relative: str
    image: Image.Image
    digest: str
    phash: str
    boxes: list[Box]
    split: str | None = None


def read_slides(root: str | Path, report: PrepReport, seed: int = 0) -> list[Slide]:
    """Every distinct annotated image under ``root`` with its split, in path order; unreadable
    files and bad boxes go to ``report.skipped``, pixel-identical copies of a slide read before
    to ``report.duplicates``. Near-copies (:data:`NEAR_DUPLICATE_BITS`) take the split of their
    group's smallest digest."""
    root = Path(root)
    seen: set[str] = set()
    slides = []
    for path in annotated_images(root):
        relative = str(path.relative_to(root))
        try:
            boxes = read_voc(voc_sibling(path))
            image = load_image(path)
        except (AnnotationError, ImageError) as err:
            report.skipped.append((relative, str(err)))
            continue
        kept = []
        for raw in boxes:
            box = raw.clip(image.width, image.height)
            if raw.name not in VOC_TO_LABEL or box is None:
                report.skipped.append((relative, f"box {raw} has an unknown label or lies outside the image"))
            else:
                kept.append(box)
        digest = pixel_sha256(image)
        if digest in seen:
            report.duplicates += 1
            continue
        seen.add(digest)
        report.n_images += 1
        report.n_images_without_cells += not kept
        slides.append(Slide(relative, image, digest, str(imagehash.phash(image)), kept))
    if not slides:
        return slides
    groups = near_duplicate_groups([slide.phash for slide in slides], NEAR_DUPLICATE_BITS)
    keys: dict[int, str] = {}
    for slide, group in zip(slides, groups):
        keys[group] = min(keys.get(group, slide.digest), slide.digest)
    sizes = Counter(groups)
    for slide, group in zip(slides, groups):
        slide.split = assign_split(keys[group], seed)
        report.near_copies += sizes[group] > 1
    return slides


def _check_read(root: str | Path, report: PrepReport) -> None:
    if report.n_images == 0:
        raise ValueError(f"{root}: none of the files could be read as an annotated image")


def build_ldc_dataset(
    root: str | Path, context: float = CELL_CROP_CONTEXT, seed: int = 0
) -> tuple[DatasetDict, PrepReport]:
    """Read an LDC folder and return the crop dataset with a report of skipped files."""
    report = PrepReport()
    rows: dict[str, dict[str, list]] = {split: {name: [] for name in FEATURES} for split in SPLITS}
    for slide in read_slides(root, report, seed):
        columns = rows[slide.split]
        for box in slide.boxes:
            label = VOC_TO_LABEL[box.name]
            columns["image"].append(crop_cell(slide.image, box, context))
            columns["label"].append(LABEL_NAMES.index(label))
            columns["source"].append(slide.relative)
            columns["image_sha256"].append(slide.digest)
            columns["image_phash"].append(slide.phash)
            columns["box"].append([box.xmin, box.ymin, box.xmax, box.ymax])
            report.crops[slide.split, label] += 1
    _check_read(root, report)
    dataset = DatasetDict({split: Dataset.from_dict(rows[split], features=FEATURES) for split in SPLITS})
    return dataset, report


def build_ldc_slides(root: str | Path, seed: int = 0) -> tuple[DatasetDict, PrepReport]:
    """Read an LDC folder and return one row per distinct whole image with its labelled boxes.

    The split is the crop dataset's (same content hash, same seed, same slides), so a whole-image
    model and the crop classifier are tested on the same slides.
    """
    report = PrepReport()
    rows: dict[str, dict[str, list]] = {split: {name: [] for name in SLIDE_FEATURES} for split in SPLITS}
    for slide in read_slides(root, report, seed):
        columns = rows[slide.split]
        labels = [VOC_TO_LABEL[box.name] for box in slide.boxes]
        columns["image"].append(slide.image)
        columns["source"].append(slide.relative)
        columns["image_sha256"].append(slide.digest)
        columns["image_phash"].append(slide.phash)
        columns["boxes"].append([[box.xmin, box.ymin, box.xmax, box.ymax] for box in slide.boxes])
        columns["box_labels"].append([LABEL_NAMES.index(label) for label in labels])
        columns["n_live"].append(labels.count(LIVE))
        columns["n_dead"].append(labels.count(DEAD))
        report.slides[slide.split] += 1
        for label in labels:
            report.crops[slide.split, label] += 1
    _check_read(root, report)
    dataset = DatasetDict({split: Dataset.from_dict(rows[split], features=SLIDE_FEATURES) for split in SPLITS})
    return dataset, report
