"""Post-processing, RLE and object tables on synthetic images with known answers."""

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from imagezoo.instances import (
    OBJECT_COLUMNS,
    POSTPROCESSORS,
    components,
    decode_rle,
    encode_rle,
    object_table,
    postprocess,
    watershed_body_border,
    watershed_distance,
)


def disc(shape, center, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def touching_discs():
    """Two discs of radius 12 overlapping by 4 px, the network's probabilities for them and the
    true split (each contact pixel to the nearer centre)."""
    shape = (48, 64)
    left, right = disc(shape, (24, 20), 12), disc(shape, (24, 40), 12)
    body = np.where(left | right, 0.95, 0.05)
    contact = np.zeros(shape, dtype=bool)
    contact[:, 28:33] = True
    border = np.where(contact & (left | right), 0.9, 0.05)
    truth = np.where(np.arange(shape[1]) < 30, 1, 2) * (left | right)
    return np.stack([body, border]).astype(np.float32), truth


def test_border_channel_splits_touching_nuclei_that_components_merges():
    probs, truth = touching_discs()
    assert components(probs).max() == 1
    split = watershed_body_border(probs)
    assert split.max() == 2
    for k in (1, 2):  # each predicted nucleus is one of the true ones, up to a few contact pixels
        overlap = np.bincount(truth[split == k], minlength=3)
        assert overlap.max() / (split == k).sum() > 0.95


def test_distance_watershed_splits_a_waist_without_a_border_channel():
    probs, _ = touching_discs()
    probs[1] = 0  # no border channel at all
    assert watershed_distance(probs).max() == 2
    assert watershed_body_border(probs).max() == 1


@pytest.mark.parametrize("name", sorted(POSTPROCESSORS))
def test_specks_are_removed_and_labels_are_sequential_int32(name):
    probs, _ = touching_discs()
    probs = np.concatenate([probs, np.full((2, 48, 30), 0.05, dtype=np.float32)], axis=2)
    probs[0, 5:8, 70:73] = 0.9  # a 9-pixel speck
    probs[0, 30:42, 70:82] = 0.9  # a separate 144-pixel nucleus
    labels = postprocess(name, probs, min_size=10)
    assert labels.dtype == np.int32 and labels.shape == (48, 94)
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    assert labels[5:8, 70:73].max() == 0 and labels[30:42, 70:82].min() > 0
    assert postprocess(name, probs, min_size=5)[5:8, 70:73].min() > 0


def test_postprocess_names_the_valid_methods():
    with pytest.raises(KeyError, match="watershed-border"):
        postprocess("watershed", np.zeros((2, 4, 4)))


def test_empty_probabilities_give_no_object():
    for method in POSTPROCESSORS.values():
        assert method(np.zeros((2, 16, 16), dtype=np.float32)).max() == 0


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((5, 7), dtype=bool),
        np.ones((5, 7), dtype=bool),
        np.random.default_rng(0).uniform(size=(13, 31)) > 0.5,
        disc((40, 25), (20, 12), 9),
    ],
    ids=["empty", "full", "random-non-square", "disc"],
)
def test_rle_round_trips_and_pycocotools_reads_it(mask):
    text = encode_rle(mask)
    assert " " not in text and json.loads(text)["size"] == list(mask.shape)
    decoded = decode_rle(text)
    assert decoded.dtype == bool and np.array_equal(decoded, mask)
    assert np.array_equal(coco_mask.decode(json.loads(text)).astype(bool), mask)  # as the docstring says


def test_object_table_matches_a_hand_made_image():
    labels = np.zeros((10, 20), dtype=np.int32)
    labels[2:4, 3:8] = 1  # rows 2-3, columns 3-7: area 10, centre (x 5, y 2.5)
    labels[5:10, 15:17] = 2  # rows 5-9, columns 15-16: area 10, centre (x 15.5, y 7)
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    image[labels == 1] = 200
    image[labels == 2] = (255, 0, 0)
    rows = object_table(labels, image)
    assert [list(row) for row in rows] == [list(OBJECT_COLUMNS)] * 2
    first, second = rows
    assert first == pytest.approx(dict(zip(OBJECT_COLUMNS, [1, 10, 5.0, 2.5, 3, 2, 8, 4, 200.0])))
    assert (second["centroid_x"], second["centroid_y"], second["bbox_xmax"], second["bbox_ymax"]) == (
        15.5,
        7.0,
        17,
        10,
    )
    assert second["mean_intensity"] == pytest.approx(0.2125 * 255)  # luminance of pure red
    assert all(isinstance(row[key], int) for row in rows for key in OBJECT_COLUMNS[:2] + OBJECT_COLUMNS[4:8])
    json.dumps(rows)
    assert object_table(np.zeros((4, 4), dtype=np.int32), image[:4, :4]) == []
    assert object_table(labels, image[..., 0])[0]["mean_intensity"] == pytest.approx(200.0)  # grey input


def test_overlay_tints_each_object_over_a_grey_image_and_outlines_it():
    from imagezoo.instances import OBJECT_COLOURS, OVERLAY_ALPHA, overlay

    image = np.full((12, 20, 3), (200, 100, 50), np.uint8)
    labels = np.zeros((12, 20), np.int32)
    labels[2:9, 2:9], labels[2:9, 11:18] = 1, 2
    coloured = overlay(image, labels)
    grey = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # ITU-R 601 luma, Pillow's "L"
    assert coloured.dtype == np.uint8 and coloured.shape == image.shape
    assert coloured[0, 0].tolist() == [grey] * 3
    for label, (y, x) in ((1, (5, 5)), (2, (5, 14))):
        tint = np.rint((1 - OVERLAY_ALPHA) * grey + OVERLAY_ALPHA * OBJECT_COLOURS[label - 1])
        assert coloured[y, x].tolist() == tint.tolist()
        assert coloured[2, x].tolist() == [255] * 3  # the object's top row is its outline
