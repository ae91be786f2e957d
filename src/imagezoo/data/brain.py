"""Brain MRI: tumour type, tumour yes/no and "is this a brain MRI slice?" datasets.

The two public MRI sets overlap (many ``no`` images of the detection set are also in the
type set) and each holds byte-identical copies and near-copies (the same slice re-encoded or
resized, adjacent slices of one patient). So every MRI image of both sets is grouped before
any split: a perceptual hash (``imagehash.phash``) per image, images linked when their hashes
differ in at most ``max_bits`` of 64 bits, groups = connected components. A whole group goes
to one split (by a hash of the group), jointly for the three datasets, so that:

* no image or near-copy sits in two splits of the type set;
* the detection set's test images were never trained on by the type model either, which makes
  the yes/no comparison of a separate detector against ``1 - p(notumor)`` fair;
* the gate's MRI images keep the same splits.

The gate's negatives are every non-MRI source this project has (``imagezoo.data.pets``'s
sources plus the pet photos), split by pixel hash; the gate's trainer leaves each source out
in turn to estimate refusals on kinds of image it never saw.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from datasets import ClassLabel, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from imagezoo.data import SPLITS
from imagezoo.data.near_duplicates import near_duplicate_groups
from imagezoo.data.pets import negative_images
from imagezoo.data.splits import assign_split, dataset_from_rows, pixel_sha256
from imagezoo.images import ImageError, load_image, shrink
from imagezoo.tasks import NO_TUMOUR, TUMOUR, get_task

logger = logging.getLogger(__name__)

TYPE_LABELS = get_task("brain-tumor-type").label_names
DETECT_LABELS = get_task("brain-tumor-detect").label_names
GATE_LABELS = get_task("brain-mri-gate").label_names
TYPE_SOURCE, DETECT_SOURCE = "brain-tumor-mri", "brain-tumor-detection"
#: phash bits two images may differ in and still be one group. Measured on both sets (5965 images):
#: 0 bits links 1222 images (largest group 17), 6 bits 3795 (largest 104); at 8 bits chains of similar
#: slices merge 1854 images into one group, which no split can honour.
NEAR_DUPLICATE_BITS = 6

#: non-MRI sources of the gate -> images drawn from each (``imagezoo.data.pets.negative_images``)
GATE_NEGATIVES = {
    "ldc": 300, "dsb2018": 300, "cats-dogs": 400, "characters-pokemon": 200, "characters-anime": 200,
    "faces": 200, "objects-fit": 150, "objects": 100, "synthetic-noise": 150, "synthetic-flat": 150,
    "synthetic-gradient": 150, "synthetic-text": 150, "synthetic-plot": 150, "synthetic-layout": 150,
    "synthetic-shapes": 150,
}


def _features(labels: tuple[str, ...]) -> Features:
    return Features({
        "image": ImageFeature(),
        "label": ClassLabel(names=list(labels)),
        "source": Value("string"),
        "group": Value("string"),
        "image_sha256": Value("string"),
    })


@dataclass
class BrainReport:
    """What a preparation run did, per dataset: rows per (split, label, source), copies dropped, files skipped."""

    rows: dict[str, Counter] = field(default_factory=lambda: {"type": Counter(), "detect": Counter(), "gate": Counter()})
    duplicates: Counter = field(default_factory=Counter)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    mri_images: int = 0
    groups: int = 0
    images_in_shared_groups: int = 0
    largest_group: int = 0
    max_bits: int = NEAR_DUPLICATE_BITS

    def count(self, dataset: str, split: str | None = None, label: str | None = None, source: str | None = None) -> int:
        return sum(n for (s, lab, src), n in self.rows[dataset].items()
                   if split in (None, s) and label in (None, lab) and source in (None, src))

    def summary(self) -> str:
        lines = [f"{self.mri_images} MRI images in {self.groups} groups (phash <= {self.max_bits} bits; "
                 f"{self.images_in_shared_groups} share a group, largest {self.largest_group}); "
                 f"copies dropped {dict(self.duplicates)}; {len(self.skipped)} files skipped"]
        for name, labels in (("type", TYPE_LABELS), ("detect", DETECT_LABELS), ("gate", GATE_LABELS)):
            for split in SPLITS:
                counts = ", ".join(f"{label}={self.count(name, split, label)}" for label in labels)
                lines.append(f"  {name} {split}: {counts}")
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


def mri_files(data_root: str | Path) -> list[tuple[Path, str, str]]:
    """``(path, source, label)`` of both public MRI sets under ``data_root``: the type set's class
    folders, and the detection set's ``yes``/``no`` as ``tumor``/``notumor``."""
    root = Path(data_root)
    files = [(p, TYPE_SOURCE, p.parent.name) for label in TYPE_LABELS
             for p in sorted((root / TYPE_SOURCE / "Training" / label).glob("*")) if p.is_file()]
    files += [(p, DETECT_SOURCE, {"yes": TUMOUR, "no": NO_TUMOUR}[answer]) for answer in ("yes", "no")
              for p in sorted((root / DETECT_SOURCE / answer).glob("*")) if p.is_file()]
    if not files:
        raise FileNotFoundError(f"{root}: neither {TYPE_SOURCE}/Training/<class>/ nor {DETECT_SOURCE}/{{yes,no}}/ found")
    return files


