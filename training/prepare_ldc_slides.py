"""Prepare the whole-slide LDC dataset (image + labelled boxes) in Hugging Face layout.

    python training/prepare_ldc_slides.py --ldc-dir "../shared/data/ldc/Original Dataset" --out data/ldc-slides

The split matches ``prepare_ldc.py``'s (same content hash and seed). ``load_dataset("data/ldc-slides")``
and, after ``--push-to-hub ORG/ldc-slides``, ``load_dataset("ORG/ldc-slides")`` give the same rows.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from imagezoo.data import SPLITS
from imagezoo.data.ldc import NEAR_DUPLICATE_BITS, build_ldc_slides
from imagezoo.hub import save_prepared_dataset
from imagezoo.tasks import get_task

logger = logging.getLogger("prepare_ldc_slides")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ldc-dir", default="../shared/data/ldc/Original Dataset", help="LDC folder (PNG + VOC XML)")
    parser.add_argument("--out", default=get_task("ldc-viability").dataset, help="output dataset folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image-grouped split (as prepare_ldc.py's)")
    parser.add_argument("--examples-dir", default=None, help="also write a few test slides here (Space examples)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload the folder as a dataset repo")
    return parser.parse_args(argv)


def write_examples(test_split, folder: Path, count: int = 4) -> None:
    """Save the first test slides with both live and dead cells, and one without cells, as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    mixed = [i for i, (live, dead) in enumerate(zip(test_split["n_live"], test_split["n_dead"])) if live and dead]
    empty = [i for i, (live, dead) in enumerate(zip(test_split["n_live"], test_split["n_dead"])) if not live + dead]
    for n, i in enumerate(mixed[:count - 1] + empty[:1]):
        test_split[i]["image"].save(folder / f"slide_{n}.png")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset, report = build_ldc_slides(args.ldc_dir, seed=args.seed)
    logger.info("prepared:\n%s", report.summary())
    save_prepared_dataset(
        dataset,
        args.out,
        "dataset_ldc_slides.md",
        dict(
            license="other",
            pretty_name="LDC live/dead cell slides",
            task_categories=["object-detection"],
            tags=["microscopy", "cell-viability", "cell-counting", "imagezoo"],
            size_categories=["1K<n<10K"],
        ),
        args.push_to_hub,
        source=Path(args.ldc_dir).name,
        n_images=report.n_images,
        n_images_without_cells=report.n_images_without_cells,
        duplicates=report.duplicates,
        near_copies=report.near_copies,
        near_duplicate_bits=NEAR_DUPLICATE_BITS,
        seed=args.seed,
        split_rows=[(s, report.slides[s], report.crops[s, "dead"], report.crops[s, "live"]) for s in SPLITS],
        skipped=len(report.skipped),
        command=shlex.join(["python", "training/prepare_ldc_slides.py", *(argv if argv is not None else sys.argv[1:])]),
    )
    if args.examples_dir:
        write_examples(dataset["test"], Path(args.examples_dir))


if __name__ == "__main__":
    main()
