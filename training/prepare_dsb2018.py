"""Prepare the 2018 Data Science Bowl nuclei dataset in Hugging Face layout.

    python training/prepare_dsb2018.py --dsb-dir ../shared/data/dsb2018/stage1_train --out data/dsb2018-nuclei

Writes Parquet shards and a dataset card so that ``datasets.load_dataset("data/dsb2018-nuclei")``
and, after ``--push-to-hub ORG/dsb2018-nuclei``, ``load_dataset("ORG/dsb2018-nuclei")`` give the same rows.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from imagezoo.data import SPLITS
from imagezoo.data.dsb2018 import BORDER_WIDTH, IMAGE_TYPES, NEAR_DUPLICATE_BITS, build_dsb2018_dataset
from imagezoo.data.splits import FRACTIONS
from imagezoo.hub import save_prepared_dataset
from imagezoo.tasks import get_task

logger = logging.getLogger("prepare_dsb2018")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dsb-dir", default="../shared/data/dsb2018/stage1_train", help="stage1_train folder"
    )
    parser.add_argument("--out", default=get_task("nuclei-unet").dataset, help="output dataset folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image-type clustering and the split")
    parser.add_argument("--max-bits", type=int, default=NEAR_DUPLICATE_BITS,
                        help="phash bits of a near-copy; near-copies share a split")
    parser.add_argument(
        "--examples-dir", default=None, help="also write a few test images here (Space examples)"
    )
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID", default=None, help="upload the folder as a dataset repo"
    )
    return parser.parse_args(argv)


def write_examples(test_split, folder: Path, per_type: int = 2) -> None:
    """Save the first ``per_type`` test images of each image type as PNG files named by type."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in IMAGE_TYPES:
        rows = [i for i, t in enumerate(test_split["image_type"]) if t == kind][:per_type]
        for n, i in enumerate(rows):
            test_split[i]["image"].save(folder / f"{kind}_{n}.png")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset, report = build_dsb2018_dataset(args.dsb_dir, seed=args.seed, max_bits=args.max_bits)
    logger.info("prepared:\n%s", report.summary())
    save_prepared_dataset(
        dataset,
        args.out,
        "dataset_dsb2018.md",
        dict(
            license="cc0-1.0",
            pretty_name="2018 Data Science Bowl nuclei",
            task_categories=["image-segmentation"],
            tags=["microscopy", "nuclei", "instance-segmentation", "imagezoo"],
            size_categories=["n<1K"],
        ),
        args.push_to_hub,
        n_samples=report.n_samples,
        n_nuclei=sum(report.nuclei.values()),
        overlap_pixels=report.overlap_pixels,
        border_width=BORDER_WIDTH,
        seed=args.seed,
        fractions="/".join(f"{f:.0%}" for f in FRACTIONS),
        stratified=report.stratified,
        max_bits=args.max_bits,
        moved=report.moved,
        image_types=IMAGE_TYPES,
        split_rows=[
            (
                s,
                [report.samples[s, kind] for kind in IMAGE_TYPES],
                sum(report.nuclei[s, kind] for kind in IMAGE_TYPES),
            )
            for s in SPLITS
        ],
        type_totals=[sum(report.samples[s, kind] for s in SPLITS) for kind in IMAGE_TYPES],
        skipped=len(report.skipped),
        repo_id=args.push_to_hub or args.out,
        command=shlex.join(
            ["python", "training/prepare_dsb2018.py", *(argv if argv is not None else sys.argv[1:])]
        ),
    )
    if args.examples_dir:
        write_examples(dataset["test"], Path(args.examples_dir))


if __name__ == "__main__":
    main()
