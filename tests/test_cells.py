"""Cells on whole slides: ellipse targets, cells from probabilities, the count matching and viability metrics."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label

from imagezoo.cells import (
    box_targets,
    call_class,
    channel_probabilities,
    f1,
    find_cells,
    image_counts,
    make_cells,
    match_centres,
    outline,
    viability_metrics,
)
from imagezoo.viability import viability_percent

LABELS = ("dead", "live")


def test_box_targets_fill_the_inscribed_ellipse_in_the_box_label_channel():
    targets = box_targets((100, 120), [[10, 20, 30, 40], [60, 50, 100, 70]], [1, 0], 2)
    assert targets.shape == (2, 100, 120) and targets.dtype == np.uint8
    live, dead = targets[1], targets[0]
    rows, cols = np.nonzero(live)
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (10, 20, 30, 40)
    assert live.sum() == pytest.approx(np.pi * 10 * 10, rel=0.1)  # an ellipse, not the box
    rows, cols = np.nonzero(dead)
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (60, 50, 100, 70)
    assert not (live & dead).any()
    assert box_targets((10, 10), [], [], 2).sum() == 0


def test_centre_targets_are_one_shrunken_ellipse_per_box_in_a_last_channel():
    boxes, labels = [[10, 20, 30, 40], [28, 20, 48, 40], [80, 60, 82, 62]], [1, 0, 1]
    targets = box_targets((100, 120), boxes, labels, 2, centre_scale=0.4)
    assert targets.shape == (3, 100, 120)
    assert np.array_equal(targets[:2], box_targets((100, 120), boxes, labels, 2))  # class channels unchanged
    centres = label(targets[2])
    assert centres.max() == 3  # the two overlapping cells get separate centres; the 2 px cell gets one too
    assert (centres == centres[30, 20]).sum() == pytest.approx(np.pi * 4 * 4, rel=0.25)  # radii 0.4 x 10 px
    assert not (targets[2] & ~targets[:2].max(axis=0).astype(bool)).any()  # centres lie inside their cells


def test_a_watershed_from_centres_splits_cells_the_body_channel_merges():
    targets = box_targets((80, 80), [[10, 20, 40, 50], [18, 20, 48, 50]], [1, 1], 2, centre_scale=0.2)
    probs = targets[:2] * 0.9
    centre = targets[2] * 0.8
    assert find_cells(probs, "watershed-distance", threshold=0.5, min_size=10).max() == 1  # too much overlap
    cells = find_cells(probs, "watershed-centres", threshold=0.5, min_size=10, centre=centre)
    assert cells.max() == 2
    assert cells[35, 14] != cells[35, 44] and cells[35, 14] > 0 and cells[35, 44] > 0
    with pytest.raises(ValueError, match="needs \\(body, centre\\)"):
        find_cells(probs, "watershed-centres", threshold=0.5, min_size=10)


def two_class_probabilities() -> np.ndarray:
    """A live blob, a dead blob and two touching live blobs on a 120 px slide."""
    probs = np.zeros((2, 120, 120), dtype=np.float32)
    targets = box_targets((120, 120), [[10, 10, 30, 30], [60, 10, 80, 30], [20, 70, 40, 90], [38, 70, 58, 90]],
                          [1, 0, 1, 1], 2)
    probs += targets * 0.9
    probs[0][targets[1] > 0] = 0.2  # the dead channel is weakly on over live cells
    return probs


def test_cells_are_found_split_and_classified_by_their_stronger_channel():
    probs = two_class_probabilities()
    labels = find_cells(probs, "watershed-distance", threshold=0.5, min_size=10)
    assert labels.max() == 4  # the touching pair is split
    classes = channel_probabilities(probs, labels)
    assert classes.shape == (4, 2) and np.allclose(classes.sum(axis=1), 1)
    cells = make_cells(labels, classes)
    dead = [cell for cell in cells if np.argmax(cell.probabilities) == 0]
    assert len(dead) == 1 and dead[0].centre == pytest.approx((69.5, 19.5), abs=0.6)
    assert dead[0].box == (60, 10, 80, 30)
    assert find_cells(probs, "components", threshold=0.5, min_size=10).max() == 3  # merges the pair
    assert channel_probabilities(probs, np.zeros((120, 120), dtype=np.int32)).shape == (0, 2)


def test_a_held_back_class_is_called_only_at_its_minimum_probability():
    assert call_class((0.55, 0.45), LABELS) == 0  # the arg-max
    assert call_class((0.55, 0.45), LABELS, ("dead", 0.6)) == 1  # dead held back: the next most probable
    assert call_class((0.6, 0.4), LABELS, ("dead", 0.6)) == 0  # reaches it
    assert call_class((0.3, 0.7), LABELS, ("dead", 0.6)) == 1  # the rule never promotes a class
    assert call_class((0.2, 0.8), LABELS, ("live", 0.9)) == 0
    with pytest.raises(ValueError):
        call_class((0.5, 0.5), LABELS, ("necrotic", 0.5))


def test_outline_colours_live_green_and_dead_red():
    probs = two_class_probabilities()
    labels = find_cells(probs, "watershed-distance", threshold=0.5, min_size=10)
    cells = make_cells(labels, channel_probabilities(probs, labels))
    classes = {cell.label_id: LABELS[int(np.argmax(cell.probabilities))] for cell in cells}
    picture = outline(np.zeros((120, 120, 3), dtype=np.uint8), labels, classes)
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert colours == {(0, 0, 0), (0, 200, 0), (230, 0, 0)}


def test_outline_draws_each_cells_rim_outside_it_and_only_for_the_cells_named():
    labels = np.zeros((20, 40), dtype=np.int32)
    labels[5:10, 5:10], labels[5:10, 25:30] = 1, 2
    picture = outline(np.zeros((20, 40, 3), dtype=np.uint8), labels, {1: "dead"})
    red = (picture == (230, 0, 0)).all(axis=2)
    ring = np.zeros_like(red)
    ring[4:11, 4:11] = True
    ring[5:10, 5:10] = False
    ring[[4, 4, 10, 10], [4, 10, 4, 10]] = False  # the rim of 4-neighbours, corners excluded
    assert (red == ring).all()  # cell 2 is not named: not drawn
    assert (picture[labels > 0] == 0).all()  # the cells themselves stay visible


def test_count_f1_of_an_absent_class_nobody_predicted_is_perfect():
    assert f1(0, 0, 0)["f1"] == 1.0
    assert f1(0, 3, 0)["f1"] == 0.0 and f1(0, 0, 3)["f1"] == 0.0 and f1(0, 2, 2)["f1"] == 0.0
    assert f1(1, 2, 2)["f1"] == pytest.approx(0.5)


def test_a_counter_refuses_the_nuclei_border_watershed():
    with pytest.raises(ValueError, match="components.*watershed-distance.*watershed-centres"):
        find_cells(two_class_probabilities(), "watershed-border", threshold=0.5, min_size=10)


def test_match_centres_is_one_to_one_and_needs_the_centre_inside_the_box():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], dtype=float)
    assert match_centres(np.array([[5, 5], [6, 6]], dtype=float), boxes) == 1  # two centres, one box
    assert match_centres(np.array([[5, 5], [25, 5], [50, 50]], dtype=float), boxes) == 2
    assert match_centres(np.array([[15, 5]], dtype=float), boxes) == 0
    # the assignment is optimal: a greedy choice of the first centre's nearest box would lose one
    wide = np.array([[0, 0, 20, 10], [8, 0, 12, 10]], dtype=float)
    assert match_centres(np.array([[10, 5], [15, 5]], dtype=float), wide) == 2
    assert match_centres(np.zeros((0, 2)), boxes) == 0


def test_viability_metrics_on_hand_checked_slides():
    boxes = [[[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], [], [[0, 0, 10, 10]]]
    labels = [[1, 1, 1, 0], [], [0]]
    predictions = [
        [(5, 5, 1), (25, 5, 1), (45, 5, 0), (65, 5, 0)],  # one live cell called dead
        [(50, 50, 1)],  # a spurious cell on the empty slide
        [],  # the only cell missed
    ]
    metrics = viability_metrics(predictions, boxes, labels, LABELS)
    overall = metrics["overall"]
    assert overall["live"]["tp"] == 2 and overall["live"]["predicted"] == 3 and overall["live"]["true"] == 3
    assert overall["live"]["f1"] == pytest.approx(2 / 3)
    assert overall["dead"]["tp"] == 1 and overall["dead"]["predicted"] == 2 and overall["dead"]["true"] == 2
    assert overall["dead"]["f1"] == pytest.approx(0.5)
    assert overall["cells"]["tp"] == 4 and overall["cells"]["predicted"] == 5 and overall["cells"]["true"] == 5
    assert overall["min_class_f1"] == pytest.approx(0.5)
    # viability 0.5 vs 0.75 on slide 1; slide 3 found nothing: error 1; slide 2 has no cell but one
    # was found: error 1 over every slide, left out over the slides with cells
    assert overall["viability_mae"] == pytest.approx((0.25 + 1.0 + 1.0) / 3)
    assert overall["viability_mae_with_cells"] == pytest.approx((0.25 + 1.0) / 2)
    assert overall["n_images_with_cells"] == 2
    assert overall["live"]["count_mae"] == pytest.approx((1 + 1 + 0) / 3)
    without = metrics["without_cells"]
    assert without["n_images"] == 1 and without["fraction_with_no_cell_found"] == 0.0
    assert without["cells_found_mean"] == 1.0 and without["viability_mae"] == 1.0
    assert without["live"]["count_mae"] == 1.0 and without["live"]["f1"] == 0.0 and without["dead"]["f1"] == 1.0
    assert without["viability_mae_with_cells"] is None
    assert metrics["with_cells"]["n_images"] == 2
    assert metrics["with_cells"]["viability_mae"] == overall["viability_mae_with_cells"]


def test_a_slide_without_cells_where_none_is_found_scores_no_error():
    metrics = viability_metrics([[], [(5, 5, 1)]], [[], [[0, 0, 10, 10]]], [[], [1]], LABELS)
    assert metrics["overall"]["viability_mae"] == 0.0 and metrics["overall"]["min_class_f1"] == 1.0
    without = metrics["without_cells"]
    assert without["viability_mae"] == 0.0 and without["fraction_with_no_cell_found"] == 1.0


def test_viability_reads_100_or_0_percent_only_when_every_cell_has_one_class():
    assert viability_percent(3, 0) == "100%" and viability_percent(0, 3) == "0%"
    assert viability_percent(1999, 1) == ">99.9%" and viability_percent(1, 2999) == "<0.1%"
    assert viability_percent(2, 1) == "66.7%" and viability_percent(999, 1) == "99.9%"
    with pytest.raises(ValueError, match="undefined"):
        viability_percent(0, 0)


def test_image_counts_of_a_perfect_prediction():
    counts = image_counts([(5, 5, 0)], [[0, 0, 10, 10]], [0], 2)
    assert counts[0] == {"tp": 1, "predicted": 1, "true": 1}
    assert counts[1] == {"tp": 0, "predicted": 0, "true": 0}


def test_small_objects_cut_by_the_image_edge_are_dropped_large_ones_kept():
    probs = np.zeros((2, 100, 100), dtype=np.float32)
    probs[1, 40:60, 0:5] = 0.9  # 100 px of a cell cut by the left edge
    probs[1, 40:60, 40:60] = 0.9  # a whole cell
    probs[1, 0:30, 80:100] = 0.9  # a 600 px object on the top edge
    kept = find_cells(probs, "components", threshold=0.5, min_size=10, border_min_size=200)
    assert kept.max() == 2 and kept[50, 2] == 0 and kept[50, 50] > 0 and kept[10, 90] > 0
    assert find_cells(probs, "components", threshold=0.5, min_size=10, border_min_size=0).max() == 3
    assert find_cells(probs, "components", threshold=0.5, min_size=10).max() == 3
