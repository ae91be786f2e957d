"""Prepare the cats / dogs / neither dataset in Hugging Face layout.

    python training/prepare_cats_dogs.py --pets-dir ../shared/data/cats-dogs/train --data-root ../shared/data \
        --out data/cats-dogs

Pets from Kaggle's "Dogs vs. Cats" layout; "neither" from the other sets under ``--data-root``
plus synthetic images. Held-out negative sources go to the test split only (see
:mod:`imagezoo.data.pets`). Writes Parquet shards and a dataset card so that
``load_dataset("data/cats-dogs")`` and, after ``--push-to-hub``, ``load_dataset("ORG/cats-dogs")`` agree.
The repo is **private**: the negatives hold copyrighted character artwork and LFW faces.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from imagezoo.data import SPLITS
from imagezoo.data.pets import FIT_SOURCES, HELD_OUT_SOURCES, LABEL_NAMES, build_pets_dataset
from imagezoo.hub import save_prepared_dataset
from imagezoo.scripts import script_command
from imagezoo.tasks import get_task

logger = logging.getLogger("prepare_cats_dogs")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pets-dir", default="../shared/data/cats-dogs/train", help="folder of cat.N.jpg / dog.N.jpg")
    parser.add_argument("--data-root", default="../shared/data", help="root of the other sets (negatives)")
    parser.add_argument("--out", default=get_task("cats-dogs").dataset, help="output dataset folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the content-hash split and of the sampling")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every negative source's count (small runs)")
    parser.add_argument("--max-pets", type=int, default=None, help="first N pets per class only (small runs)")
    parser.add_argument("--examples-dir", default=None, help="also write a few test images here (Space examples)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload as a private dataset repo")
    return parser.parse_args(argv)


def write_examples(test_split, folder: Path) -> None:
    """Two test cats, two test dogs and one synthetic held-out negative (a chart), named by label.
    Pet photos are Kaggle's; the deployable Space ships these, so only a handful."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {"cat": 2, "dog": 2, "synthetic-plot": 1}
    for row in test_split:
        key = row["source"] if row["source"] in wanted else LABEL_NAMES[row["label"]]
        if wanted.get(key, 0) > 0:
            wanted[key] -= 1
            row["image"].save(folder / f"{key}_{wanted[key]}.jpg", quality=90)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    fit = {source: max(1, round(n * args.scale)) for source, n in FIT_SOURCES.items()}
    held_out = {source: max(1, round(n * args.scale)) for source, n in HELD_OUT_SOURCES.items()}
    dataset, report = build_pets_dataset(args.pets_dir, args.data_root, fit, held_out, args.seed, args.max_pets)
    logger.info("prepared:\n%s", report.summary())
    folder = save_prepared_dataset(
        dataset,
        args.out,
        "dataset_cats_dogs.md",
        dict(
            license="other",
            pretty_name="Cats, dogs and neither",
            task_categories=["image-classification"],
            tags=["pets", "open-set", "imagezoo"],
            size_categories=["1K<n<10K"],
        ),
        args.push_to_hub,
        private=True,  # its card: the artwork is copyrighted, do not republish it
        label_names=LABEL_NAMES,
        splits=SPLITS,
        report=report,
        fit_sources=fit,
        held_out_sources=held_out,
        seed=args.seed,
        command=script_command("training/prepare_cats_dogs.py", argv),
    )
    if args.examples_dir:
        write_examples(dataset["test"], Path(args.examples_dir))
    return folder


if __name__ == "__main__":
    main()
