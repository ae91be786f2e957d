"""Train, evaluate, export and card the whole-slide cell counter (``ldc-viability``).

    python training/train_cell_counter.py                          # quick CPU recipe
    python training/train_cell_counter.py --recipe full            # GPU recipe
    python training/train_cell_counter.py --push-to-hub ORG/ldc-viability

Two designs are measured on the same image-grouped split: (a) the U-Net alone, a cell's class
being the stronger of its two class channels; (b) the U-Net's cells, each classified by the crop
classifier ``--classifier`` (default ``models/ldc-live-dead``, skipped if absent) on its box.
Post-processing (method, threshold, minimum size, minimum size of objects cut by the image
edge), then the calling rule (a cell is called ``--call-label`` only at ``--call-thresholds``, or at
the arg-max) are tuned per design on the validation slides; the design better on validation is shipped
(with (b), the classifier is copied into the folder as ``classifier/``), and the card shows both
on the test slides. The recipes' ``centre_scale`` (``--centre-scale``; 0: none) makes the U-Net
also learn the cells' centres, and the watershed from them (``watershed-centres``) joins the tuned methods.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

from datasets import DatasetDict

from imagezoo.cards import model_card
from imagezoo.cell_training import (
    Slides,
    cell_validation,
    counter_for,
    evaluate_counter,
    save_counter_figure,
    selection_key,
    tune_counter,
)
from imagezoo.cells import CENTRE, COUNTER_METHODS
from imagezoo.data import check_label_names, check_splits, load_splits
from imagezoo.data.ldc import NEAR_DUPLICATE_BITS
from imagezoo.data.near_duplicates import near_copies
from imagezoo.files import replace_folder, staging_folder
from imagezoo.hub import push_model_folder
from imagezoo.inference import ImageClassifier
from imagezoo.predictors.base import resolve_model_folder
from imagezoo.predictors.cells import CellCounter
from imagezoo.scripts import (
    add_unet_arguments,
    card_repo_id,
    hardware,
    jsonl_logger,
    output_folder,
    script_command,
    serving_settings,
    subsample,
    unet_base_model,
    unet_recipe,
)
from imagezoo.segmentation import SegmenterConfig, encoder_normalization, save_unet
from imagezoo.segmentation_training import SegmentationCrops, fit_segmenter, train_transform, zoom_crop_size
from imagezoo.tasks import TASKS, get_task

logger = logging.getLogger("train_cell_counter")

COUNTER_TASKS = sorted(name for name, task in TASKS.items() if task.model_config.get("predictor") == CellCounter.kind)
CLASSIFIER_FOLDER = "classifier"
#: the crop classifier of design (b) is this task's model
CLASSIFIER_TASK = "ldc-live-dead"
DESIGNS = {
    "unet": "U-Net alone: each cell's class is the stronger of its two class channels",
    "unet+classifier": "U-Net finds the cells, the crop classifier labels each one from its box",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="ldc-viability", choices=COUNTER_TASKS)
    add_unet_arguments(parser)
    parser.add_argument("--classifier", default=f"models/{CLASSIFIER_TASK}",
                        help="crop classifier of design (b); '' for none")
    parser.add_argument("--design", default="auto", choices=["auto", *DESIGNS],
                        help="the design to ship; auto: the better on validation")
    parser.add_argument("--centre-scale", type=float, default=None,
                        help="learn the cells' centres as ellipses this fraction of each box (0: no centre channel; "
                        "default: the recipe's)")
    parser.add_argument("--methods", nargs="+", default=None, choices=COUNTER_METHODS,
                        help="tuned on validation (default: components, watershed-distance, and watershed-centres "
                        "when the U-Net learns centres)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.4, 0.5, 0.6], help="tuned on validation")
    parser.add_argument("--min-sizes", type=int, nargs="+", default=[30, 60, 100], help="tuned on validation")
    parser.add_argument("--border-min-sizes", type=int, nargs="+", default=[0, 100, 150, 200],
                        help="objects touching the image edge need this many pixels (0: no rule); tuned on validation")
    parser.add_argument("--call-label", default=None, help="the label held back by --call-thresholds (default: the "
                        "task's first, LDC's dead, which the counter over-calls at the arg-max)")
    parser.add_argument("--call-thresholds", type=float, nargs="*", default=[0.6, 0.7, 0.8],
                        help="call a cell --call-label only at this probability or more; tuned on validation "
                        "against the arg-max")
    return parser.parse_args(argv)


def check_classifier_split(dataset: DatasetDict, crops_dataset: str) -> None:
    """Refuse when a slide the counter validates or tests on, or a near-copy of it, gave the crop classifier
    training cells (both datasets keep near-copies in one split, by content hash with the same seed; a
    prepare step re-run with another seed or an older cut would leak them into design (b)'s numbers).
    Checked when the crop dataset is here."""
    if not Path(crops_dataset).is_dir():
        logger.warning("no crop dataset at %s: the crop classifier's split is not checked", crops_dataset)
        return
    train = load_splits(crops_dataset)["train"]
    if "image_phash" not in train.column_names:
        raise SystemExit(f"{crops_dataset} was prepared before near-copies of a slide were kept in one split: "
                         "re-run prepare_ldc.py and retrain the crop classifier")
    trained_on = sorted(set(train["image_phash"]))
    for split in ("validation", "test"):
        shared = near_copies(trained_on, dataset[split]["image_phash"], NEAR_DUPLICATE_BITS)
        if shared:
            raise SystemExit(f"{len(shared)} {split} slides or near-copies of them gave {crops_dataset}'s training "
                             "crops: prepare both datasets with the same split (prepare_ldc.py and "
                             "prepare_ldc_slides.py, same --seed)")


def crop_classifier(model_id: str) -> tuple[Path, ImageClassifier] | None:
    """Design (b)'s crop classifier and its folder (a local one, or the Hub snapshot of an ``hf-hub:`` id),
    copied into the counter's folder when (b) ships; ``None`` when there is none: (b) is then not measured."""
    if not model_id:
        return None
    try:
        folder, revision = resolve_model_folder(model_id)
    except OSError as err:  # no such folder, no config or weights, a Hub id that cannot be fetched
        logger.warning("no crop classifier at %r (%s): design (b) is not measured", model_id, err)
        return None
    config = json.loads((folder / "config.json").read_text())
    return folder, ImageClassifier.from_folder(folder, config, model_id, revision)


def classifier_dataset(folder: Path) -> str:
    """The dataset a crop classifier trained on, as its ``eval_results.json`` records it; the crop task's
    for a folder written before it did."""
    results = folder / "eval_results.json"
    recorded = json.loads(results.read_text()).get("dataset") if results.is_file() else None
    return recorded or get_task(CLASSIFIER_TASK).dataset


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    task = get_task(args.task).on_dataset(args.dataset)
    recipe = unet_recipe(task, args)
    if args.centre_scale is not None:  # 0 turns the centre channel off
        recipe = dataclasses.replace(recipe, centre_scale=args.centre_scale or None)
    centres = recipe.centre_scale is not None
    methods = args.methods or ["components", "watershed-distance", *(["watershed-centres"] if centres else [])]
    output_dir = output_folder(args, task)
    work_dir = staging_folder(output_dir)  # becomes output_dir once everything below is written
    logger.info("task %s, recipe %s: %s", task.name, args.recipe, recipe)

    dataset = load_splits(task.dataset)
    check_splits(dataset, task.dataset)
    check_label_names(dataset, task.label_names, task.dataset, column="box_labels")
    train = Slides.from_rows(subsample(dataset, "train", args.max_train_samples, args.seed))
    validation = Slides.from_rows(dataset["validation"])
    test = Slides.from_rows(dataset["test"])
    classifier_folder, classifier = crop_classifier(args.classifier) or (None, None)
    if classifier_folder is not None:  # before training, not after it
        check_classifier_split(dataset, classifier_dataset(classifier_folder))
    config = SegmenterConfig(channels=(*task.label_names, *([CENTRE] if centres else [])),
                             **encoder_normalization(recipe.encoder), **serving_settings(task, args),
                             scale=recipe.input_scale)
    if centres:  # validate epochs with the post-processing the centres are for
        config = dataclasses.replace(config, postprocess="watershed-centres")

    log = jsonl_logger(work_dir / "train_log.jsonl")
    start = time.time()
    targets = train.targets(len(task.label_names), recipe.centre_scale)
    crops = SegmentationCrops(train.images, targets, train_transform(recipe.crop_size, config, recipe.invert),
                              scale=config.scale, min_size=zoom_crop_size(recipe.crop_size), ratios=recipe.crop_ratios)
    # epochs are selected without test-time augmentation (8x the time of every validation)
    validate = cell_validation(validation, dataclasses.replace(config, tta=False))
    result = fit_segmenter(recipe, crops, config, validate, None, args.seed, args.device, log)
    train_minutes = (time.time() - start) / 60

    # post-processing per design from validation only; the test slides are scored once per design
    start = time.time()
    model = result.model  # on the training device: tuning runs the network (8x with test-time augmentation)
    counter = counter_for(model, config)
    val_probs = [counter.probabilities(tensor) for tensor in validation.tensors()]
    test_probs = [counter.probabilities(tensor) for tensor in test.tensors()]
    candidates = {"unet": counter}
    if classifier is not None:
        candidates["unet+classifier"] = counter_for(model, config, classifier)
    call_label = args.call_label or task.label_names[0]
    min_probabilities = [(call_label, threshold) for threshold in args.call_thresholds]
    designs, tuned = {}, {}
    for name, candidate in candidates.items():
        tuned[name], val_metrics = tune_counter(
            candidate, validation, val_probs, methods, args.thresholds, args.min_sizes, args.border_min_sizes,
            min_probabilities,
        )
        settings = tuned[name].settings
        designs[name] = {
            "description": DESIGNS[name],
            "postprocess": settings.postprocess, "threshold": settings.threshold, "min_size": settings.min_size,
            "border_min_size": settings.border_min_size, "min_probability": settings.min_probability,
            "validation": val_metrics,
            "test": evaluate_counter(tuned[name], test, test_probs),
        }
        overall = designs[name]["test"]["overall"]
        logger.info(
            "test %s (%s, threshold %.2f, min_size %d): F1 live %.4f dead %.4f cells %.4f, viability MAE %.4f "
            "(slides with cells: %s)", name, settings.postprocess, settings.threshold, settings.min_size,
            overall["live"]["f1"], overall["dead"]["f1"], overall["cells"]["f1"], overall["viability_mae"],
            overall["viability_mae_with_cells"],
        )
    chosen = args.design
    if chosen == "auto":
        chosen = max(designs, key=lambda name: selection_key(designs[name]["validation"]))
    if chosen not in designs:
        raise SystemExit(f"--design {chosen} was not measured (no crop classifier at {args.classifier!r})")
    shipped = tuned[chosen]
    config = dataclasses.replace(shipped.settings, classifier=CLASSIFIER_FOLDER if shipped.classifier else None)
    metrics = designs[chosen]["test"]
    eval_minutes = (time.time() - start) / 60
    logger.info("serving %s (best on validation); evaluation took %.1f min", chosen, eval_minutes)
    save_counter_figure(shipped, test, test_probs, work_dir / "test_predictions.png")

    summary = {
        "name": output_dir.name,
        "task": task.name,
        "dataset": task.dataset,
        "recipe": args.recipe,
        "encoder": recipe.encoder,
        "crop_size": recipe.crop_size,
        "split": task.split_description,
        "best_epoch": result.best_epoch,
        "train_minutes": round(train_minutes, 2),
        "eval_minutes": round(eval_minutes, 2),
        "design": chosen,
        "classifier": args.classifier if classifier is not None else None,
        "metrics": metrics,
        "designs": designs,
    }
    (work_dir / "eval_results.json").write_text(json.dumps(summary, indent=2))

    overall = metrics["overall"]
    headline = {
        "live_f1": overall["live"]["f1"], "dead_f1": overall["dead"]["f1"], "cells_f1": overall["cells"]["f1"],
        "viability_mae": overall["viability_mae"], "viability_mae_with_cells": overall["viability_mae_with_cells"],
    }
    repo_id = card_repo_id(args, output_dir)
    command = script_command("training/train_cell_counter.py", argv)
    card = model_card(
        task.card_template,
        dict(
            license="apache-2.0",
            library_name="segmentation-models-pytorch",
            pipeline_tag="object-detection",
            tags=["object-detection", "cell-counting", "segmentation-models-pytorch", "imagezoo",
                  *task.card_facts.get("tags", [])],
            datasets=[task.dataset_repo_id],
            metrics=list(headline),
            model_name=output_dir.name,
            base_model=unet_base_model(recipe),
        ),
        results=headline,
        task_type="object-detection",
        dataset_name=task.dataset_name,
        dataset_type=task.dataset_repo_id,
        **task.card_facts,
        split_description=task.split_description,
        repo_id=repo_id,
        local_dir=str(output_dir),
        config=dataclasses.asdict(config),
        metrics=metrics,
        designs=designs,
        chosen=chosen,
        classifier_id=args.classifier if classifier is not None else None,
        n_train=len(train),
        n_validation=len(validation),
        n_test=len(test),
        recipe=dataclasses.asdict(recipe),
        recipe_name=args.recipe,
        best_epoch=result.best_epoch,
        history=result.history,
        seed=args.seed,
        train_minutes=train_minutes,
        eval_minutes=eval_minutes,
        hardware=hardware(args.device),
        dataset_license=task.dataset_license,
        prepare_command=task.prepare_command,
        command=command,
    )
    save_unet(model.cpu(), config, work_dir, card)
    if shipped.classifier is not None:
        shutil.copytree(classifier_folder, work_dir / CLASSIFIER_FOLDER,
                        ignore=shutil.ignore_patterns("*.png", "*.jsonl", "eval_results.json"))
    replace_folder(work_dir, output_dir)
    logger.info("saved %s", output_dir)
    if args.push_to_hub:
        push_model_folder(output_dir, args.push_to_hub)
    return output_dir


if __name__ == "__main__":
    main()
