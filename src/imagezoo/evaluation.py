"""Classification metrics as plain JSON, plus a confusion-matrix picture."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: confidence vs accuracy gap, weighted over equal-width confidence bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_metrics(y_true: Sequence[int], probs: np.ndarray, label_names: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, per-class P/R/F1, ROC-AUC, log loss, ECE and the confusion matrix."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 only within ~1e-7
    labels = list(range(len(label_names)))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = np.unique(y_true)
    if len(present) < 2:
        roc_auc = float("nan")
    elif len(label_names) == 2:
        roc_auc = float(roc_auc_score(y_true, probs[:, 1]))
    else:
        roc_auc = float(roc_auc_score(y_true, probs, multi_class="ovr", labels=labels))
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "roc_auc": roc_auc,
        "log_loss": float(log_loss(y_true, np.clip(probs, 1e-7, 1), labels=labels)),
        "ece": expected_calibration_error(y_true, probs),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(label_names, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def save_confusion_matrix(metrics: dict, label_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Render ``metrics['confusion_matrix']`` (rows: true label) to a PNG."""
    fig, ax = plt.subplots(figsize=(3.2 + 0.5 * len(label_names), 3.0 + 0.5 * len(label_names)), dpi=120)
    ConfusionMatrixDisplay(np.array(metrics["confusion_matrix"]), display_labels=list(label_names)).plot(
        ax=ax, cmap="Blues", colorbar=False
    )
    ax.set_title(title or f"balanced accuracy {metrics['balanced_accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def paired_bootstrap(
    y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int], n_resamples: int = 2000, seed: int = 0
) -> dict:
    """Balanced accuracy of A minus B with a 95% percentile interval, resampling the same examples for both."""
    y_true, pred_a, pred_b = map(np.asarray, (y_true, pred_a, pred_b))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_resamples):
        index = rng.integers(0, len(y_true), len(y_true))
        if len(np.unique(y_true[index])) < 2:
            continue
        diffs.append(
            balanced_accuracy_score(y_true[index], pred_a[index]) - balanced_accuracy_score(y_true[index], pred_b[index])
        )
    if not diffs:
        raise ValueError(f"no resample of {len(y_true)} examples held two classes: too few for a bootstrap")
    low, high = np.percentile(diffs, [2.5, 97.5])
    difference = balanced_accuracy_score(y_true, pred_a) - balanced_accuracy_score(y_true, pred_b)
    return {"difference": float(difference), "ci95": [float(low), float(high)], "n_resamples": len(diffs)}
