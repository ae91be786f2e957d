"""The DSB score against the Kaggle kernel everyone used, and on cases checkable by hand."""

import json

import numpy as np
import pytest
from skimage.segmentation import relabel_sequential

from imagezoo.segmentation_metrics import (
    average_precision,
    count_error,
    dice,
    dsb_score,
    foreground_iou,
    iou_matrix,
    object_scores,
    precision_at,
    segmentation_metrics,
)


def kaggle_reference(labels: np.ndarray, y_pred: np.ndarray) -> float:
    """The 2018 DSB kernel "Example metric implementation" (histogram2d of label pairs), as published.
    It assumes labels 0..N with no gap."""
    true_objects, pred_objects = len(np.unique(labels)), len(np.unique(y_pred))
    intersection = np.histogram2d(labels.flatten(), y_pred.flatten(), bins=(true_objects, pred_objects))[0]
    area_true = np.expand_dims(np.histogram(labels, bins=true_objects)[0], -1)
    area_pred = np.expand_dims(np.histogram(y_pred, bins=pred_objects)[0], 0)
    union = area_true + area_pred - intersection
    intersection, union = intersection[1:, 1:], union[1:, 1:]
    union[union == 0] = 1e-9
    iou = intersection / union
    prec = []
    for t in np.arange(0.5, 1.0, 0.05):
        matches = iou > t
        tp = np.sum(np.sum(matches, axis=1) == 1)
        fp = np.sum(np.sum(matches, axis=0) == 0)
        fn = np.sum(np.sum(matches, axis=1) == 0)
        prec.append(tp / (tp + fp + fn))
    return float(np.mean(prec))


def blobs(centres, radii, shape=(64, 64)):
    """Discs cut against each other like touching nuclei: each pixel goes to the nearest centre in reach."""
    if len(centres) == 0:
        return np.zeros(shape, dtype=np.int64)
    rows, cols = np.indices(shape)
    distance = np.hypot(rows[..., None] - centres[:, 0], cols[..., None] - centres[:, 1])
    nearest = distance.argmin(axis=-1)
    inside = np.take_along_axis(distance, nearest[..., None], -1)[..., 0] <= radii[nearest]
    return relabel_sequential(np.where(inside, nearest + 1, 0))[0]


def random_pair(rng):
    """True nuclei and a prediction that jitters, resizes, drops and invents some of them, by a
    random amount so that scores span 0 to 1."""
    n, extra, error = rng.integers(1, 12), rng.integers(0, 3), rng.uniform(0, 1)
    centres, radii = rng.uniform(0, 64, (n, 2)), rng.uniform(3, 10, n)
    kept = rng.uniform(size=n) > 0.2 * error
    pred_centres = np.concatenate(
        [centres[kept] + rng.normal(0, 2 * error, (kept.sum(), 2)), rng.uniform(0, 64, (extra, 2))]
    )
    pred_radii = np.concatenate(
        [radii[kept] * rng.uniform(1 - 0.2 * error, 1 + 0.2 * error, kept.sum()), rng.uniform(3, 10, extra)]
    )
    return blobs(centres, radii), blobs(pred_centres, pred_radii)


def test_dsb_score_agrees_with_the_kaggle_kernel_on_random_images():
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(100):
        true, pred = random_pair(rng)
        if true.max() == 0 or pred.max() == 0:
            continue  # the kernel divides 0 by 0 or bins nothing there; hand-checked below
        scores.append(dsb_score(true, pred))
        assert scores[-1] == pytest.approx(kaggle_reference(true, pred), abs=1e-12)
    assert len(scores) > 90 and min(scores) < 0.3 and max(scores) > 0.7  # the cases span the range


def square(shape=(40, 40), rows=slice(10, 30), cols=slice(10, 30), value=1):
    labels = np.zeros(shape, dtype=np.int32)
    labels[rows, cols] = value
    return labels


def test_perfect_match_scores_one_whatever_the_label_numbers():
    true = square() + square(rows=slice(32, 38), cols=slice(2, 8), value=2)
    assert dsb_score(true, true) == 1.0
    assert dsb_score(true, np.where(true > 0, 9 - true * 3, 0)) == 1.0  # labels 6 and 3


def test_empty_images():
    empty = np.zeros((40, 40), dtype=np.int32)
    assert dsb_score(empty, empty) == 1.0
    assert dsb_score(square(), empty) == dsb_score(empty, square()) == 0.0


