"""LDC preparation on real files: crops, labels, modes, grouped splits and bad inputs."""

import shutil

import imagehash
import numpy as np
import pytest
from conftest import LDC_SAMPLES

from imagezoo.data import check_label_names, load_splits
from imagezoo.data.ldc import LABEL_NAMES, build_ldc_dataset, build_ldc_slides
from imagezoo.data.splits import assign_split, pixel_sha256
from imagezoo.data.voc import AnnotationError, read_voc
from imagezoo.images import load_image


def test_sample_of_every_mode_gives_one_rgb_crop_per_box(ldc_sample_dir):
    dataset, report = build_ldc_dataset(ldc_sample_dir)
    assert report.skipped == []
    assert report.n_images == len(LDC_SAMPLES)
    assert report.n_images_without_cells == 1
    expected = sum(len(read_voc(p)) for p in ldc_sample_dir.glob("*.xml"))
    rows = [row for split in dataset.values() for row in split]
    assert len(rows) == expected > 0
    assert {row["source"] for row in rows} == {n for k, n in LDC_SAMPLES.items() if k != "no_boxes"}
    for row in rows:
        crop = row["image"]
        assert crop.mode == "RGB"
        xmin, ymin, xmax, ymax = row["box"]
        # the crop holds the whole box plus context, clipped to the 225x219 / 220x220 slides
        assert crop.width >= min(xmax - xmin, 200) and crop.height >= min(ymax - ymin, 200)
        assert np.asarray(crop).std() > 1


def test_16bit_slide_crops_are_not_saturated(ldc_sample_dir):
    dataset, _ = build_ldc_dataset(ldc_sample_dir)
    crops = [r["image"] for split in dataset.values() for r in split if r["source"] == LDC_SAMPLES["I;16"]]
    assert crops and all(np.asarray(c).mean() < 250 for c in crops)


def test_labels_follow_the_voc_names(ldc_sample_dir):
    dataset, _ = build_ldc_dataset(ldc_sample_dir)
    names = dataset["train"].features["label"].names
    assert names == list(LABEL_NAMES) == ["dead", "live"]
    voc = {b.name for p in ldc_sample_dir.glob("*.xml") for b in read_voc(p)}
    labels = {names[r["label"]] for split in dataset.values() for r in split}
    assert labels == {"live" if "Living" in v else "dead" for v in voc}


