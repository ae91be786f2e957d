"""Character artwork sets (Pokémon, Dragon Ball, Fairy Tail) in their public folder layout.

``<set>/train/<class>/``, ``<set>/validation/<class>/`` and an unlabelled ``<set>/predict/``.
The published ``validation/`` folder is our **test** split, reported per class and never used
for choices; model selection uses a validation split carved from ``train/`` by content hash.
Files without extensions, GIFs (first frame) and odd names load like any image; a test image
identical in pixels to a training image is left out so the test set measures generalisation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from datasets import ClassLabel, DatasetDict, Features, Value
from datasets import Image as ImageFeature

from imagezoo.data import SPLITS
from imagezoo.data.splits import assign_split, dataset_from_rows, pixel_sha256
from imagezoo.images import ImageError, load_image, shrink


@dataclass
class PrepReport:
    """Images per split and class, copies of training images left out of test, and skipped files."""

    rows: Counter = field(default_factory=Counter)  # (split, label) -> count
    duplicates: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, label_names: Sequence[str]) -> str:
        lines = [f"{self.duplicates} copies of training images left out, {len(self.skipped)} files skipped"]
        for split in SPLITS:
            lines.append(f"  {split}: " + ", ".join(f"{name}={self.rows[split, name]}" for name in label_names))
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def class_names(folder: str | Path) -> list[str]:
    """The class sub-folders of ``folder`` (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def build_characters_dataset(
    set_dir: str | Path, label_names: tuple[str, ...], seed: int = 0, validation_fraction: float = 0.15
) -> tuple[DatasetDict, PrepReport]:
    """train / validation (carved from ``train/``) / test (the published ``validation/``) splits of one set.

    ``label_names`` must be exactly the class folders (the task registry's labels), so a renamed
    or missing folder is an error, not a silently different model.
    """
    set_dir = Path(set_dir)
    for part in ("train", "validation"):
        found = class_names(set_dir / part)
        if found != sorted(label_names):
            raise ValueError(f"{set_dir / part}: class folders {found}, expected {sorted(label_names)}")
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(label_names)),
                         "source": Value("string"), "image_sha256": Value("string")})
    report = PrepReport()
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    train_hashes: set[str] = set()
    for part in ("train", "validation"):
        for label in label_names:
            for path in sorted(p for p in (set_dir / part / label).rglob("*") if p.is_file()):
                origin = str(path.relative_to(set_dir))
                try:
                    image = shrink(load_image(path, name=origin))
                except ImageError as err:
                    report.skipped.append((origin, str(err)))
                    continue
                digest = pixel_sha256(image)
                if part == "train":
                    train_hashes.add(digest)
                    split = assign_split(digest, seed, (1 - validation_fraction, validation_fraction))
                elif digest in train_hashes:
                    report.duplicates += 1
                    continue
                else:
                    split = "test"
                rows[split].append({"image": image, "label": label, "source": origin, "image_sha256": digest})
                report.rows[split, label] += 1
    dataset = dataset_from_rows(rows, features)
    return dataset, report
