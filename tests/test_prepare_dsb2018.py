"""DSB2018 nuclei preparation on real samples: instance labels, border target, image types, splits."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image
from scipy import ndimage as ndi
from skimage.measure import label
from skimage.morphology import disk

from imagezoo.data import load_splits
from imagezoo.data.dsb2018 import (
    BORDER_WIDTH,
    FEATURES,
    IMAGE_TYPES,
    SPLITS,
    SampleError,
    assign_image_types,
    border_target,
    build_dsb2018_dataset,
    image_type_features,
    read_sample,
    read_sample_with_overlaps,
    split_by_type,
)
from imagezoo.data.near_duplicates import keep_groups_together

DSB_DIR = SHARED_DATA / "dsb2018" / "stage1_train"

# two samples of each image type, small where possible; the second one has 258 nuclei (labels
# above 255) and 2 pixels claimed by two masks
DSB_SAMPLES = {
    "3d0ca3498d97edebd28dbc7035eced40baa4af199af09cbb7251792accaa69fe": "fluorescence",
    "547ef286ee5f4e5dce533e982e6992ada67b7d727fdd3cfa6576f24c631a7ae6": "fluorescence",
    "1a11552569160f0b1ea10bedbd628ce6c14f29edec5092034c2309c556df833e": "brightfield",
    "3594684b9ea0e16196f498815508f8d364d55fea2933a2e782122b6f00375d04": "brightfield",
    "af576e8ec3a8d0b57eb6a311299e9e4fd2047970d3dd9d6f52e54ea6a91109da": "histology",
    "8e507d58f4c27cd2a82bee79fe27b069befd62a46fdaed20970a95a2ba819c7b": "histology",
}
MANY_NUCLEI = "547ef286ee5f4e5dce533e982e6992ada67b7d727fdd3cfa6576f24c631a7ae6"
#: one field imaged twice under two ids (1272x603 fluorescence, pixel correlation 0.94)
NEAR_COPIES = (
    "20b20ab049372d184c705acebe7af026d3580f5fd5a72ed796e3622e1685af2f",
    "cb4df20a83b2f38b394c67f1d9d4aef29f9794d5345da3576318374ec3a11490",
)


def require_dsb() -> Path:
    if not DSB_DIR.is_dir():
        pytest.skip(f"DSB2018 data not found at {DSB_DIR} (set IMAGEZOO_SHARED_DATA)")
    return DSB_DIR


@pytest.fixture(scope="module")
def dsb_sample_dir(tmp_path_factory) -> Path:
    """A small stage1_train-layout folder: the sample folders above, nothing else."""
    dsb_dir = require_dsb()
    folder = tmp_path_factory.mktemp("dsb_sample")
    for sample in DSB_SAMPLES:
        shutil.copytree(dsb_dir / sample, folder / sample)
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, dsb_sample_dir) -> Path:
    """The small folder prepared by the real script."""
    import prepare_dsb2018

    # not the real output's folder name: datasets caches a local folder's split sizes by its name
    out = tmp_path_factory.mktemp("data") / "dsb2018-sample"
    prepare_dsb2018.main(
        ["--dsb-dir", str(dsb_sample_dir), "--out", str(out), "--examples-dir", str(out.parent / "examples")]
    )
    return out


def mask_areas(sample_dir: Path) -> np.ndarray:
    return np.array(
        [np.count_nonzero(np.asarray(Image.open(p))) for p in sorted((sample_dir / "masks").glob("*.png"))]
    )


def test_instance_labels_match_the_mask_files(dsb_sample_dir):
    for sample in DSB_SAMPLES:
        rgb, instances = read_sample(dsb_sample_dir / sample)
        assert rgb.dtype == np.uint8 and rgb.shape == (*instances.shape, 3)
        assert instances.dtype == np.uint16
        areas = mask_areas(dsb_sample_dir / sample)
        labelled = np.bincount(instances.ravel(), minlength=len(areas) + 1)[1:]
        assert len(labelled) == len(areas) and labelled.min() > 0
        # a pixel claimed by two masks keeps the first label: only later masks lose pixels
        _, _, overlap = read_sample_with_overlaps(dsb_sample_dir / sample)
        assert (labelled <= areas).all() and (areas - labelled).sum() == overlap
    _, instances = read_sample(dsb_sample_dir / MANY_NUCLEI)
    assert instances.max() == 258
    assert read_sample_with_overlaps(dsb_sample_dir / MANY_NUCLEI)[2] == 2


def test_mask_of_another_size_is_a_clear_error(tmp_path, dsb_sample_dir):
    sample = "af576e8ec3a8d0b57eb6a311299e9e4fd2047970d3dd9d6f52e54ea6a91109da"
    shutil.copytree(dsb_sample_dir / sample, tmp_path / sample)
    mask = sorted((tmp_path / sample / "masks").glob("*.png"))[1]
    Image.new("L", (10, 12)).save(mask)
    with pytest.raises(SampleError, match=f"{mask.name}: mask is 10x12, image is 320x256"):
        read_sample(tmp_path / sample)


def test_border_separates_touching_squares():
    touching = np.zeros((30, 40), np.uint16)
    touching[10:20, 10:20], touching[10:20, 20:30] = 1, 2
    border = border_target(touching, width=2)
    assert border[10:20, 18:22].all()  # the contact, two pixels deep on each side
    assert border[10:12, 12:18].all() and not border[12, 15]  # outline two pixels thick
    assert not border[13:17, 13:17].any() and not border[13:17, 23:27].any()
    outside = np.argwhere(border & (touching == 0))  # just beyond the two ends of the contact
    assert len(outside) and (np.abs(outside[:, 1] - 19.5) < 1).all()
    assert label(touching > 0).max() == 1 and label((touching > 0) & ~border).max() == 2


def test_border_fills_narrow_gaps_not_wide_ones():
    gap = np.zeros((30, 50), np.uint16)
    gap[10:20, 10:20], gap[10:20, 22:32] = 1, 2  # 2 px apart
    assert border_target(gap)[12:18, 20:22].all()
    wide = np.zeros((30, 50), np.uint16)
    wide[10:20, 10:20], wide[10:20, 30:40] = 1, 2  # 10 px apart
    assert not border_target(wide)[:, 20:30].any()


def test_border_of_a_real_sample_lies_on_and_around_nuclei(dsb_sample_dir):
    _, instances = read_sample(dsb_sample_dir / MANY_NUCLEI)
    border = border_target(instances)
    foreground = instances > 0
    assert not (border & ~ndi.binary_dilation(foreground, structure=disk(BORDER_WIDTH))).any()
    assert set(np.unique(instances[border])) == set(np.unique(instances))  # every nucleus has an outline
    assert 0.1 < (border & foreground).sum() / foreground.sum() < 0.9


def test_image_types_of_dark_bright_and_pink_images():
    rng = np.random.default_rng(0)

    def image(nuclei: tuple[int, int, int], background: tuple[int, int, int]) -> np.ndarray:
        pixels = np.full((64, 64, 3), background, np.float64)
        pixels[16:40, 16:40] = nuclei
        return np.clip(pixels + rng.normal(0, 3, (64, 64, 1)), 0, 255).astype(np.uint8)

    images = {  # grey nuclei glowing on black, grey nuclei on white, purple nuclei in pink tissue
        "fluorescence": [image((200, 200, 200), (10, 10, 10)), image((120, 120, 120), (20, 20, 20))],
        "brightfield": [image((60, 60, 60), (220, 220, 220)), image((90, 90, 90), (200, 200, 200))],
        "histology": [image((120, 40, 150), (235, 200, 225)), image((90, 50, 140), (240, 180, 210))],
    }
    expected = [kind for kind, group in images.items() for _ in group]
    features = np.stack([image_type_features(rgb) for group in images.values() for rgb in group])
    assert features.shape == (6, 9) and (0 <= features).all() and (features <= 1).all()
    for seed in (0, 1):
        assert assign_image_types(features, seed) == expected


def test_stratified_split_puts_every_type_in_every_split():
    types = ["fluorescence"] * 80 + ["histology"] * 16 + ["brightfield"] * 7
    splits = split_by_type(types, seed=0)
    assert [splits.count(s) for s in SPLITS] == [72, 15, 16]
    for split in SPLITS:
        assert {t for t, s in zip(types, splits) if s == split} == set(IMAGE_TYPES)
    assert split_by_type(types, seed=0) == splits and split_by_type(types, seed=1) != splits


def test_groups_follow_their_first_split_and_other_samples_stay():
    splits = ["test", "train", "validation", "test", "validation", "test"]
    groups = [0, 0, 1, 2, 1, 3]
    assert keep_groups_together(splits, groups) == ["train", "train", "validation", "test", "validation", "test"]


def test_the_real_near_copies_share_a_split_whatever_the_seed(tmp_path, dsb_sample_dir):
    folder = tmp_path / "stage1_train"
    shutil.copytree(dsb_sample_dir, folder)
    for sample in NEAR_COPIES:
        shutil.copytree(DSB_DIR / sample, folder / sample)
    moved = []
    for seed in range(4):  # eight samples split at random: some seeds part the copies at first
        dataset, report = build_dsb2018_dataset(folder, seed=seed)
        split_of = {row_id: split for split, part in dataset.items() for row_id in part["id"]}
        assert len(split_of) == len(DSB_SAMPLES) + 2
        assert split_of[NEAR_COPIES[0]] == split_of[NEAR_COPIES[1]]
        assert set(report.moved) <= set(NEAR_COPIES)  # nothing else is a near-copy
        moved += report.moved
    assert moved, "no seed parted the copies: the grouping was not exercised"


def test_prepared_folder_round_trips_uint16_instances(prepared, dsb_sample_dir):
    dataset = load_splits(str(prepared))
    rows = {row["id"]: row for split in dataset.values() for row in split}
    assert set(rows) == set(DSB_SAMPLES)
    assert {sample: row["image_type"] for sample, row in rows.items()} == DSB_SAMPLES
    for sample, row in rows.items():
        rgb, instances = read_sample(dsb_sample_dir / sample)
        stored = np.asarray(row["instances"])
        assert stored.dtype == np.uint16 and np.array_equal(stored, instances)
        assert row["image"].mode == "RGB" and np.array_equal(np.asarray(row["image"]), rgb)
        assert row["mask"].mode == "L" and np.array_equal(
            np.asarray(row["mask"]), np.where(instances > 0, 255, 0)
        )
        border = np.asarray(row["border"])
        assert row["border"].mode == "L" and np.array_equal(
            border, np.where(border_target(instances), 255, 0)
        )
        assert (row["width"], row["height"], row["n_nuclei"]) == (rgb.shape[1], rgb.shape[0], instances.max())
    assert np.asarray(rows[MANY_NUCLEI]["instances"]).max() == 258
    assert all(part.features == FEATURES for part in dataset.values())


def test_prepared_folder_has_card_examples_and_disjoint_splits(prepared):
    ids = {split: set(part["id"]) for split, part in load_splits(str(prepared)).items()}
    assert sum(len(v) for v in ids.values()) == len(set().union(*ids.values())) == len(DSB_SAMPLES)
    card = (prepared / "README.md").read_text()
    assert card.startswith("---\n") and "configs:" in card and "license: cc0-1.0" in card
    assert "| split | fluorescence | brightfield | histology | nuclei |" in card
    assert "python training/prepare_dsb2018.py" in card
    assert "at random: too few samples of a type to stratify" in card  # six samples cannot be stratified
    examples = sorted(p.name for p in (prepared.parent / "examples").glob("*.png"))
    assert examples and all(name.rsplit("_", 1)[0] in IMAGE_TYPES for name in examples)


def test_missing_and_corrupt_samples_are_reported_not_fatal(tmp_path, dsb_sample_dir):
    folder = tmp_path / "stage1_train"
    shutil.copytree(dsb_sample_dir, folder)
    (folder / MANY_NUCLEI / "images" / f"{MANY_NUCLEI}.png").unlink()
    histology = "8e507d58f4c27cd2a82bee79fe27b069befd62a46fdaed20970a95a2ba819c7b"
    truncated = min((folder / histology / "masks").iterdir())
    truncated.write_bytes(truncated.read_bytes()[:100])
    dataset, report = build_dsb2018_dataset(folder)
    reasons = dict(report.skipped)
    assert "no such file" in reasons[MANY_NUCLEI]
    assert f"masks/{truncated.name}: corrupt or truncated" in reasons[histology]
    assert report.n_samples == sum(len(part) for part in dataset.values()) == len(DSB_SAMPLES) - 2
    assert "skipped" in report.summary()


def test_empty_folder_and_missing_folder_raise(tmp_path):
    with pytest.raises(ValueError, match="no sample folders"):
        build_dsb2018_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_dsb2018_dataset(tmp_path / "absent")
