"""2018 Data Science Bowl nuclei (stage1_train) -> image, instance labels and U-Net targets.

Each sample folder ``<id>/`` holds ``images/<id>.png`` (RGBA, alpha always 255) and one binary
PNG per nucleus in ``masks/``. A nuclei U-Net in the style of the 2018 winners learns two
channels: the nucleus ``mask`` and a ``border`` channel (outlines plus contacts between
neighbours) whose subtraction leaves one seed per nucleus for a watershed. The set mixes
fluorescence, bright-field and H&E images whose shares differ a lot, so the split is
stratified by an image type found by clustering colour statistics. Near-copies (the same field
imaged twice under two ids) then follow their training member (``imagezoo.data.near_duplicates``).
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from datasets import Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from scipy import ndimage as ndi
from skimage.color import rgb2gray
from skimage.morphology import disk
from skimage.segmentation import find_boundaries
from sklearn.cluster import KMeans
from sklearn.model_selection import train_test_split

from imagezoo.data import SPLITS
from imagezoo.data.near_duplicates import keep_groups_together, near_duplicate_groups
from imagezoo.data.splits import FRACTIONS
from imagezoo.images import ImageError, load_image

logger = logging.getLogger(__name__)

IMAGE_TYPES = ("fluorescence", "brightfield", "histology")
#: Thickness of the border target in pixels (the default of :func:`border_target`).
BORDER_WIDTH = 2

#: phash bits two images may differ in and still be near-copies. Measured on the 564 images here: 4,
#: 6 or 8 bits link the same single pair (one field imaged twice, pixel correlation 0.94), 10 bits
#: a second pair; 0-2 bits none.
NEAR_DUPLICATE_BITS = 6

#: HSV saturation above which a pixel counts as coloured (grey pixels have exactly 0).
COLOUR_SATURATION = 0.02

FEATURES = Features(
    {
        "id": Value("string"),
        "image_type": Value("string"),
        "image": ImageFeature(),
        "instances": ImageFeature(),
        "mask": ImageFeature(),
        "border": ImageFeature(),
        "n_nuclei": Value("int32"),
        "width": Value("int32"),
        "height": Value("int32"),
    }
)


class SampleError(ValueError):
    """A sample folder whose masks cannot be turned into instance labels; the message says why."""


@dataclass
class PrepReport:
    """What a preparation run did, including every sample it had to skip and why."""

    n_samples: int = 0
    overlap_pixels: int = 0
    stratified: bool = True
    moved: list[str] = field(default_factory=list)  # near-copies moved to their group's split
    skipped: list[tuple[str, str]] = field(default_factory=list)
    samples: Counter = field(default_factory=Counter)  # (split, image_type) -> samples
    nuclei: Counter = field(default_factory=Counter)  # (split, image_type) -> nuclei

    def summary(self) -> str:
        lines = [
            f"{self.n_samples} samples read; {self.overlap_pixels} pixels claimed by two masks (kept by the first)",
            f"  split stratified by image type: {'yes' if self.stratified else 'no (too few samples of a type)'}",
            f"  near-copies moved to their group's split: {len(self.moved)} {self.moved}",
        ]
        for split in SPLITS:
            counts = ", ".join(
                f"{kind}={self.samples[split, kind]} ({self.nuclei[split, kind]} nuclei)"
                for kind in IMAGE_TYPES
            )
            lines.append(f"  {split}: {counts}")
        lines += [f"  skipped {sample}: {reason}" for sample, reason in self.skipped]
        return "\n".join(lines)


def sample_dirs(root: str | Path) -> list[Path]:
    """The sample folders of a stage1_train-layout folder, sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise ValueError(f"{root}: no sample folders found")
    return dirs


