"""Plumbing every training script shares: subsampled splits, the JSON-lines log, the command
and hardware a card states, and the U-Net scripts' common arguments."""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from pathlib import Path
from typing import Callable

import torch

from imagezoo.predictors.base import local_folder
from imagezoo.tasks import HUB_ORG, HUB_PREFIX, get_task


def positive_int(text: str) -> int:
    """argparse type of counts that must be at least 1 (epochs, sizes, samples): 0 trains nothing."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def subsample(dataset, split: str, limit: int | None = None, seed: int = 0):
    """``dataset[split]``, or ``limit`` of its rows drawn with ``seed`` (smoke runs)."""
    part = dataset[split]
    if limit and limit < len(part):
        part = part.shuffle(seed=seed).select(range(limit))
    return part


def jsonl_logger(path: Path) -> Callable[[dict], None]:
    """A fresh ``path`` and a function appending one JSON line per call (one per epoch)."""
    path.write_text("")

    def log(row: dict) -> None:
        with path.open("a") as fp:
            fp.write(json.dumps(row) + "\n")

    return log


def script_command(script: str, argv: list[str] | None) -> str:
    """The command line that reproduces this run, as a card shows it."""
    return shlex.join(["python", script, *(argv if argv is not None else sys.argv[1:])])


def hardware(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else (
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    )


def add_recipe_argument(parser: argparse.ArgumentParser) -> None:
    """``--recipe``: a name in the task's recipes (an unknown one is an error that lists them)."""
    parser.add_argument(
        "--recipe", default="quick", help="recipe name in the task config: quick (CPU), full (GPU), or another the task lists"
    )


def add_unet_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Recipe, data and output arguments of the U-Net training scripts (``None``: the recipe's value)."""
    add_recipe_argument(parser)
    parser.add_argument("--dataset", default=None, help="dataset folder or Hub id (default: the task's)")
    parser.add_argument("--output-dir", default=None, help="default: models/<task>")
    parser.add_argument("--encoder", default=None, help="timm encoder, e.g. tf_efficientnet_lite2")
    parser.add_argument("--epochs", type=positive_int, default=None)
    parser.add_argument("--crop-size", type=positive_int, default=None)
    parser.add_argument("--crop-ratios", type=float, nargs="+", default=None, metavar="RATIO",
                        help="centre training crops on a pixel of the background, then of each target channel, in "
                             "these ratios (e.g. 1 1 1 0 for a counter's background, dead, live, centre)")
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--losses", nargs="+", default=None, help="loss terms, summed (e.g. lovasz bce)")
    parser.add_argument("--input-scale", type=float, default=None,
                        help="resize images by this factor for the network (small objects get more pixels)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="serve (and tune and test) the mean of the 8 flips and right-angle turns of each image; "
                             "epochs are still selected without (default: the task's serving setting)")
    parser.add_argument("--init-from", default=None, metavar="MODEL",
                        help="fine-tune this trained U-Net (folder or hf-hub: id, same encoder and outputs) "
                             "instead of starting from ImageNet weights")
    parser.add_argument("--max-train-samples", type=positive_int, default=None,
                        help="subsample training images (smoke runs)")
    add_run_arguments(parser)
    return parser


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the trained folder is uploaded, and the repo id its card names."""
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None)
    parser.add_argument("--hub-repo-id", default=None, help="repo id shown in the card (default: imagezoo/<folder>)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Seed, device and Hub arguments of every fine-tuning script."""
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_hub_arguments(parser)


def output_folder(args: argparse.Namespace, task, suffix: str = "") -> Path:
    """``--output-dir``, else ``models/<task><suffix>``, or ``models/<task><suffix>-<dataset name>`` for a task
    re-pointed at another ``--dataset`` (:meth:`~imagezoo.tasks.Task.on_dataset`): a fine-tune must neither
    replace the model it starts from nor pass for the task's own model (``make`` would serve it). A folder that
    is the ``--init-from`` model's is refused."""
    default = f"models/{task.name}{suffix}"
    if task.dataset != get_task(task.name).dataset:
        default += f"-{task.dataset_name}"
    output = Path(args.output_dir or default)
    init_from = getattr(args, "init_from", None)
    if init_from and not init_from.startswith(HUB_PREFIX) and output.resolve() == local_folder(init_from).resolve():
        raise SystemExit(f"{output} is the --init-from model's folder and would be overwritten: pass another --output-dir")
    return output


def card_repo_id(args: argparse.Namespace, output_dir: Path) -> str:
    """The repo a card names: the one pushed to, else ``--hub-repo-id``, else ``imagezoo/<folder>``."""
    return args.push_to_hub or args.hub_repo_id or f"{HUB_ORG}/{output_dir.name}"


def serving_settings(task, args: argparse.Namespace) -> dict:
    """The task's serving settings (``model_config``) with the command line's ``--tta``."""
    return {**task.model_config, **({} if args.tta is None else {"tta": args.tta})}


def unet_base_model(recipe) -> str | None:
    """The card's ``base_model``: the U-Net fine-tuned (a local folder named as its ``imagezoo/<folder>`` repo),
    else the ImageNet encoder, else none."""
    if recipe.init_from:
        if recipe.init_from.startswith(HUB_PREFIX):
            return recipe.init_from.removeprefix(HUB_PREFIX)
        return f"{HUB_ORG}/{local_folder(recipe.init_from).resolve().name}"
    return f"timm/{recipe.encoder}.in1k" if recipe.pretrained else None


def unet_recipe(task, args: argparse.Namespace):
    """The task's named recipe with the command line's overrides."""
    return task.recipe(args.recipe).with_overrides(
        encoder=args.encoder, epochs=args.epochs, crop_size=args.crop_size, batch_size=args.batch_size, lr=args.lr,
        losses=tuple(args.losses) if args.losses else None, input_scale=args.input_scale, init_from=args.init_from,
        crop_ratios=tuple(args.crop_ratios) if args.crop_ratios else None,
    )
