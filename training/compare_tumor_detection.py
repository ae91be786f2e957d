"""Tumour yes/no: a separate detector against ``1 - p(notumor)`` of the type model, on the yes/no splits.

    python training/compare_tumor_detection.py      # after training brain-tumor-type and brain-tumor-detect

Both models are scored on the de-duplicated yes/no validation and test splits (their near-duplicate
groups are in the same split of the type set too, so the type model never trained on them). The
winner is the higher validation balanced accuracy at 0.5, then ROC-AUC; on a tie the type model,
which serves type and yes/no in one pass. The test split only reports. The result goes to
``tumor_detection.json`` and a section of both model cards.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from imagezoo.data import load_splits
from imagezoo.evaluation import paired_bootstrap
from imagezoo.inference import ImageClassifier
from imagezoo.scripts import script_command
from imagezoo.tasks import NO_TUMOUR, TUMOUR

logger = logging.getLogger("compare_tumor_detection")
#: both models call a tumour at this probability (the serving threshold)
THRESHOLD = 0.5
SECTION = re.compile(r"\n<!-- tumor-detection -->.*<!-- /tumor-detection -->\n", re.S)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--type-model", default="models/brain-tumor-type")
    parser.add_argument("--detect-model", default="models/brain-tumor-detect")
    parser.add_argument("--dataset", default="data/brain-tumor-detect", help="the yes/no dataset (folder or Hub id)")
    return parser.parse_args(argv)


def scores(y_true: np.ndarray, p_tumour: np.ndarray) -> dict:
    predicted = (p_tumour >= THRESHOLD).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y_true, p_tumour)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, predicted)),
        "accuracy": float((predicted == y_true).mean()),
        "sensitivity": float(predicted[y_true == 1].mean()),
        "specificity": float(1 - predicted[y_true == 0].mean()),
    }


def section(result: dict) -> str:
    validation = result["validation"]
    chosen_by = ", ".join(f"{name} {row['balanced_accuracy']:.4f}" for name, row in validation["models"].items())
    rows = "\n".join(
        f"| {name}{' (**shipped**)' if name == result['shipped'] else ''} | {r['roc_auc']:.4f} | "
        f"{r['balanced_accuracy']:.4f} | {r['accuracy']:.4f} | {r['sensitivity']:.4f} | {r['specificity']:.4f} |"
        for name, r in result["models"].items()
    )
    low, high = result["versus"]["ci95"]
    return (
        "\n<!-- tumor-detection -->\n## Tumour yes/no: a separate detector or the type model?\n\n"
        f"Both on the de-duplicated yes/no test split ({result['n']} slices, {result['n_tumour']} with a tumour; "
        f"none of their near-duplicate groups was trained on by either model). Threshold {THRESHOLD}.\n\n"
        "| model | ROC-AUC | balanced accuracy | accuracy | sensitivity | specificity |\n|---|---|---|---|---|---|\n"
        f"{rows}\n\nShipped: **{result['shipped']}** ({result['reason']} on the {validation['n']} validation "
        f"slices: {chosen_by}). Test balanced accuracy of the type model minus "
        f"the detector: {result['versus']['difference']:+.4f} (95% paired bootstrap interval {low:+.4f} to "
        f"{high:+.4f}); with {result['n']} test slices, differences of a few points are within noise.\n\n"
        f"Reproduce: `{result['command']}`\n<!-- /tumor-detection -->\n"
    )


def probabilities(type_model: ImageClassifier, detector: ImageClassifier, split) -> tuple[np.ndarray, ...]:
    """Truth (1: tumour), the type model's ``1 - p(notumor)`` and the detector's ``p(tumor)`` on ``split``."""
    y_true = (np.asarray(split["label"]) == split.features["label"].names.index(TUMOUR)).astype(int)
    p_type = 1 - type_model.predict_images(split["image"])[:, type_model.label_names.index(NO_TUMOUR)]
    p_detect = detector.predict_images(split["image"])[:, detector.label_names.index(TUMOUR)]
    return y_true, p_type, p_detect


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset = load_splits(args.dataset)
    type_model = ImageClassifier.from_pretrained(args.type_model)
    detector = ImageClassifier.from_pretrained(args.detect_model)
    names = ("type model, 1 - p(notumor)", "separate detector, p(tumor)")
    y_val, *p_val = probabilities(type_model, detector, dataset["validation"])
    chosen_on = dict(zip(names, (scores(y_val, p) for p in p_val)))
    y_true, p_type, p_detect = probabilities(type_model, detector, dataset["test"])
    models = dict(zip(names, (scores(y_true, p) for p in (p_type, p_detect))))
    key = ("balanced_accuracy", "roc_auc")
    type_name, detect_name = names
    detector_wins = tuple(chosen_on[detect_name][k] for k in key) > tuple(chosen_on[type_name][k] for k in key)
    result = {
        "n": int(len(y_true)),
        "n_tumour": int(y_true.sum()),
        "models": models,
        "validation": {"n": int(len(y_val)), "n_tumour": int(y_val.sum()), "models": chosen_on},
        "shipped": detect_name if detector_wins else type_name,
        "reason": "higher balanced accuracy, then ROC-AUC" + ("" if detector_wins else "; a tie goes to the type model"),
        "versus": paired_bootstrap(y_true, (p_type >= THRESHOLD).astype(int), (p_detect >= THRESHOLD).astype(int)),
        "command": script_command("training/compare_tumor_detection.py", argv),
    }
    for name, row in models.items():
        logger.info("%s: %s", name, ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
    logger.info("shipped: %s", result["shipped"])
    for folder in (Path(args.type_model), Path(args.detect_model)):
        (folder / "tumor_detection.json").write_text(json.dumps(result, indent=2))
        card = folder / "README.md"
        card.write_text(SECTION.sub("", card.read_text()) + section(result))
    return result


if __name__ == "__main__":
    main()
