"""Train, evaluate, export and card the nuclei U-Net of one registered segmentation task.

    python training/train_segmenter.py                         # nuclei-unet, quick CPU recipe
    python training/train_segmenter.py --recipe full           # GPU recipe
    python training/train_segmenter.py --push-to-hub ORG/nuclei-unet

After training, the threshold and minimum object size of each post-processing (``--methods``: the
body-border watershed and the two baselines that ignore the border) are tuned on the validation
images, and the test images are scored with each of them. The output folder is
in smp's Hub format (config.json with our serving settings under "_imagezoo", model.safetensors,
README.md) plus eval_results.json, train_log.jsonl and test_predictions.png;
``smp.from_pretrained(folder)`` loads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

from imagezoo.cards import model_card
from imagezoo.data import check_splits, load_splits
from imagezoo.files import replace_folder, staging_folder
from imagezoo.hub import push_model_folder
from imagezoo.instances import POSTPROCESSORS
from imagezoo.predictors.segmenter import InstanceSegmenter
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
from imagezoo.segmentation_training import (
    NucleiImages,
    SegmentationCrops,
    fit_segmenter,
    instance_metrics,
    nuclei_validation,
    predict_all,
    save_prediction_figure,
    train_transform,
    tune_postprocessing,
    type_sampler,
    zoom_crop_size,
)
from imagezoo.tasks import TASKS, get_task

logger = logging.getLogger("train_segmenter")

SEGMENTATION_TASKS = sorted(
    name for name, task in TASKS.items() if task.model_config.get("predictor") == InstanceSegmenter.kind)
HEADLINE = ("dsb_score", "foreground_iou", "precision_at_0.5", "ap_0.5", "dice")


#: the post-processings that read (body, border) maps (``watershed-centres`` needs a centre channel)
BODY_BORDER_METHODS = sorted(name for name in POSTPROCESSORS if name != "watershed-centres")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="nuclei-unet", choices=SEGMENTATION_TASKS)
    add_unet_arguments(parser)
    parser.add_argument("--methods", nargs="+", choices=BODY_BORDER_METHODS,
                        default=["watershed-border", "watershed-distance", "components"],
                        help="post-processings of (body, border) tuned and scored on validation; the best is served")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7], help="tuned on validation")
    parser.add_argument("--min-sizes", type=int, nargs="+", default=[10, 25, 50], help="tuned on validation")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    task = get_task(args.task).on_dataset(args.dataset)
    recipe = unet_recipe(task, args)
    output_dir = output_folder(args, task)
    work_dir = staging_folder(output_dir)  # becomes output_dir once everything below is written
    logger.info("task %s, recipe %s: %s", task.name, args.recipe, recipe)

    dataset = load_splits(task.dataset)
    check_splits(dataset, task.dataset)
    train = NucleiImages.from_rows(subsample(dataset, "train", args.max_train_samples, args.seed))
    validation = NucleiImages.from_rows(dataset["validation"])
    test = NucleiImages.from_rows(dataset["test"])
    config = SegmenterConfig(channels=task.label_names, **encoder_normalization(recipe.encoder),
                             **serving_settings(task, args), scale=recipe.input_scale)

    log = jsonl_logger(work_dir / "train_log.jsonl")
    start = time.time()
    train_set = SegmentationCrops(train.images, train.targets, train_transform(recipe.crop_size, config, recipe.invert),
                                  config.percentiles, config.scale, zoom_crop_size(recipe.crop_size), recipe.crop_ratios)
    sampler = type_sampler(train.image_types, recipe.type_balance, len(train) * recipe.crops_per_image, args.seed)
    # epochs are selected without test-time augmentation (8x the time of every validation)
    validate = nuclei_validation(validation, dataclasses.replace(config, tta=False))
    result = fit_segmenter(recipe, train_set, config, validate, sampler, args.seed, args.device, log)
    train_minutes = (time.time() - start) / 60

    # post-processing settings from validation only; the test images are scored once per method
    start = time.time()
    val_probs = predict_all(result.model, validation.images, config)
    test_probs = predict_all(result.model, test.images, config)
    postprocessing = {}
    for method in args.methods:
        params, val_metrics = tune_postprocessing(val_probs, validation, config, method, args.thresholds, args.min_sizes)
        postprocessing[method] = {
            **params,
            "validation": val_metrics,
            "test": instance_metrics(test_probs, test, dataclasses.replace(config, postprocess=method, **params)),
        }
        overall = postprocessing[method]["test"]["overall"]
        logger.info(
            "test %s (threshold %.2f, min_size %d): DSB %.4f, foreground IoU %.4f, precision@0.5 %.4f, AP@0.5 %.4f, "
            "count MAE %.2f", method, params["threshold"], params["min_size"], overall["dsb_score"],
            overall["foreground_iou"], overall["precision_at_0.5"], overall["ap_0.5"], overall["count_mae"],
        )
    chosen = max(postprocessing, key=lambda m: postprocessing[m]["validation"]["overall"]["dsb_score"])
    config = dataclasses.replace(
        config, postprocess=chosen, threshold=postprocessing[chosen]["threshold"],
        min_size=postprocessing[chosen]["min_size"],
    )
    metrics = postprocessing[chosen]["test"]
    eval_minutes = (time.time() - start) / 60
    logger.info("serving %s (best on validation); evaluation took %.1f min", chosen, eval_minutes)
    save_prediction_figure(test, test_probs, config, work_dir / "test_predictions.png")

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
        "postprocess": chosen,
        "metrics": metrics,
        "postprocessing": postprocessing,
    }
    (work_dir / "eval_results.json").write_text(json.dumps(summary, indent=2))

    repo_id = card_repo_id(args, output_dir)
    command = script_command("training/train_segmenter.py", argv)
    card = model_card(
        task.card_template,
        dict(
            license="apache-2.0",
            library_name="segmentation-models-pytorch",
            pipeline_tag="image-segmentation",
            tags=["image-segmentation", "instance-segmentation", "segmentation-models-pytorch", "imagezoo",
                  *task.card_facts.get("tags", [])],
            datasets=[task.dataset_repo_id],
            metrics=list(HEADLINE),
            model_name=output_dir.name,
            base_model=unet_base_model(recipe),
        ),
        results={k: metrics["overall"][k] for k in HEADLINE},
        task_type="image-segmentation",
        dataset_name=task.dataset_name,
        dataset_type=task.dataset_repo_id,
        **task.card_facts,
        split_description=task.split_description,
        repo_id=repo_id,
        local_dir=str(output_dir),
        config=dataclasses.asdict(config),
        metrics=metrics,
        postprocessing=postprocessing,
        chosen=chosen,
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
    save_unet(result.model.cpu(), config, work_dir, card)
    replace_folder(work_dir, output_dir)
    logger.info("saved %s", output_dir)
    if args.push_to_hub:
        push_model_folder(output_dir, args.push_to_hub)
    return output_dir


if __name__ == "__main__":
    main()
