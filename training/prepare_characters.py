"""Prepare one character set (Pokémon, Dragon Ball or Fairy Tail) in Hugging Face layout.

    python training/prepare_characters.py --set pokemon --characters-dir ../shared/data/characters \
        --out data/characters-pokemon

The published ``validation/`` folder becomes our test split (reported per class, used for no
choice); a validation split for model selection is carved from ``train/`` by content hash.
The artwork is copyrighted: the folder written here is for local training only, and
``--push-to-hub`` pushes it as a **private** dataset repo.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from imagezoo.data import SPLITS
from imagezoo.data.characters import build_characters_dataset
from imagezoo.hub import save_prepared_dataset
from imagezoo.scripts import script_command
from imagezoo.tasks import CHARACTER_SETS, get_task

logger = logging.getLogger("prepare_characters")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", required=True, choices=sorted(CHARACTER_SETS))
    parser.add_argument("--characters-dir", default="../shared/data/characters", help="folder holding the sets")
    parser.add_argument("--out", default=None, help="output dataset folder (default: the task's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/validation content-hash split")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload as a private dataset repo")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    task = get_task(f"characters-{args.set}")
    dataset, report = build_characters_dataset(Path(args.characters_dir) / args.set, task.label_names, args.seed)
    logger.info("prepared:\n%s", report.summary(task.label_names))
    folder = save_prepared_dataset(
        dataset,
        args.out or task.dataset,
        "dataset_characters.md",
        dict(
            license="other",
            pretty_name=task.dataset_name,
            task_categories=["image-classification"],
            tags=["characters", "artwork", "imagezoo"],
            size_categories=["n<1K"],
        ),
        args.push_to_hub, private=True,
        set_name=args.set,
        label_names=task.label_names,
        splits=SPLITS,
        report=report,
        seed=args.seed,
        command=script_command("training/prepare_characters.py", argv),
    )
    return folder


if __name__ == "__main__":
    main()