def test_a_nucleus_split_in_halves_is_no_match_at_all():
    # IoU of each half is exactly 0.5, and a match needs IoU > 0.5: 0 TP, 2 FP, 1 FN
    halves = square(cols=slice(10, 20)) + square(cols=slice(20, 30), value=2)
    assert dsb_score(square(), halves) == 0.0
    uneven = square(cols=slice(10, 23)) + square(cols=slice(23, 30), value=2)  # IoU 0.65 and 0.35
    assert dsb_score(square(), uneven) == pytest.approx(3 * (1 / 2) / 10)  # 1 TP + 1 FP at 0.5, 0.55, 0.6


def test_a_missed_and_an_invented_nucleus_each_halve_the_score():
    two = square() + square(rows=slice(32, 38), cols=slice(2, 8), value=2)
    assert dsb_score(two, square()) == 0.5  # 1 TP, 1 FN at every threshold
    assert dsb_score(square(), two) == 0.5  # 1 TP, 1 FP
    assert count_error(two, square()) == -1 and count_error(square(), two) == 1


@pytest.mark.parametrize(
    "pred, expected",
    [
        (square(cols=slice(11, 31)), 0.9),  # shifted 1 px: IoU 19/21 = 0.905, matched up to 0.9
        (square(cols=slice(12, 32)), 0.7),  # IoU 18/22 = 0.818, up to 0.8
        (square(cols=slice(13, 33)), 0.5),  # IoU 17/23 = 0.739, up to 0.7
        (square(cols=slice(16, 36)), 0.1),  # IoU 14/26 = 0.538, at 0.5 only
        (square(cols=slice(10, 21)), 0.1),  # IoU exactly 0.55 is not above 0.55
        (square(cols=slice(10, 22)), 0.2),  # IoU exactly 0.6
        (square(cols=slice(10, 29)), 0.9),  # IoU 0.95
    ],
)
def test_iou_exactly_at_and_around_the_thresholds(pred, expected):
    assert dsb_score(square(), pred) == pytest.approx(expected)
    assert kaggle_reference(square(), pred) == pytest.approx(expected)


def test_precision_at_one_threshold_and_its_guard():
    pred = square(cols=slice(16, 36))  # IoU 0.538
    assert precision_at(square(), pred) == 1.0
    assert precision_at(square(), pred, 0.6) == 0.0  # 1 FP + 1 FN
    with pytest.raises(ValueError, match="0.5"):
        precision_at(square(), pred, 0.3)  # below 0.5 one object could match two


def test_iou_matrix_rows_true_columns_pred_with_gaps_in_the_labels():
    true = square(cols=slice(10, 20), value=4) + square(cols=slice(20, 30), value=7)
    pred = square(cols=slice(10, 30), value=2)
    assert iou_matrix(true, pred) == pytest.approx(np.array([[0.5], [0.5]]))
    assert iou_matrix(true, np.zeros_like(pred)).shape == (2, 0)


def test_foreground_iou_and_dice_ignore_instances():
    true = square(cols=slice(10, 20)) + square(cols=slice(20, 30), value=2)
    pred = square(cols=slice(15, 35))  # one merged object, half of it outside
    assert foreground_iou(true, pred) == pytest.approx(300 / 500)
    assert dice(true, pred) == pytest.approx(2 * 300 / 800)
    empty = np.zeros_like(true)
    assert foreground_iou(empty, empty) == dice(empty, empty) == 1.0


def test_segmentation_metrics_means_per_image_and_pools_pixels():
    small, big = square(shape=(10, 10), rows=slice(0, 2), cols=slice(0, 2)), square(shape=(100, 100))
    two = square() + square(rows=slice(32, 38), cols=slice(2, 8), value=2)
    pairs = [(small, np.zeros_like(small)), (big, big), (two, square())]
    result = segmentation_metrics(pairs, groups=["a", "b", "b"])
    overall = result["overall"]
    assert overall["n_images"] == 3
    assert overall["dsb_score"] == pytest.approx((0 + 1 + 0.5) / 3)
    assert overall["precision_at_0.5"] == pytest.approx((0 + 1 + 0.5) / 3)
    assert overall["foreground_iou"] == pytest.approx((0 + 1 + 400 / 436) / 3)
    assert overall["foreground_iou_pooled"] == pytest.approx((400 + 400) / (4 + 400 + 436))
    assert overall["count_mae"] == pytest.approx(2 / 3) and overall["count_bias"] == pytest.approx(-2 / 3)
    assert set(result["by_group"]) == {"a", "b"}
    assert (
        result["by_group"]["b"]["dsb_score"] == pytest.approx(0.75)
        and result["by_group"]["a"]["n_images"] == 1
    )
    assert set(result["by_group"]["a"]) == set(overall)
    json.dumps(result)
    assert segmentation_metrics(pairs)["by_group"] == {}
    with pytest.raises(ValueError):
        segmentation_metrics(pairs, groups=["a"])


