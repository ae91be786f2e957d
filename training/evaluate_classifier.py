"""Evaluate exported classifiers on one split and compare them pairwise.

    python training/evaluate_classifier.py --model models/ldc-live-dead --compare models/ldc-live-dead-seed-cnn

Prints the metrics of every model and, for each ``--compare`` model, the difference in
balanced accuracy with a paired bootstrap 95% interval over the same examples; ``--out``
saves all of it as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imagezoo.data import check_label_names, load_splits
from imagezoo.evaluation import classification_metrics, paired_bootstrap
from imagezoo.inference import ImageClassifier
from imagezoo.tasks import get_task


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder or hf-hub: id")
    parser.add_argument("--compare", nargs="*", default=[], help="other models to compare with")
    parser.add_argument("--dataset", default=get_task("ldc-live-dead").dataset)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    dataset = load_splits(args.dataset)
    split = dataset[args.split]
    images, labels = list(split["image"]), list(split["label"])
    results, predictions = {}, {}
    for model_id in [args.model, *args.compare]:
        classifier = ImageClassifier.from_pretrained(model_id)
        check_label_names(dataset, classifier.label_names, f"{args.dataset} (for {model_id})")  # same classes, same order
        probs = classifier.predict_images(images)
        results[model_id] = classification_metrics(labels, probs, classifier.label_names)
        predictions[model_id] = probs.argmax(axis=1)
        print(f"{model_id}: balanced accuracy {results[model_id]['balanced_accuracy']:.4f}, "
              f"accuracy {results[model_id]['accuracy']:.4f}, ROC-AUC {results[model_id]['roc_auc']:.4f}")
    comparisons = {}
    for other in args.compare:
        comparisons[other] = paired_bootstrap(labels, predictions[args.model], predictions[other])
        c = comparisons[other]
        print(f"{args.model} - {other}: {c['difference']:+.4f} (95% CI {c['ci95'][0]:+.4f} to {c['ci95'][1]:+.4f})")
    report = {"dataset": args.dataset, "split": args.split, "metrics": results, "comparisons": comparisons}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