def read_sample_with_overlaps(sample_dir: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`read_sample` plus the number of mask pixels that an earlier mask had already claimed."""
    rgb = np.asarray(load_image(sample_dir / "images" / f"{sample_dir.name}.png"))
    mask_paths = sorted((sample_dir / "masks").glob("*.png"))
    if not mask_paths:
        raise SampleError(f"{sample_dir.name}: no masks/*.png")
    instances = np.zeros(rgb.shape[:2], np.uint16)
    overlap = 0
    for label, path in enumerate(mask_paths, start=1):
        mask = np.asarray(load_image(path, name=f"{sample_dir.name}/masks/{path.name}"))[..., 0] > 0
        if mask.shape != instances.shape:
            raise SampleError(
                f"{sample_dir.name}/masks/{path.name}: mask is {mask.shape[1]}x{mask.shape[0]},"
                f" image is {rgb.shape[1]}x{rgb.shape[0]}"
            )
        overlap += np.count_nonzero(mask & (instances > 0))
        instances[mask & (instances == 0)] = label
    return rgb, instances, overlap


def read_sample(sample_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image (H, W, 3) and uint16 instance labels (H, W) of one sample folder.

    0 is background and nucleus k is the k-th file of ``masks/`` in sorted order. Where masks
    overlap (7 pixels in 5 of the 564 fixed stage1_train samples) a pixel keeps the first label;
    :func:`read_sample_with_overlaps` counts such pixels. A mask whose size differs from the
    image raises :class:`SampleError`, an unreadable PNG :class:`~imagezoo.images.ImageError`.
    """
    rgb, instances, _ = read_sample_with_overlaps(sample_dir)
    return rgb, instances


def border_target(instances: np.ndarray, width: int = BORDER_WIDTH) -> np.ndarray:
    """The border channel: each nucleus's outline, ``width`` px thick on its inside, plus every
    pixel within ``width`` px of two different nuclei (where the nuclei grown by ``width``
    overlap), which marks contacts and gaps narrower than about ``2 * width`` px.

    Subtracting it from the mask leaves one core per nucleus even where nuclei touch, which is
    what lets a watershed split them.
    """
    foreground = instances > 0
    outline = (
        ndi.binary_dilation(find_boundaries(instances, mode="inner"), structure=disk(width - 1)) & foreground
    )
    near = disk(width)
    highest = ndi.maximum_filter(instances, footprint=near)
    lowest = ndi.minimum_filter(
        np.where(foreground, instances, np.iinfo(instances.dtype).max), footprint=near
    )
    return outline | (lowest < highest)


def image_type_features(rgb: np.ndarray) -> np.ndarray:
    """Colour statistics that tell the imaging types apart, all fractions in [0, 1].

    Mean brightness, the fraction of coloured pixels (HSV saturation above
    :data:`COLOUR_SATURATION`), mean saturation, then the R, G, B means and standard
    deviations. Fluorescence is dark and grey, bright-field bright and grey, H&E bright and
    coloured; the coloured fraction is what separates pale stains from grey bright-field.
    Saturation comes from Pillow's HSV conversion, 40x faster than scikit-image's on 1388x1040.
    """
    pixels = rgb.astype(np.float64) / 255
    saturation = np.asarray(Image.fromarray(rgb).convert("HSV"))[..., 1] / 255
    channels = pixels.reshape(-1, 3)
    return np.array(
        [
            rgb2gray(pixels).mean(),
            (saturation > COLOUR_SATURATION).mean(),
            saturation.mean(),
            *channels.mean(axis=0),
            *channels.std(axis=0),
        ]
    )


def assign_image_types(features: np.ndarray, seed: int = 0) -> list[str]:
    """Name each row of :func:`image_type_features` by KMeans (k=3) and a fixed naming rule.

    The darkest cluster (lowest mean brightness) is ``fluorescence``; of the other two the more
    saturated one (higher mean saturation) is ``histology`` (H&E), the other ``brightfield``.
    The features are already on one scale and are clustered unscaled: standardising them lets
    the spread within the many fluorescence images outweigh the gap to the rare types.
    k=3 assumes all three types are present, as they are in stage1_train.
    """
    clusters = KMeans(n_clusters=len(IMAGE_TYPES), n_init=10, random_state=seed).fit_predict(features)
    means = np.stack([features[clusters == k].mean(axis=0) for k in range(len(IMAGE_TYPES))])
    fluorescence = int(np.argmin(means[:, 0]))
    others = [k for k in range(len(IMAGE_TYPES)) if k != fluorescence]
    histology = max(others, key=lambda k: means[k, 2])
    names = {fluorescence: "fluorescence", histology: "histology"}
    return [names.get(k, "brightfield") for k in clusters]


def split_by_type(
    image_types: list[str],
    seed: int = 0,
    fractions: tuple[float, float, float] = FRACTIONS,
    stratify: bool = True,
) -> list[str]:
    """Train/validation/test per sample, stratified by image type so rare types reach every split.

    Two ``train_test_split`` calls: train vs the rest, then validation vs test. sklearn raises
    ``ValueError`` when a type is too rare to stratify (fewer than two samples of it in a part).
    """
    if not np.isclose(sum(fractions), 1):
        raise ValueError(f"fractions {fractions} do not add up to 1")
    types = np.asarray(image_types)
    rest_size = fractions[1] + fractions[2]
    train, rest = train_test_split(
        np.arange(len(types)), test_size=rest_size, random_state=seed, stratify=types if stratify else None
    )
    validation, test = train_test_split(
        rest,
        test_size=fractions[2] / rest_size,
        random_state=seed,
        stratify=types[rest] if stratify else None,
    )
    splits = np.empty(len(types), dtype=object)
    splits[train], splits[validation], splits[test] = SPLITS
    return list(splits)


def png(pixels: np.ndarray) -> dict:
    """An ``Image()`` value as PNG bytes: uint8 (H, W) -> L, (H, W, 3) -> RGB, uint16 -> 16-bit grey.

    ``datasets`` itself would store a uint16 array as TIFF; a 16-bit PNG decodes back to the
    same uint16 labels (Pillow mode ``I;16``) and opens as a label image in Fiji and CellProfiler.
    """
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def build_dsb2018_dataset(
    dsb_dir: str | Path,
    seed: int = 0,
    fractions: tuple[float, float, float] = FRACTIONS,
    max_bits: int = NEAR_DUPLICATE_BITS,
) -> tuple[DatasetDict, PrepReport]:
    """Read a stage1_train folder and return the split dataset with a report of skipped samples.

    Each sample is split by its image type (stratified), then every group of near-copies (phash
    within ``max_bits``) goes whole to the first of train / validation / test holding one of them.
    """
    report = PrepReport()
    rows, features, hashes = [], [], []
    for sample_dir in sample_dirs(dsb_dir):
        try:
            rgb, instances, overlap = read_sample_with_overlaps(sample_dir)
        except (ImageError, SampleError) as err:
            report.skipped.append((sample_dir.name, str(err)))
            continue
        if overlap:
            logger.info("%s: %d pixels claimed by more than one mask", sample_dir.name, overlap)
        report.overlap_pixels += overlap
        features.append(image_type_features(rgb))
        hashes.append(imagehash.phash(Image.fromarray(rgb)))
        rows.append(
            {
                "id": sample_dir.name,
                "image": png(rgb),
                "instances": png(instances),
                "mask": png(np.where(instances > 0, 255, 0).astype(np.uint8)),
                "border": png(np.where(border_target(instances), 255, 0).astype(np.uint8)),
                "n_nuclei": len(np.unique(instances[instances > 0])),
                "width": rgb.shape[1],
                "height": rgb.shape[0],
            }
        )
    report.n_samples = len(rows)
    if report.n_samples < len(SPLITS):
        raise ValueError(
            f"{dsb_dir}: {report.n_samples} readable samples, at least {len(SPLITS)} needed to split"
        )
    image_types = assign_image_types(np.stack(features), seed)
    try:
        splits = split_by_type(image_types, seed, fractions)
    except ValueError as err:
        logger.warning("cannot stratify by image type (%s): splitting at random", err)
        splits, report.stratified = split_by_type(image_types, seed, fractions, stratify=False), False
    grouped = keep_groups_together(splits, near_duplicate_groups(hashes, max_bits))
    report.moved = [row["id"] for row, before, after in zip(rows, splits, grouped) if before != after]
    splits = grouped
    for row, image_type, split in zip(rows, image_types, splits):
        row["image_type"] = image_type
        report.samples[split, image_type] += 1
        report.nuclei[split, image_type] += row["n_nuclei"]
    dataset = DatasetDict(
        {
            split: Dataset.from_dict(
                {name: [row[name] for row, s in zip(rows, splits) if s == split] for name in FEATURES},
                features=FEATURES,
            )
            for split in SPLITS
        }
    )
    return dataset, report
