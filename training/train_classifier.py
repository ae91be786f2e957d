"""Fine-tune, evaluate, export and card an image classifier for one registered task.

    python training/train_classifier.py --task ldc-live-dead                 # quick CPU recipe
    python training/train_classifier.py --task ldc-live-dead --recipe full   # GPU recipe
    python training/train_classifier.py --task ldc-live-dead --arch seed-cnn # the seed baseline

The output folder is in timm's Hub format (config.json, model.safetensors, README.md)
plus eval_results.json, confusion_matrix.png and train_log.jsonl; ``--push-to-hub ORG/NAME``
uploads it with huggingface_hub.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from imagezoo.cards import classifier_card
from imagezoo.data import check_label_names, check_splits, load_splits
from imagezoo.evaluation import classification_metrics, paired_bootstrap, save_confusion_matrix
from imagezoo.export import choose_runtime, compare_runtimes, exportable_copy
from imagezoo.files import replace_folder, staging_folder
from imagezoo.gate import MahalanobisScore, pooled_features
from imagezoo.hub import push_model_folder, save_model_folder
from imagezoo.inference import ImageClassifier, eval_transform
from imagezoo.open_set import (
    AnyKeeps,
    ImageNetBackstop,
    open_set_metrics,
    save_backstop,
    served_network,
    threshold_keeping,
    with_threshold,
)
from imagezoo.scripts import (
    add_recipe_argument,
    add_run_arguments,
    card_repo_id,
    hardware,
    jsonl_logger,
    output_folder,
    positive_int,
    script_command,
    subsample,
)
from imagezoo.tasks import ARCH_RECIPES, CLASS_BALANCES, TASKS, get_task
from imagezoo.training import ImageLabelDataset, fit, predict_probs
from imagezoo.weights import create_pretrained

logger = logging.getLogger("train_classifier")
BACKSTOP_RULE = "third class, or ImageNet head below that"
BOTH_RULE = "third class, or ImageNet head and Mahalanobis distance both beyond theirs"
CALIBRATION_IMAGES = 256  # training images the int8 graph's activation ranges are calibrated on

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="ldc-live-dead", choices=sorted(TASKS))
    add_recipe_argument(parser)
    parser.add_argument("--arch", default=None, help="timm architecture, or seed-cnn for the seed baseline")
    parser.add_argument("--dataset", default=None, help="dataset folder or Hub id (default: the task's)")
    parser.add_argument("--output-dir", default=None, help="default: models/<task>[-<arch alias>]")
    parser.add_argument("--epochs", type=positive_int, default=None)
    parser.add_argument("--img-size", type=positive_int, default=None)
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--class-balance", choices=CLASS_BALANCES, default=None,
                        help="make the rare class count through the loss's weights or by drawing it as often")
    parser.add_argument("--layer-decay", type=float, default=None,
                        help="layer-wise lr decay (e.g. 0.75): blocks further from the head learn more slowly")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="validate and keep a moving average of the weights (timm's ModelEmaV3), e.g. 0.99")
    parser.add_argument("--frozen", nargs="*", default=None, help="submodules to keep frozen, e.g. conv_stem bn1 blocks.0")
    parser.add_argument("--max-train-samples", type=positive_int, default=None, help="subsample training crops (smoke runs)")
    parser.add_argument("--num-workers", type=int, default=0)
    add_run_arguments(parser)
    return parser.parse_args(argv)


def load_split(dataset, split: str, limit: int | None = None, seed: int = 0):
    part = subsample(dataset, split, limit, seed)
    return list(part["image"]), list(part["label"])


def eval_batches(split, data_config: dict, batch_size: int = 128, num_workers: int = 0) -> list:
    """``(inputs, labels)`` batches of a split through the served preprocessing, decoded and transformed
    once: every evaluation below (our head, the ImageNet head, each runtime) reads the same list."""
    dataset = ImageLabelDataset(*split, eval_transform(data_config))
    return list(torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers))


def evaluate_open_set(task, result, dataset, train, val_batches, test_batches, probs, labels):
    """Refusal and keep rates per source of the ways to decide the reject label: the third class alone,
    with a confidence threshold on the known classes, the pretrained network's ImageNet head kept beside
    ours, either of those two refusing, and (``task.mahalanobis_keep`` set) our head refusing or the
    ImageNet head and a Mahalanobis distance to the training known-class features refusing together.

    Thresholds keep ``task.keep_known`` of the known-class images: of validation for our head's
    confidence; of training + validation for the ImageNet head, which never saw either (a tail quantile
    of 6x more images is less noisy); of validation for the distance, fitted on training. The ImageNet
    head's classes for our known labels are the task's ``imagenet_classes``. Returns the results and,
    when only the head was trained (every rule then reads the served features), the backstop that serves
    the last rule in the same forward pass; else ``None``.
    """
    names = task.label_names
    reject = names.index(task.reject_label)
    sources, held_out = dataset["test"]["source"], dataset["test"]["held_out"]
    val_probs, val_labels = predict_probs(result.model, val_batches)
    min_confidence = threshold_keeping(val_probs[val_labels != reject].max(axis=1), task.keep_known)

    imagenet = create_pretrained(result.model.pretrained_cfg["architecture"]).eval()
    train_known = [image for image, label in zip(*train) if label != reject]
    known_batches = eval_batches((train_known, [0] * len(train_known)), result.data_config)
    with torch.inference_mode():
        features = {name: torch.from_numpy(pooled_features(imagenet, (inputs for inputs, _ in batches)))
                    for name, batches in (("train", known_batches), ("val", val_batches), ("test", test_batches))}
    val_known = torch.from_numpy(val_labels != reject)
    classifier = imagenet.get_classifier()
    imagenet_head = ImageNetBackstop.fit(classifier.weight.detach(), classifier.bias.detach(), task.imagenet_classes,
                                         torch.cat([features["train"], features["val"][val_known]]), task.keep_known)
    backstops = {BACKSTOP_RULE: imagenet_head}
    if task.mahalanobis_keep is not None:
        distance = MahalanobisScore(features["train"].numpy())
        mahalanobis = distance.as_backstop(distance.max_distance(features["val"][val_known].numpy(),
                                                                 task.mahalanobis_keep))
        backstops[BOTH_RULE] = AnyKeeps([imagenet_head, mahalanobis])

    def keeps(backstop) -> np.ndarray:
        with torch.inference_mode():
            return backstop.keep(features["test"]).numpy()

    def measure(predicted: np.ndarray) -> dict:
        return open_set_metrics(labels, predicted, names, sources, held_out, task.reject_label)

    known_vs_known = probs[:, [i for i in range(len(names)) if i != reject]].argmax(axis=1)
    candidates = {
        "third class": measure(probs.argmax(axis=1)),
        f"third class + top score >= {min_confidence:.3f}": measure(
            with_threshold(probs, names, min_confidence, task.reject_label)),
        f"ImageNet head mass on our classes >= {imagenet_head.min_mass:.3f}": measure(
            np.where(keeps(imagenet_head), known_vs_known, reject)),
        **{rule: measure(np.where(keeps(backstop), probs.argmax(axis=1), reject)) for rule, backstop in backstops.items()},
    }
    for name, row in candidates.items():
        logger.info("open set, %s: known accuracy %.4f, kept %.4f, refused fit %.4f, held-out %.4f (min %.4f)",
                    name, row["known_accuracy"], row["kept"], row["refused_fit_sources"], row["refused_held_out"],
                    row["min_refused_held_out"])
    pretrained = imagenet.state_dict()
    head_only = all(torch.equal(value, pretrained[key]) for key, value in result.model.state_dict().items()
                    if not key.startswith("classifier"))
    served = list(backstops)[-1] if head_only else "third class"
    return {"served": served, "candidates": candidates}, backstops[served] if head_only else None


def compare_with_siblings(output_dir: Path, task_name: str, images, labels, predicted) -> list[dict]:
    """eval_results.json of every other model of this task beside ``output_dir``, each with a
    paired bootstrap of this model's balanced accuracy minus its own on the same test crops."""
    rows = []
    for path in sorted(output_dir.parent.glob(f"{task_name}*/eval_results.json")):
        if path.parent.resolve() == output_dir.resolve():
            continue
        other = ImageClassifier.from_pretrained(str(path.parent))
        versus = paired_bootstrap(labels, predicted, other.predict_images(images).argmax(axis=1))
        rows.append({**json.loads(path.read_text()), "versus": versus})
    return rows


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    task = get_task(args.task).on_dataset(args.dataset)
    recipe = task.recipe(args.recipe, args.arch).with_overrides(
        epochs=args.epochs, img_size=args.img_size, batch_size=args.batch_size, lr=args.lr,
        class_balance=args.class_balance, layer_decay=args.layer_decay, ema_decay=args.ema_decay,
        frozen=tuple(args.frozen) if args.frozen is not None else None,
    )
    recipe_name = args.arch if args.arch in ARCH_RECIPES else args.recipe
    if task.reject_label and not recipe.pretrained:  # found out before training, not after it
        raise SystemExit(f"{task.name}'s refusal rules read ImageNet features: {recipe.arch} has no pretrained weights")
    suffix = f"-{args.arch}" if args.arch else ""
    output_dir = output_folder(args, task, suffix)
    work_dir = staging_folder(output_dir)  # becomes output_dir once everything below is written
    logger.info("task %s, recipe %s: %s", task.name, recipe_name, recipe)

    dataset = load_splits(task.dataset)
    check_splits(dataset, task.dataset)
    check_label_names(dataset, task.label_names, task.dataset)
    train = load_split(dataset, "train", args.max_train_samples, args.seed)
    validation = load_split(dataset, "validation")
    test = load_split(dataset, "test")

    log = jsonl_logger(work_dir / "train_log.jsonl")
    start = time.time()
    result = fit(recipe, train, validation, task.label_names, args.seed, args.num_workers, args.device, log)
    train_minutes = (time.time() - start) / 60

    test_batches = eval_batches(test, result.data_config, num_workers=args.num_workers)
    probs, labels = predict_probs(result.model, test_batches)
    open_set, backstop = None, None
    if task.reject_label:
        val_batches = eval_batches(validation, result.data_config, num_workers=args.num_workers)
        open_set, backstop = evaluate_open_set(task, result, dataset, train, val_batches, test_batches, probs, labels)
    network = served_network(result.model, backstop, task.label_names, task.reject_label)
    if backstop is not None:  # measure the served network itself, not a reconstruction of its rule
        probs = predict_probs(network, test_batches)[0]
        served = open_set_metrics(labels, probs.argmax(axis=1), task.label_names, dataset["test"]["source"],
                                  dataset["test"]["held_out"], task.reject_label)
        assert served == open_set["candidates"][open_set["served"]], "the served network disagrees with its rule"
    metrics = classification_metrics(labels, probs, task.label_names)
    logger.info(
        "test: balanced accuracy %.4f, accuracy %.4f, ROC-AUC %.4f, ECE %.4f",
        metrics["balanced_accuracy"], metrics["accuracy"], metrics["roc_auc"], metrics["ece"],
    )
    save_confusion_matrix(metrics, task.label_names, work_dir / "confusion_matrix.png", f"{task.name} ({recipe_name})")
    runtimes, runtime = [], None
    if task.runtimes:
        # a seeded sample of every class: the training rows come in label order (the first 256 cats-dogs rows were all cats)
        rows = np.random.default_rng(args.seed).permutation(len(train[0]))[:CALIBRATION_IMAGES]
        sample = ([train[0][i] for i in rows], [train[1][i] for i in rows])
        calibration = [inputs for inputs, _ in eval_batches(sample, result.data_config, 32)]
        exportable = served_network(exportable_copy(result.model), backstop, task.label_names, task.reject_label)
        splits = {
            "validation": ([inputs for inputs, _ in eval_batches(validation, result.data_config)], validation[1]),
            "test": ([inputs for inputs, _ in test_batches], labels),
        }
        runtimes = compare_runtimes(exportable, work_dir, recipe.img_size, splits, calibration, task.runtimes)
        runtime = choose_runtime(runtimes)  # on validation
        logger.info("serving runtime: %s", runtime)
    summary = {
        "name": output_dir.name,
        "task": task.name,
        "dataset": task.dataset,
        "recipe": recipe_name,
        "arch": recipe.arch,
        "img_size": recipe.img_size,
        "split": task.split_description,
        "best_epoch": result.best_epoch,
        "train_minutes": round(train_minutes, 2),
        "metrics": metrics,
        "open_set": open_set,
        "runtimes": runtimes,
        "runtime": runtime,
    }
    (work_dir / "eval_results.json").write_text(json.dumps(summary, indent=2))

    repo_id = card_repo_id(args, output_dir)
    command = script_command("training/train_classifier.py", argv)
    comparison = [summary, *compare_with_siblings(output_dir, task.name, test[0], labels, probs.argmax(axis=1))]
    card = classifier_card(
        task, recipe, metrics, output_dir, repo_id,
        open_set=open_set,
        runtimes=runtimes,
        runtime=runtime,
        calibration_images=min(CALIBRATION_IMAGES, len(train[0])),
        comparison=comparison,
        has_baseline=any(row["arch"] == "seed_cnn" for row in comparison),
        needs_imagezoo=not recipe.pretrained,
        n_train=len(train[0]),
        n_validation=len(validation[0]),
        recipe_name=recipe_name,
        best_epoch=result.best_epoch,
        seed=args.seed,
        train_minutes=train_minutes,
        hardware=hardware(args.device),
        command=command,
    )
    model_config = {**task.model_config, **({"runtime": runtime} if runtime else {})}
    if backstop is not None:
        model_config["backstop"] = save_backstop(backstop, work_dir, task.reject_label, open_set["served"])
    save_model_folder(result.model, work_dir, list(task.label_names), result.data_config, card, model_config)
    replace_folder(work_dir, output_dir)
    logger.info("saved %s", output_dir)
    if args.push_to_hub:
        push_model_folder(output_dir, args.push_to_hub)
    return output_dir


if __name__ == "__main__":
    main()
