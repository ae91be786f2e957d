"""Instance-segmentation metrics on label images (0 background, k object k), as plain JSON.

The headline is the Kaggle 2018 Data Science Bowl score, so our nuclei numbers compare with
the competition's; foreground IoU, Dice and count errors say *how* a model is wrong (merged
nuclei cost objects, not foreground); with each object's confidence, COCO's average precision at
IoU 0.5 ranks the objects of all images together.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential

DSB_THRESHOLDS = np.arange(0.5, 1.0, 0.05)


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true (rows) with every predicted (columns) object, in increasing label order.

    One ``np.bincount`` of (true, pred) label pairs gives all intersections at once.
    """
    true = relabel_sequential(np.asarray(true))[0].ravel()
    pred = relabel_sequential(np.asarray(pred))[0].ravel()
    n_true, n_pred = int(true.max(initial=0)) + 1, int(pred.max(initial=0)) + 1
    pairs = true.astype(np.int64) * n_pred + pred
    intersection = np.bincount(pairs, minlength=n_true * n_pred).reshape(n_true, n_pred)
    union = intersection.sum(axis=1, keepdims=True) + intersection.sum(axis=0, keepdims=True) - intersection
    return intersection[1:, 1:] / union[1:, 1:]


def counts_at(iou: np.ndarray, thresholds: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TP, FP, FN) per threshold; a pair matches when its IoU exceeds the threshold."""
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if (thresholds < 0.5).any():
        raise ValueError("matches are one-to-one only for IoU thresholds >= 0.5")
    matches = iou[None] > thresholds[:, None, None]
    tp = matches.sum(axis=(1, 2))
    fp = iou.shape[1] - matches.any(axis=1).sum(axis=1)
    fn = iou.shape[0] - matches.any(axis=2).sum(axis=1)
    return tp, fp, fn


def precision_at_iou(iou: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """TP / (TP + FP + FN) per threshold from an IoU matrix; 1.0 when both images are empty."""
    tp, fp, fn = counts_at(iou, thresholds)
    total = tp + fp + fn
    return np.where(total == 0, 1.0, tp / np.maximum(total, 1))


def dsb_score(true: np.ndarray, pred: np.ndarray, thresholds: np.ndarray = DSB_THRESHOLDS) -> float:
    """The Kaggle 2018 DSB score of one image: TP / (TP + FP + FN) averaged over IoU thresholds
    0.5, 0.55, ..., 0.95. Both empty is 1.0, one empty 0.0."""
    return float(precision_at_iou(iou_matrix(true, pred), thresholds).mean())


def precision_at(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> float:
    """TP / (TP + FP + FN) at one IoU threshold: Kaggle's "precision" (often called AP) at IoU 0.5."""
    return float(precision_at_iou(iou_matrix(true, pred), threshold)[0])


