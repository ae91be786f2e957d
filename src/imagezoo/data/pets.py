"""Cats vs dogs plus "neither": Kaggle's pet photos and negatives from many other sources.

Pets come from the Kaggle "Dogs vs. Cats" layout (``cat.N.jpg`` / ``dog.N.jpg``, the label
in the file name). Negatives are every other kind of image this project has (microscopy,
MRI, cartoons, object photos, faces) plus synthetic families (:mod:`imagezoo.data.synthetic`).
The negative sources are split in two groups so that refusal can be measured honestly:

* **fit sources** go to train, validation and test, like the pets;
* **held-out sources** go to test only: the model and its threshold never see them, so
  their refusal rates estimate what happens with an unseen kind of image.

Splits are by pixel-content hash, so byte-identical copies never straddle two splits.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from datasets import ClassLabel, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from imagezoo.data import SPLITS
from imagezoo.data.splits import assign_split, dataset_from_rows, pixel_sha256
from imagezoo.data.synthetic import synthetic_images
from imagezoo.images import ImageError, load_image, shrink
from imagezoo.tasks import get_task

logger = logging.getLogger(__name__)

LABEL_NAMES = get_task("cats-dogs").label_names
REJECT_LABEL = get_task("cats-dogs").reject_label
PET_FILE = re.compile(r"^(cat|dog)\.\d+\.\w+$")

FEATURES = Features(
    {
        "image": ImageFeature(),
        "label": ClassLabel(names=list(LABEL_NAMES)),
        "source": Value("string"),
        "held_out": Value("bool"),
        "image_sha256": Value("string"),
    }
)

#: negative sources trained on -> how many images each contributes before the split
FIT_SOURCES = {
    "ldc": 240, "brain-mri": 240, "faces": 200, "characters-pokemon": 200, "objects-fit": 100,
    "synthetic-noise": 120, "synthetic-flat": 120, "synthetic-gradient": 120, "synthetic-text": 120,
    "synthetic-shapes": 120,
}
#: negative sources kept out of training and threshold choice: test split only. Where a kind of image
#: is also among the fit sources, the held-out part is another group of it (other cartoon series,
#: other photos), never other images of the same group.
HELD_OUT_SOURCES = {
    "dsb2018": 150, "brain-tumor-detection": 150, "characters-anime": 200, "objects": 100,
    "synthetic-plot": 100, "synthetic-layout": 100,
}

#: photos bundled with scikit-image (no animals: ``chelsea`` is a cat and is left out), by group:
#: the held-out ones are the everyday photos (people, a cup, a camera, a rocket, grass)
SKIMAGE_OBJECTS = {
    "objects-fit": ("clock", "gravel", "brick", "coins", "page", "colorwheel", "moon", "hubble_deep_field", "retina",
                    "immunohistochemistry", "logo", "text", "horse", "checkerboard"),
    "objects": ("astronaut", "camera", "coffee", "rocket", "grass"),
}


@dataclass
class PrepReport:
    """What a preparation run did: rows per split, label and source, and every file skipped."""

    rows: Counter = field(default_factory=Counter)  # (split, label, source) -> count
    duplicates: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def count(self, split: str | None = None, label: str | None = None, source: str | None = None) -> int:
        return sum(n for (s, lab, src), n in self.rows.items()
                   if split in (None, s) and label in (None, lab) and source in (None, src))

    def summary(self) -> str:
        lines = [f"{self.duplicates} duplicate copies left out, {len(self.skipped)} files skipped"]
        for split in SPLITS:
            counts = ", ".join(f"{label}={self.count(split, label)}" for label in LABEL_NAMES)
            lines.append(f"  {split}: {counts}")
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def pet_files(root: str | Path) -> list[tuple[Path, str]]:
    """``(path, label)`` for every ``cat.N.*`` / ``dog.N.*`` file under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    files = sorted(p for p in root.iterdir() if p.is_file() and PET_FILE.match(p.name))
    if not files:
        raise ValueError(f"{root}: no cat.N.jpg / dog.N.jpg files found")
    return [(p, p.name.split(".")[0]) for p in files]


def _sample(paths: list[Path], n: int, seed: int) -> list[Path]:
    paths = sorted(paths)
    if len(paths) <= n:
        return paths
    return [paths[i] for i in sorted(np.random.default_rng(seed).choice(len(paths), n, replace=False))]


def _files(root: Path, pattern: str) -> list[Path]:
    return [p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() != ".xml"]


def _skimage_objects(names: tuple[str, ...], n: int, seed: int) -> Iterator[tuple[str, Image.Image]]:
    """Each of the bundled photos ``names`` whole, then random crops of them until ``n`` images."""
    import skimage.data

    photos = []
    for name in names:
        pixels = getattr(skimage.data, name)()
        if pixels.dtype != np.uint8:
            pixels = (255 * (pixels > 0) if pixels.dtype == bool else np.clip(pixels * 255, 0, 255)).astype(np.uint8)
        photos.append((name, load_image(Image.fromarray(pixels))))
    rng = np.random.default_rng(seed)
    for i in range(n):
        name, photo = photos[i % len(photos)]
        if i >= len(photos):
            side = int(min(photo.size) * rng.uniform(0.4, 0.8))
            x, y = int(rng.integers(0, photo.width - side + 1)), int(rng.integers(0, photo.height - side + 1))
            photo = photo.crop((x, y, x + side, y + side))
        yield f"skimage:{name}#{i}", photo