def test_near_copies_of_a_slide_share_its_split(tmp_path, ldc_dir):
    """``b (1857).png`` and ``ncell (41).png`` are one field, re-exposed and boxed again a few pixels off:
    split by pixel hash alone, the first was trained on and the second tested (a review, 2026-12-03)."""
    names = ("b (1857)", "ncell (41)")
    for name in names:
        for suffix in (".png", ".xml"):
            shutil.copy(ldc_dir / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    slides, report = build_ldc_slides(tmp_path)
    assert report.n_images == 2 and report.duplicates == 0 and report.near_copies == 2
    rows = {row["source"]: (split, row) for split in slides for row in slides[split]}
    (first_split, first), (second_split, second) = rows[f"{names[0]}.png"], rows[f"{names[1]}.png"]
    assert first["image_sha256"] != second["image_sha256"] and first_split == second_split
    assert first["image_phash"] == str(imagehash.phash(first["image"]))
    crops, _ = build_ldc_dataset(tmp_path)
    assert {split for split in crops for _ in crops[split]} == {first_split}


def test_splits_are_grouped_by_slide_content(ldc_crops):
    dataset = load_splits(str(ldc_crops))
    groups = {split: set(dataset[split]["image_sha256"]) for split in dataset}
    assert groups["train"].isdisjoint(groups["validation"])
    assert groups["train"].isdisjoint(groups["test"])
    assert groups["validation"].isdisjoint(groups["test"])
    sources = {split: set(dataset[split]["source"]) for split in dataset}
    assert sources["train"].isdisjoint(sources["test"])
    counts = {split: len(dataset[split]) for split in dataset}
    assert counts["train"] > 3 * counts["test"] > 0
    dead_share = sum(1 for y in dataset["test"]["label"] if y == 0) / counts["test"]
    assert 0.08 < dead_share < 0.35  # about 1 dead in 5 cells


def test_byte_identical_slides_share_a_split(ldc_dir):
    # image251.png and image_1000.png are the same file under two names in LDC
    a, b = load_image(ldc_dir / "image251.png"), load_image(ldc_dir / "image_1000.png")
    assert pixel_sha256(a) == pixel_sha256(b)
    assert assign_split(pixel_sha256(a)) == assign_split(pixel_sha256(b))


def test_prepared_folder_is_a_hub_dataset_with_card(ldc_crops):
    card = (ldc_crops / "README.md").read_text()
    assert card.startswith("---\n") and "configs:" in card and "task_categories:" in card
    assert "| test |" in card and "python training/prepare_ldc.py" in card
    assert sorted(p.name for p in (ldc_crops / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]
    assert {p.name.split("_")[0] for p in (ldc_crops.parent / "examples").glob("*.png")} == {"dead", "live"}


def test_missing_xml_and_corrupt_png_are_reported_not_fatal(tmp_path, ldc_sample_dir):
    folder = tmp_path / "slides"
    shutil.copytree(ldc_sample_dir, folder)
    (folder / "b (1829).xml").unlink()
    good = (folder / "image1132.png").read_bytes()
    (folder / "image1132.png").write_bytes(good[: len(good) // 3])
    dataset, report = build_ldc_dataset(folder)
    reasons = dict(report.skipped)
    assert "annotation file not found" in reasons["b (1829).png"]
    assert "truncated" in reasons["image1132.png"]
    assert report.n_images == len(LDC_SAMPLES) - 2
    assert sum(len(s) for s in dataset.values()) > 0


def test_empty_folder_and_missing_folder_raise(tmp_path):
    with pytest.raises(ValueError, match="no image files"):
        build_ldc_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_ldc_dataset(tmp_path / "absent")


def test_malformed_xml_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text("<annotation><object><name>Living Cell</name>")
    with pytest.raises(AnnotationError, match="not valid XML"):
        read_voc(path)


@pytest.mark.parametrize("value", ["inf", "nan", "12px"])
def test_a_box_coordinate_that_is_no_number_is_a_clear_error(tmp_path, value):
    path = tmp_path / "odd.xml"
    path.write_text(f"<annotation><object><name>Living Cell</name><bndbox><xmin>{value}</xmin><ymin>1</ymin>"
                    "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    with pytest.raises(AnnotationError, match="numeric bndbox"):
        read_voc(path)


def test_reloading_a_rewritten_folder_gives_the_new_rows(tmp_path, ldc_sample_dir):
    import prepare_ldc

    slides, out = tmp_path / "slides", tmp_path / "crops"
    shutil.copytree(ldc_sample_dir, slides)
    prepare_ldc.main(["--ldc-dir", str(slides), "--out", str(out)])
    first = sum(len(split) for split in load_splits(str(out)).values())
    assert first > 0  # six slides leave some splits empty: those are left out, not written empty
    png = next(slides.glob("*.png"))
    boxes = len(read_voc(png.with_suffix(".xml")))
    png.unlink()
    prepare_ldc.main(["--ldc-dir", str(slides), "--out", str(out)])
    assert sum(len(split) for split in load_splits(str(out)).values()) == first - boxes


def test_training_refuses_a_dataset_whose_classes_are_in_another_order():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence

    def dataset(names: list[str]) -> DatasetDict:
        features = Features({"label": ClassLabel(names=names), "box_labels": Sequence(ClassLabel(names=names))})
        return DatasetDict(train=Dataset.from_dict({"label": [0, 1], "box_labels": [[0], [1, 0]]}, features=features))

    check_label_names(dataset(list(LABEL_NAMES)), LABEL_NAMES, "ours")
    for column in ("label", "box_labels"):
        with pytest.raises(ValueError, match=r"'live', 'dead'"):
            check_label_names(dataset(list(reversed(LABEL_NAMES))), LABEL_NAMES, "swapped", column)
