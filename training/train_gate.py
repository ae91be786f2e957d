"""Fit, measure (leave-one-source-out), export and card a gate: accept one kind of image, refuse the rest.

    python training/train_gate.py --task brain-mri-gate     # about 6 minutes on 2 CPU cores

The gate is a linear probe on a frozen ImageNet backbone (:mod:`imagezoo.gate`): features are
extracted once, so refitting without each source in turn is cheap, and the card reports what
happens with every kind of image the gate never saw. The output folder is in timm's Hub format
(config.json, model.safetensors, README.md) plus eval_results.json; ``--push-to-hub ORG/NAME``
uploads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from timm.utils.model import unfreeze

from imagezoo.cards import classifier_card
from imagezoo.data import SPLITS, check_label_names, check_splits, load_splits
from imagezoo.evaluation import classification_metrics, save_confusion_matrix
from imagezoo.files import replace_folder, staging_folder
from imagezoo.gate import (
    CANDIDATES,
    MahalanobisScore,
    fit_probe,
    leave_one_source_out,
    pooled_features,
    probe_as_head,
    summarise,
)
from imagezoo.hub import push_model_folder, save_model_folder
from imagezoo.inference import ImageClassifier, eval_transform
from imagezoo.open_set import refusal_table, save_backstop
from imagezoo.scripts import (
    add_hub_arguments,
    add_recipe_argument,
    card_repo_id,
    hardware,
    output_folder,
    script_command,
)
from imagezoo.tasks import ACCEPT_KEY, GATE_KEY, TASKS, get_task
from imagezoo.training import ImageLabelDataset, build_model, eval_data_config

logger = logging.getLogger("train_gate")
GATE_TASKS = sorted(name for name, task in TASKS.items() if ACCEPT_KEY in task.model_config)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="brain-mri-gate", choices=GATE_TASKS)
    add_recipe_argument(parser)
    parser.add_argument("--dataset", default=None, help="dataset folder or Hub id (default: the task's)")
    parser.add_argument("--output-dir", default=None, help="default: models/<task>")
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--keep", type=float, default=0.999,
                        help="the Mahalanobis backstop's threshold keeps this share of the validation images it accepts")
    parser.add_argument("--seed", type=int, default=0)
    add_hub_arguments(parser)
    return parser.parse_args(argv)


def split_features(model, dataset, data_config: dict) -> tuple[dict, dict, dict]:
    """Features, label ids and sources of every split, each image through the served preprocessing once."""
    features, labels, sources = {}, {}, {}
    for split in SPLITS:
        part = dataset[split]
        loader = torch.utils.data.DataLoader(
            ImageLabelDataset(part["image"], part["label"], eval_transform(data_config)), batch_size=128)
        features[split] = pooled_features(model, (inputs for inputs, _ in loader))
        labels[split], sources[split] = np.asarray(part["label"]), np.asarray(part["source"])
        logger.info("%s: %d images", split, len(labels[split]))
    return features, labels, sources


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    task = get_task(args.task).on_dataset(args.dataset)
    recipe = task.recipe(args.recipe)
    accept_label, reject_label = task.model_config[ACCEPT_KEY], task.reject_label
    accept = task.label_names.index(accept_label)
    output_dir = output_folder(args, task)
    work_dir = staging_folder(output_dir)  # becomes output_dir once everything below is written
    start = time.time()

    dataset = load_splits(task.dataset)
    check_splits(dataset, task.dataset)
    check_label_names(dataset, task.label_names, task.dataset)
    model = build_model(recipe, len(task.label_names)).eval()
    data_config = eval_data_config(model, recipe.img_size, recipe.crop_mode, recipe.crop_pct)
    features, labels, sources = split_features(model, dataset, data_config)
    probe = fit_probe(features["train"], labels["train"], args.C, args.seed)
    probe_as_head(probe, model.get_classifier())

    # the backstop decision reads the left-out sources' training and validation images; the test images report
    folds = leave_one_source_out(features, labels, sources, accept, args.C, args.keep, args.seed,
                                 views={"decision": ("train", "validation"), "report": ("train", "validation", "test")})
    decision, loso = summarise(folds["decision"], CANDIDATES), folds["report"]
    candidates = summarise(loso, CANDIDATES)
    for name, row in candidates.items():
        logger.info("leave-one-source-out, %s: worst refusal %.4f (%s), pooled %.4f, worst test acceptance %.4f",
                    name, row["min_refused"], row["worst_source"], row["refused_pooled"], row["min_test_accepted"])
    # the backstop is served only when it raises the worst refusal of an unseen source
    with_backstop = decision[CANDIDATES[1]]["min_refused"] > decision[CANDIDATES[0]]["min_refused"]
    model_config = dict(task.model_config)
    if with_backstop:
        score = MahalanobisScore(features["train"][labels["train"] == accept])
        backstop = score.as_backstop(score.max_distance(features["validation"][labels["validation"] == accept], args.keep))
        model_config["backstop"] = save_backstop(
            backstop, work_dir, reject_label, f"squared Mahalanobis distance to the {accept_label} training "
            f"features; keeps {args.keep} of the validation {accept_label} images")

    # the served model, measured through the same class users load; plain BatchNorm again, as training.fit exports
    if recipe.frozen:
        unfreeze(model, list(recipe.frozen))
    save_model_folder(model, work_dir, list(task.label_names), data_config, None, model_config)
    served = ImageClassifier.from_pretrained(str(work_dir))
    probs = served.predict_images(dataset["test"]["image"])
    test_labels = labels["test"]
    metrics = classification_metrics(test_labels, probs, task.label_names)
    predicted = probs.argmax(axis=1)
    rule = probe.predict(features["test"]) == accept
    if with_backstop:
        rule &= score(features["test"]) <= backstop.max_distance
    # the served network must make the measured rule's decisions, not a reconstruction of them
    assert np.array_equal(predicted == accept, rule), "the served gate disagrees with its rule"
    negative = test_labels != accept
    gate = {
        "accepted_mri": float((predicted[~negative] == accept).mean()),
        "refused_test": float((predicted[negative] != accept).mean()),
        "per_source_test": refusal_table(predicted[negative] != accept, sources["test"][negative],
                                         np.zeros(negative.sum(), bool)),
        "loso": loso,
        "min_refused_loso": candidates[CANDIDATES[1] if with_backstop else CANDIDATES[0]]["min_refused"],
        "candidates": candidates,
        "served": CANDIDATES[1] if with_backstop else CANDIDATES[0],
    }
    logger.info("test: %s accepted %.4f, refused %.4f; balanced accuracy %.4f", accept_label, gate["accepted_mri"],
                gate["refused_test"], metrics["balanced_accuracy"])
    save_confusion_matrix(metrics, task.label_names, work_dir / "confusion_matrix.png", task.name)
    minutes = (time.time() - start) / 60
    summary = {"name": output_dir.name, "task": task.name, "dataset": task.dataset, "recipe": args.recipe,
               "arch": recipe.arch, "img_size": recipe.img_size, "split": task.split_description, "C": args.C,
               "train_minutes": round(minutes, 2), "metrics": metrics, "gate": gate}
    (work_dir / "eval_results.json").write_text(json.dumps(summary, indent=2))

    repo_id = card_repo_id(args, output_dir)
    card = classifier_card(
        task, recipe, metrics, output_dir, repo_id,
        accept_label=accept_label,
        reject_label=reject_label,
        gate=gate,
        guarded_repo_id=next(t.repo_id for t in TASKS.values() if t.model_config.get(GATE_KEY) == task.name),
        n_train=len(labels["train"]),
        C=args.C,
        keep=args.keep,
        seed=args.seed,
        minutes=minutes,
        hardware=hardware("cpu"),
        command=script_command("training/train_gate.py", argv),
    )
    card.save(work_dir / "README.md")
    replace_folder(work_dir, output_dir)
    logger.info("saved %s", output_dir)
    if args.push_to_hub:
        push_model_folder(output_dir, args.push_to_hub)
    return output_dir


if __name__ == "__main__":
    main()