def build_brain_datasets(
    data_root: str | Path,
    seed: int = 0,
    max_bits: int = NEAR_DUPLICATE_BITS,
    gate_negatives: dict[str, int] | None = None,
    max_per_label: int | None = None,
) -> tuple[dict[str, DatasetDict], BrainReport]:
    """The ``type``, ``detect`` and ``gate`` datasets (train/validation/test each) and a report.

    ``max_per_label`` keeps the first N files of each (source, label) (small test sets);
    ``gate_negatives`` maps a non-MRI source to its image count (default :data:`GATE_NEGATIVES`).
    """
    report = BrainReport(max_bits=max_bits)
    loaded = []  # (image, source, label, origin)
    per_label = Counter()
    for path, source, label in mri_files(data_root):
        if max_per_label is not None and per_label[source, label] >= max_per_label:
            continue
        per_label[source, label] += 1
        try:
            loaded.append((shrink(load_image(path)), source, label))
        except ImageError as err:
            report.skipped.append((str(path), str(err)))
    digests = [pixel_sha256(image) for image, _, _ in loaded]
    groups = near_duplicate_groups([imagehash.phash(image) for image, _, _ in loaded], max_bits)
    sizes = np.bincount(groups)
    report.mri_images, report.groups = len(loaded), len(sizes)
    report.images_in_shared_groups, report.largest_group = int((sizes[groups] > 1).sum()), int(sizes.max())
    # a group is named by its smallest member digest, so its split does not depend on file order
    group_key: dict[int, str] = {}
    for group, digest in zip(groups, digests):
        group_key[group] = min(group_key.get(group, digest), digest)

    rows = {name: {split: [] for split in SPLITS} for name in ("type", "detect", "gate")}
    seen = {name: set() for name in rows}

    def add(name: str, image: Image.Image, label: str, source: str, group: str, digest: str) -> None:
        if digest in seen[name]:  # byte-identical copy: one is enough (it is in the same group anyway)
            report.duplicates[name] += 1
            return
        seen[name].add(digest)
        split = assign_split(group, seed)
        rows[name][split].append({"image": image, "label": label, "source": source, "group": group,
                                  "image_sha256": digest})
        report.rows[name][split, label, source] += 1

    for (image, source, label), group, digest in zip(loaded, groups, digests):
        key = group_key[group]
        add("type" if source == TYPE_SOURCE else "detect", image, label, source, key, digest)
        add("gate", image, "mri", source, key, digest)
    for source, n in (GATE_NEGATIVES if gate_negatives is None else gate_negatives).items():
        for origin, item in negative_images(source, n, data_root, seed):
            try:
                image = shrink(load_image(item, name=origin))
            except ImageError as err:
                report.skipped.append((origin, str(err)))
                continue
            digest = pixel_sha256(image)
            add("gate", image, "other", source, digest, digest)
    labels = {"type": TYPE_LABELS, "detect": DETECT_LABELS, "gate": GATE_LABELS}
    datasets = {name: dataset_from_rows(rows[name], _features(labels[name])) for name in rows}
    return datasets, report