def object_scores(pred: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """Each predicted object's confidence, in increasing label order (as :func:`iou_matrix`'s columns):
    the mean of ``probability`` over its pixels."""
    ids = np.unique(pred[pred > 0])
    return np.asarray(ndi.mean(probability, pred, ids), dtype=float).reshape(-1)


#: COCO's recall points for average precision
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def average_precision(scores: np.ndarray, is_match: np.ndarray, n_true: int) -> float:
    """COCO's average precision of detections pooled over images: ranked by score, precision made
    non-increasing in recall, read at 101 recall points (0 beyond the last recall reached); 1.0 when
    there is nothing to find and nothing was found."""
    if n_true == 0:
        return 1.0 if len(scores) == 0 else 0.0
    order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")  # ties: COCO's stable order
    tp = np.cumsum(np.asarray(is_match, dtype=bool)[order])
    recall = tp / n_true
    precision = np.maximum.accumulate((tp / np.arange(1, len(tp) + 1))[::-1])[::-1]
    reached = np.searchsorted(recall, RECALL_POINTS, side="left")  # len(recall): never reached, precision 0
    return float(np.append(precision, 0.0)[reached].mean())


def foreground_overlap(true: np.ndarray, pred: np.ndarray) -> tuple[int, int, int]:
    """(intersection, union, |true| + |pred|) of the binarised masks: what IoU, Dice and pooling share."""
    true, pred = np.asarray(true) > 0, np.asarray(pred) > 0
    intersection = int(np.count_nonzero(true & pred))
    total = int(np.count_nonzero(true)) + int(np.count_nonzero(pred))
    return intersection, total - intersection, total


def foreground_iou(true: np.ndarray, pred: np.ndarray) -> float:
    """IoU of the binarised masks (semantic segmentation quality; blind to merges); 1.0 if both empty."""
    intersection, union, _ = foreground_overlap(true, pred)
    return intersection / union if union else 1.0


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Dice (F1) of the binarised masks; 1.0 if both empty."""
    intersection, _, total = foreground_overlap(true, pred)
    return 2 * intersection / total if total else 1.0


def count_error(true: np.ndarray, pred: np.ndarray) -> int:
    """Predicted minus true number of objects: negative when nuclei are merged or missed."""
    return len(np.unique(pred[pred > 0])) - len(np.unique(true[true > 0]))


def summarise(rows: list[dict]) -> dict:
    """Means over images, plus the foreground IoU pooled over all their pixels (and, with object
    scores, the average precision of all their objects ranked together)."""
    column = {key: np.array([row[key] for row in rows], dtype=float) for key in rows[0] if key != "detections"}
    union = column["union"].sum()
    result = {
        "dsb_score": float(column["dsb_score"].mean()),
        "precision_at_0.5": float(column["precision_at_0.5"].mean()),
        "foreground_iou": float(column["foreground_iou"].mean()),
        "foreground_iou_pooled": float(column["intersection"].sum() / union) if union else 1.0,
        "dice": float(column["dice"].mean()),
        "count_mae": float(np.abs(column["count_error"]).mean()),
        "count_bias": float(column["count_error"].mean()),
        "n_images": len(rows),
    }
    if "detections" in rows[0]:
        scores, matched = (np.concatenate([row["detections"][k] for row in rows]) for k in (0, 1))
        result["ap_0.5"] = average_precision(scores, matched, int(column["n_true"].sum()))
    return result


def segmentation_metrics(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    groups: Sequence[str] | None = None,
    scores: Sequence[np.ndarray] | None = None,
) -> dict:
    """Per-image metrics of (true, pred) label images averaged overall and per group (e.g. image type).

    Every number is a mean over images (each image weighs the same, as in the Kaggle score),
    except ``foreground_iou_pooled``: intersection over union of all images' pixels together,
    where large images weigh more, and ``ap_0.5`` (given ``scores``, each image's
    :func:`object_scores`): COCO's average precision at IoU 0.5 over all objects ranked together.
    ``count_mae``/``count_bias`` are the mean absolute and signed ``count_error`` (predicted minus
    true objects).
    """
    if groups is not None and len(groups) != len(pairs):
        raise ValueError(f"{len(groups)} groups for {len(pairs)} images")
    if scores is not None and len(scores) != len(pairs):
        raise ValueError(f"{len(scores)} score arrays for {len(pairs)} images")
    if not pairs:
        raise ValueError("no images to score")
    rows = []
    for n, (true, pred) in enumerate(pairs):
        intersection, union, _ = foreground_overlap(true, pred)
        iou = iou_matrix(true, pred)
        rows.append(
            {
                "dsb_score": float(precision_at_iou(iou, DSB_THRESHOLDS).mean()),
                "precision_at_0.5": float(precision_at_iou(iou, 0.5)[0]),
                "foreground_iou": foreground_iou(true, pred),
                "dice": dice(true, pred),
                "count_error": iou.shape[1] - iou.shape[0],
                "n_true": iou.shape[0],
                "intersection": intersection,
                "union": union,
            }
        )
        if scores is not None:
            if len(scores[n]) != iou.shape[1]:
                raise ValueError(f"image {n}: {len(scores[n])} scores for {iou.shape[1]} objects")
            rows[-1]["detections"] = (np.asarray(scores[n], dtype=float), (iou > 0.5).any(axis=0))
    by_group = defaultdict(list)
    for group, row in zip([] if groups is None else groups, rows):
        by_group[group].append(row)
    return {
        "overall": summarise(rows),
        "by_group": {group: summarise(found) for group, found in sorted(by_group.items())},
    }
