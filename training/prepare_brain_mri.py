"""Prepare the three brain MRI datasets (tumour type, tumour yes/no, MRI gate) in Hugging Face layout.

    python training/prepare_brain_mri.py --data-root ../shared/data --out-dir data

Both public MRI sets are grouped by perceptual hash before any split (see
:mod:`imagezoo.data.brain`), so near-copies never straddle two splits of any of the three
datasets. Writes ``data/brain-tumor-type``, ``data/brain-tumor-detect`` and
``data/brain-mri-gate`` (Parquet + dataset card each); ``--push-to-hub ORG`` uploads them as
``ORG/<name>`` (the gate's privately: it holds copyrighted character artwork).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from imagezoo.data import SPLITS
from imagezoo.data.brain import (
    DETECT_LABELS,
    GATE_LABELS,
    GATE_NEGATIVES,
    NEAR_DUPLICATE_BITS,
    TYPE_LABELS,
    build_brain_datasets,
)
from imagezoo.hub import save_prepared_dataset
from imagezoo.scripts import script_command
from imagezoo.tasks import get_task

logger = logging.getLogger("prepare_brain_mri")

#: the three datasets, each written to its task's dataset folder name (``--out-dir``/<name>)
DATASETS = {
    "type": dict(folder=Path(get_task("brain-tumor-type").dataset).name, labels=TYPE_LABELS,
                 pretty_name="Brain tumour type MRI slices",
                 about="Brain MRI slices labelled by tumour type (or no tumour)."),
    "detect": dict(folder=Path(get_task("brain-tumor-detect").dataset).name, labels=DETECT_LABELS,
                   pretty_name="Brain tumour yes/no MRI slices",
                   about="Brain MRI slices labelled tumour or no tumour (the navoneel set)."),
    "gate": dict(folder=Path(get_task("brain-mri-gate").dataset).name, labels=GATE_LABELS,
                 pretty_name="Brain MRI or not",
                 about="Brain MRI slices (`mri`) against every other kind of image this project has (`other`)."),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="../shared/data", help="holds brain-tumor-mri/, brain-tumor-detection/ "
                        "and the negative sources")
    parser.add_argument("--out-dir", default="data", help="the three dataset folders are written here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the group split and of the negatives' sampling")
    parser.add_argument("--max-bits", type=int, default=NEAR_DUPLICATE_BITS, help="phash bits of a near-duplicate")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every negative source's count (small runs)")
    parser.add_argument("--max-per-label", type=int, default=None, help="first N MRI files per class (small runs)")
    parser.add_argument("--examples-dir", default=None, help="also write one test image per tumour type here (Space)")
    parser.add_argument("--push-to-hub", metavar="ORG", default=None, help="upload each dataset as ORG/<name>")
    return parser.parse_args(argv)


def write_examples(test_split, folder: Path) -> None:
    """One test slice per class, named by label (the Space's examples: Kaggle's images, so only four)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = test_split.features["label"].names
    wanted = set(names)
    for row in test_split:
        label = names[row["label"]]
        if label in wanted:
            wanted.discard(label)
            row["image"].save(folder / f"{label}.jpg", quality=92)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    negatives = {source: max(1, round(n * args.scale)) for source, n in GATE_NEGATIVES.items()}
    datasets, report = build_brain_datasets(args.data_root, args.seed, args.max_bits, negatives, args.max_per_label)
    logger.info("prepared:\n%s", report.summary())
    command = script_command("training/prepare_brain_mri.py", argv)
    folders = {}
    for name, facts in DATASETS.items():
        folders[name] = save_prepared_dataset(
            datasets[name],
            Path(args.out_dir, facts["folder"]),
            "dataset_brain_mri.md",
            dict(
                license="other",
                pretty_name=facts["pretty_name"],
                task_categories=["image-classification"],
                tags=["medical", "brain-mri", "imagezoo"],
                size_categories=["1K<n<10K"] if name != "detect" else ["n<1K"],
            ),
            f"{args.push_to_hub}/{facts['folder']}" if args.push_to_hub else None,
            private=name == "gate",
            name=name,
            about=facts["about"],
            label_names=facts["labels"],
            splits=SPLITS,
            report=report,
            negatives=negatives,
            sources=sorted({source for _, _, source in report.rows[name]}),
            seed=args.seed,
            command=command,
        )
    if args.examples_dir:
        write_examples(datasets["type"]["test"], Path(args.examples_dir))
    return folders


if __name__ == "__main__":
    main()
