"""What every dataset's preparation shares to split by content: a hash of the decoded pixels (copies of
one image saved under two names collide), a deterministic split of a group key, and row dicts as a
``DatasetDict``."""

from __future__ import annotations

import hashlib

import numpy as np
from datasets import Dataset, DatasetDict, Features
from PIL import Image

#: train / validation / test shares of every prepared dataset
FRACTIONS = (0.7, 0.15, 0.15)


def pixel_sha256(image: Image.Image) -> str:
    """Hash of the normalised pixels: identical slides saved under two names collide."""
    return hashlib.sha256(np.asarray(image).tobytes() + repr(image.size).encode()).hexdigest()


def assign_split(group: str, seed: int = 0, fractions: tuple[float, float] = FRACTIONS[:2]) -> str:
    """Deterministic train/validation/test assignment of a group key (stable across runs)."""
    bucket = int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < fractions[0]:
        return "train"
    return "validation" if bucket < fractions[0] + fractions[1] else "test"


def dataset_from_rows(rows: dict[str, list[dict]], features: Features) -> DatasetDict:
    """One ``Dataset`` per split from row dicts; an empty split keeps the columns (``from_list`` of
    nothing would have none)."""
    return DatasetDict({
        split: Dataset.from_dict({name: [row[name] for row in part] for name in features}, features=features)
        for split, part in rows.items()
    })