def test_average_precision_checked_by_hand():
    # two nuclei; three objects ranked: a match, a false one, a match
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), n_true=2)
    # precision made non-increasing: 1, 2/3, 2/3 at recall 0.5, 0.5, 1; 51 recall points at 1, 50 at 2/3
    assert ap == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    assert average_precision(np.array([0.9]), np.array([True]), n_true=4) == pytest.approx(26 / 101)  # recall 0.25
    assert average_precision(np.array([]), np.array([], dtype=bool), n_true=0) == 1.0
    assert average_precision(np.array([0.5]), np.array([False]), n_true=0) == 0.0


def coco_ap50(pairs, scores) -> float:
    """pycocotools' COCOeval (segm, one category, IoU 0.5, every object kept), the reference AP."""
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rles(labels):
        return [coco_mask.encode(np.asfortranarray((labels == k).astype(np.uint8))) for k in np.unique(labels[labels > 0])]

    truth, found = COCO(), []
    truth.dataset = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "nucleus"}]}
    for image_id, ((true, pred), image_scores) in enumerate(zip(pairs, scores)):
        truth.dataset["images"].append({"id": image_id, "height": true.shape[0], "width": true.shape[1]})
        for rle in rles(true):
            truth.dataset["annotations"].append({
                "id": len(truth.dataset["annotations"]) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "segmentation": rle, "area": float(coco_mask.area(rle)), "bbox": list(coco_mask.toBbox(rle)),
            })
        found += [{"image_id": image_id, "category_id": 1, "segmentation": rle, "score": float(score)}
                  for rle, score in zip(rles(pred), image_scores)]
    truth.createIndex()
    evaluation = COCOeval(truth, truth.loadRes(found), "segm")
    evaluation.params.iouThrs, evaluation.params.maxDets = np.array([0.5]), [10_000]
    evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0, 1e10]], ["all"]
    evaluation.evaluate()
    evaluation.accumulate()
    return float(evaluation.eval["precision"][0, :, 0, 0, 0].mean())


def random_discs(rng, n, shape=(64, 64)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k in range(1, n + 1):
        y, x, r = rng.integers(6, shape[0] - 6), rng.integers(6, shape[1] - 6), rng.integers(3, 7)
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = k
    return relabel_sequential(labels)[0]


def test_average_precision_agrees_with_pycocotools():
    """Missed, shifted, split and invented nuclei over several images, objects ranked across images."""
    rng = np.random.default_rng(0)
    pairs, scores = [], []
    for _ in range(6):
        true = random_discs(rng, rng.integers(0, 7))
        pred = np.roll(true, rng.integers(-2, 3), axis=1) * (rng.random() > 0.2)  # shifted, sometimes all missed
        invented = random_discs(rng, 2)
        pred = relabel_sequential(np.where((pred == 0) & (invented > 0), invented + pred.max(), pred))[0]
        probability = rng.random(true.shape)
        pairs.append((true, pred))
        scores.append(object_scores(pred, probability))
    ours = segmentation_metrics(pairs, scores=scores)["overall"]["ap_0.5"]
    assert ours == pytest.approx(coco_ap50(pairs, scores), abs=1e-9)
    assert 0.0 < ours < 1.0


def test_object_scores_are_each_objects_mean_probability_in_label_order():
    pred = square(cols=slice(10, 20), value=5) + square(cols=slice(20, 30), value=2)
    probability = np.zeros(pred.shape)
    probability[pred == 5], probability[pred == 2] = 0.9, 0.4
    np.testing.assert_allclose(object_scores(pred, probability), [0.4, 0.9])
    with pytest.raises(ValueError, match="1 scores for 2 objects"):
        segmentation_metrics([(pred, pred)], scores=[np.array([0.5])])