def _lfw_faces(n: int, seed: int) -> Iterator[tuple[str, Image.Image]]:
    """Face photos of scikit-image's bundled LFW subset (25x25 grey, upscaled to 100 px)."""
    import skimage.data

    faces = skimage.data.lfw_subset()[:n]
    for i, face in enumerate(faces):
        pixels = (np.clip(face, 0, 1) * 255).astype(np.uint8)
        yield f"skimage:lfw_subset#{i}", Image.fromarray(pixels).resize((100, 100), Image.Resampling.BICUBIC)


def negative_images(source: str, n: int, data_root: str | Path, seed: int = 0) -> Iterator[tuple[str, Image.Image]]:
    """``(origin, image)`` pairs of one negative source, at most ``n``, deterministic for a seed.

    File sources read ``data_root`` (``../shared/data`` or a user's own downloads in the
    same public layouts); unreadable files are skipped by the caller.
    """
    root = Path(data_root)
    file_sources: dict[str, Callable[[], list[Path]]] = {
        "ldc": lambda: _files(root / "ldc" / "Original Dataset", "*"),
        "brain-mri": lambda: _files(root / "brain-tumor-mri" / "Training", "*/*"),
        "brain-tumor-detection": lambda: _files(root / "brain-tumor-detection", "*/*"),
        "dsb2018": lambda: _files(root / "dsb2018" / "stage1_train", "*/images/*"),
        "cats-dogs": lambda: _files(root / "cats-dogs" / "train", "*"),
        "characters-pokemon": lambda: _files(root / "characters" / "pokemon", "*/**/*"),
        "characters-anime": lambda: [p for series in ("dragonball", "fairytail")
                                     for p in _files(root / "characters" / series, "*/**/*")],
    }
    if source in file_sources:
        paths = file_sources[source]()
        if not paths:
            raise FileNotFoundError(f"negative source {source!r}: no files under {root}")
        for path in _sample(paths, n, seed):
            yield str(path.relative_to(root)), path
    elif source in SKIMAGE_OBJECTS:
        yield from _skimage_objects(SKIMAGE_OBJECTS[source], n, seed)
    elif source == "faces":
        yield from _lfw_faces(n, seed)
    elif source.startswith("synthetic-"):
        family = source.removeprefix("synthetic-")
        for i, image in enumerate(synthetic_images(family, n, seed)):
            yield f"{source}#{i}", image
    else:
        known = sorted([*file_sources, *SKIMAGE_OBJECTS, "faces"]) + ["synthetic-<family>"]
        raise KeyError(f"unknown negative source {source!r}; known: {known}")


def build_pets_dataset(
    pets_dir: str | Path,
    data_root: str | Path,
    fit_sources: dict[str, int] | None = None,
    held_out_sources: dict[str, int] | None = None,
    seed: int = 0,
    max_pets: int | None = None,
) -> tuple[DatasetDict, PrepReport]:
    """Pets and negatives as a ``DatasetDict`` with train/validation/test splits.

    ``fit_sources`` / ``held_out_sources`` map a negative source to its image count
    (defaults: :data:`FIT_SOURCES`, :data:`HELD_OUT_SOURCES`); ``max_pets`` keeps the first
    pets per class only (small test sets).
    """
    fit_sources = FIT_SOURCES if fit_sources is None else fit_sources
    held_out_sources = HELD_OUT_SOURCES if held_out_sources is None else held_out_sources
    report = PrepReport()
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    seen: set[str] = set()

    def add(image_or_path, origin: str, label: str, source: str, held_out: bool) -> None:
        try:
            image = load_image(image_or_path, name=origin)
        except ImageError as err:
            report.skipped.append((origin, str(err)))
            return
        image = shrink(image)
        digest = pixel_sha256(image)
        if digest in seen:
            report.duplicates += 1
            return
        seen.add(digest)
        split = "test" if held_out else assign_split(digest, seed)
        rows[split].append({"image": image, "label": label, "source": source, "held_out": held_out,
                            "image_sha256": digest})
        report.rows[split, label, source] += 1

    pets = pet_files(pets_dir)
    if max_pets is not None:
        pets = [p for label in ("cat", "dog") for p in [q for q in pets if q[1] == label][:max_pets]]
    for path, label in pets:
        add(path, path.name, label, "kaggle-dogs-vs-cats", held_out=False)
    for sources, held_out in ((fit_sources, False), (held_out_sources, True)):
        for source, n in sources.items():
            for origin, image in negative_images(source, n, data_root, seed):
                add(image, origin, REJECT_LABEL, source, held_out)
    dataset = dataset_from_rows(rows, FEATURES)
    return dataset, report
