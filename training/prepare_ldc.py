"""Prepare the LDC live/dead crop dataset in Hugging Face layout.

    python training/prepare_ldc.py --ldc-dir "../shared/data/ldc/Original Dataset" --out data/ldc-crops

Writes Parquet shards and a dataset card so that ``datasets.load_dataset("data/ldc-crops")``
and, after ``--push-to-hub ORG/ldc-crops``, ``load_dataset("ORG/ldc-crops")`` give the same rows. Cells are
cropped with the registry's ``CELL_CROP_CONTEXT``, which the trained classifier records for inference.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from imagezoo.data import SPLITS
from imagezoo.data.ldc import LABEL_NAMES, NEAR_DUPLICATE_BITS, build_ldc_dataset
from imagezoo.hub import save_prepared_dataset
from imagezoo.tasks import CELL_CROP_CONTEXT, get_task

logger = logging.getLogger("prepare_ldc")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ldc-dir", default="../shared/data/ldc/Original Dataset", help="LDC folder (PNG + VOC XML)")
    parser.add_argument("--out", default=get_task("ldc-live-dead").dataset, help="output dataset folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image-grouped split")
    parser.add_argument("--examples-dir", default=None, help="also write a few test crops here (Space examples)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload the folder as a dataset repo")
    return parser.parse_args(argv)


def write_examples(test_split, folder: Path, per_class: int = 3) -> None:
    """Save the first ``per_class`` test crops of each label as PNG files named by label."""
    folder.mkdir(parents=True, exist_ok=True)
    for label_id, label in enumerate(LABEL_NAMES):
        rows = [i for i, y in enumerate(test_split["label"]) if y == label_id][:per_class]
        for n, i in enumerate(rows):
            test_split[i]["image"].save(folder / f"{label}_{n}.png")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset, report = build_ldc_dataset(args.ldc_dir, seed=args.seed)
    logger.info("prepared:\n%s", report.summary())
    save_prepared_dataset(
        dataset,
        args.out,
        "dataset_ldc.md",
        dict(
            license="other",
            pretty_name="LDC live/dead cell crops",
            task_categories=["image-classification"],
            tags=["microscopy", "cell-viability", "imagezoo"],
            size_categories=["1K<n<10K"],
        ),
        args.push_to_hub,
        source=Path(args.ldc_dir).name,
        n_images=report.n_images,
        n_images_without_cells=report.n_images_without_cells,
        duplicates=report.duplicates,
        near_copies=report.near_copies,
        near_duplicate_bits=NEAR_DUPLICATE_BITS,
        context=1 + 2 * CELL_CROP_CONTEXT,
        seed=args.seed,
        split_rows=[(s, report.crops[s, "dead"], report.crops[s, "live"]) for s in SPLITS],
        skipped=len(report.skipped),
        command=shlex.join(["python", "training/prepare_ldc.py", *(argv if argv is not None else sys.argv[1:])]),
    )
    if args.examples_dir:
        write_examples(dataset["test"], Path(args.examples_dir))


if __name__ == "__main__":
    main()
