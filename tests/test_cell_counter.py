"""The whole-slide cell counter: slide prep, a real short training run, the folder, the predictor,
the batch job without box files and the cells Space's whole-image tab."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import segmentation_models_pytorch as smp
import torch
from conftest import LDC_SAMPLES, space_app
from PIL import Image

from imagezoo.batch import run_job
from imagezoo.data import load_splits
from imagezoo.data.ldc import build_ldc_dataset, build_ldc_slides
from imagezoo.data.splits import pixel_sha256
from imagezoo.images import load_image
from imagezoo.predictors import load_predictor
from imagezoo.predictors.cells import CellCounter
from imagezoo.predictors.segmenter import image_tensor
from imagezoo.segmentation import SegmenterConfig, build_unet, save_unet
from imagezoo.tasks import get_task
from imagezoo.ui import SPACE_DELETE_CACHE

pytestmark = pytest.mark.slow


def test_slides_keep_every_box_with_its_label_and_the_crop_split(ldc_sample_dir):
    slides, report = build_ldc_slides(ldc_sample_dir)
    crops, _ = build_ldc_dataset(ldc_sample_dir)
    assert report.n_images == len(LDC_SAMPLES) and report.duplicates == 0
    rows = [row for split in slides.values() for row in split]
    assert len(rows) == len(LDC_SAMPLES)
    for split, part in slides.items():  # a slide's crops are in the slide's split
        assert set(part["image_sha256"]) >= set(crops[split]["image_sha256"])
    for row in rows:
        assert len(row["boxes"]) == len(row["box_labels"]) == row["n_live"] + row["n_dead"]
        assert row["image_sha256"] == pixel_sha256(row["image"])
        assert all(0 <= x0 < x1 <= row["image"].width and 0 <= y0 < y1 <= row["image"].height
                   for x0, y0, x1, y1 in row["boxes"])
    empty = [row for row in rows if row["source"] == LDC_SAMPLES["no_boxes"]]
    assert empty[0]["boxes"] == [] and empty[0]["n_live"] == 0


def test_duplicate_slides_are_kept_once_by_both_datasets(tmp_path, ldc_dir):
    """A byte-identical copy under another name would count its cells twice in training and in every metric."""
    name = LDC_SAMPLES["RGB"]
    for copy in ("a.png", "b.png"):
        (tmp_path / copy).write_bytes((ldc_dir / name).read_bytes())
        (tmp_path / copy.replace(".png", ".xml")).write_bytes((ldc_dir / name.replace(".png", ".xml")).read_bytes())
    slides, report = build_ldc_slides(tmp_path)
    assert report.duplicates == 1 and report.n_images == 1 and sum(len(part) for part in slides.values()) == 1
    crops, report = build_ldc_dataset(tmp_path)
    rows = [row for part in crops.values() for row in part]
    assert report.duplicates == 1 and {row["source"] for row in rows} == {"a.png"}
    (slide,) = [row for part in slides.values() for row in part]
    assert len(rows) == len(slide["boxes"]) > 0


def test_training_writes_an_smp_folder_with_both_designs_measured(cell_counter_model):
    config = json.loads((cell_counter_model / "config.json").read_text())
    assert config["_imagezoo"]["predictor"] == "cell-counter"
    assert config["_imagezoo"]["channels"] == ["dead", "live", "centre"]  # the recipe learns the cells' centres
    assert config["_imagezoo"]["classifier"] == "classifier"
    rule = config["_imagezoo"]["min_probability"]  # the calling rule tuned on validation: arg-max or dead held back
    assert rule is None or (rule[0] == "dead" and rule[1] in (0.6, 0.7, 0.8)), rule
    assert (cell_counter_model / "classifier" / "model.safetensors").is_file()
    results = json.loads((cell_counter_model / "eval_results.json").read_text())
    assert set(results["designs"]) == {"unet", "unet+classifier"} and results["design"] == "unet+classifier"
    overall = results["metrics"]["overall"]
    assert 0 <= overall["live"]["f1"] <= 1 and overall["n_images"] > 0
    assert results["metrics"]["without_cells"]["n_images"] >= 0
    card = (cell_counter_model / "README.md").read_text()
    assert "model-index" in card and "Two designs, one split" in card and "(**served**)" in card
    assert smp.from_pretrained(str(cell_counter_model)).segmentation_head[0].out_channels == 3


def test_predictor_finds_classifies_and_summarises_cells(cell_counter_model, ldc_dir):
    counter = load_predictor(str(cell_counter_model))
    assert isinstance(counter, CellCounter) and counter.classifier is not None
    assert counter.label_names == ("dead", "live")
    result = counter.segment(ldc_dir / LDC_SAMPLES["I;16"])
    summary = result.summary
    assert summary["n_live"] + summary["n_dead"] == len(result.cells) == result.labels.max()
    for cell in result.cells:
        assert sum(cell.probabilities) == pytest.approx(1, abs=1e-4)
        xmin, ymin, xmax, ymax = cell.box
        assert xmin <= cell.centre[0] <= xmax and ymin <= cell.centre[1] <= ymax
    # a threshold above every probability finds nothing: viability is unknown, not 0
    tensor = image_tensor(load_image(ldc_dir / LDC_SAMPLES["RGB"]))[0]
    nothing = counter.from_probabilities(tensor, counter.probabilities(tensor), threshold=1.0)
    assert nothing.cells == [] and nothing.summary == {"n_live": 0, "n_dead": 0, "viability": None}


def test_a_counter_with_a_centre_channel_classifies_cells_by_its_class_channels_only(tmp_path, ldc_dir):
    model = build_unet("tf_efficientnet_lite0", pretrained=False, classes=3, decoder_channels=(16, 8, 8, 8, 8))
    head = model.segmentation_head[0]  # a constant answer: live everywhere, dead and centre nowhere
    torch.nn.init.zeros_(head.weight)
    head.bias.data = torch.tensor([-6.0, 6.0, -6.0])
    config = SegmenterConfig(predictor="cell-counter", channels=("dead", "live", "centre"),
                             postprocess="watershed-centres", min_size=30)
    counter = load_predictor(str(save_unet(model, config, tmp_path / "counter")))
    assert isinstance(counter, CellCounter) and counter.has_centres and counter.label_names == ("dead", "live")
    result = counter.segment(ldc_dir / LDC_SAMPLES["RGB"])
    assert result.probabilities.shape[0] == 3
    assert len(result.cells) == 1 and result.foreground_fraction == 1.0  # no seed: the foreground is one object
    assert result.cells[0].probabilities == pytest.approx((0.0025, 0.9975), abs=1e-4)
    assert result.summary == {"n_live": 1, "n_dead": 0, "viability": 1.0}


def test_batch_job_without_box_files_gives_a_slide_row_and_cell_rows(
    cell_counter_model, ldc_dir, bad_files, tmp_path_factory
):
    folder = bad_files["good"].parent
    (folder / "empty_slide.png").write_bytes((ldc_dir / LDC_SAMPLES["no_boxes"]).read_bytes())
    results = tmp_path_factory.mktemp("viability_job")
    out, masks = results / "v.parquet", results / "masks"
    summary = run_job(folder, str(cell_counter_model), out, masks_dir=masks, progress=False)
    table = pq.read_table(out).to_pylist()
    slide_rows = [row for row in table if row["box_index"] is None]
    assert sorted(row["path"] for row in slide_rows) == sorted(p.name for p in folder.iterdir())
    errors = {row["path"] for row in slide_rows if row["error"]}
    assert errors == {"truncated.png", "corrupt.png", "empty.png", "notes.png", "bomb.png"}
    assert summary.errors == len(errors) and summary.scored == 3
    for row in slide_rows:
        cells = [r for r in table if r["path"] == row["path"] and r["box_index"] is not None]
        if row["error"]:
            assert cells == [] and row["n_objects"] is None
            continue
        assert row["n_objects"] == len(cells) == row["n_live"] + row["n_dead"]
        assert row["viability"] == (pytest.approx(row["n_live"] / len(cells)) if cells else None)
        labels = np.array(Image.open(masks / f"{row['path']}.png"))
        assert labels.dtype == np.uint16 and labels.max() == len(cells)
        for cell in cells:
            assert cell["label"] in ("dead", "live") and cell["score"] == cell[f"prob_{cell['label']}"]
            assert cell["prob_dead"] + cell["prob_live"] == pytest.approx(1, abs=1e-4)
            assert cell["box_xmin"] <= cell["center_x"] <= cell["box_xmax"]
            assert labels[round(cell["center_y"]), round(cell["center_x"])] in (0, cell["box_index"])
    assert (masks / "objects.csv").is_file()


def test_batch_job_refuses_box_files_for_a_cell_counter(cell_counter_model, ldc_sample_dir, tmp_path):
    with pytest.raises(ValueError, match="finds the cells itself"):
        run_job(ldc_sample_dir, str(cell_counter_model), tmp_path / "x.parquet", boxes="voc", progress=False)


@pytest.fixture(scope="module")
def app(trained_model, cell_counter_model):
    env = {"IMAGEZOO_MODEL": str(trained_model), "IMAGEZOO_COUNTER_MODEL": str(cell_counter_model)}
    with space_app("cells", "cells_app_whole", **env) as module:
        yield module


def test_space_whole_image_tab_outlines_counts_and_tabulates(app, ldc_dir, cell_counter_model):
    assert app.COUNTER_ID == str(cell_counter_model)
    picture, text, table = app.count_cells(str(ldc_dir / LDC_SAMPLES["P"]))
    image = np.asarray(Image.open(ldc_dir / LDC_SAMPLES["P"]).convert("RGB"))
    assert picture.shape == image.shape
    if table:
        n_live = sum(row[1] == "live" for row in table)
        assert f"{n_live} live" in text and "Viability" in text
        assert (picture != image).any()  # outlines drawn
    else:
        assert "No cell found" in text
    assert app.build_demo().delete_cache == SPACE_DELETE_CACHE  # uploads are not kept


def test_space_counts_a_large_slide_with_one_pass_and_says_so(app, ldc_dir, monkeypatch):
    """Test-time augmentation's 8 passes held the Space's queue for minutes on a photo of a few megapixels."""
    path = ldc_dir / LDC_SAMPLES["P"]
    assert app.counter().settings.tta and not app.one_pass_counter().settings.tta
    assert app.one_pass_counter().model is app.counter().model
    assert "one pass" not in app.count_cells(str(path))[1]
    monkeypatch.setattr(app, "TTA_MAX_PIXELS", 100)  # this slide counts as large
    picture, text, table = app.count_cells(str(path))
    one_pass = app.one_pass_counter().segment(load_image(path))
    assert "one pass of the network" in text and len(table) == len(one_pass.cells)
    np.testing.assert_array_equal(picture, one_pass.outlined(np.asarray(load_image(path))))


def test_space_whole_image_tab_rejects_bad_uploads(app, bad_files):
    import gradio as gr

    with pytest.raises(gr.Error):
        app.count_cells(None)
    with pytest.raises(gr.Error, match="truncated"):
        app.count_cells(str(bad_files["truncated"]))


def test_prepared_slides_load_and_examples_are_written(cell_counter_model):
    dataset = load_splits(str(cell_counter_model.parent / "ldc-slides"))
    assert set(dataset) <= {"train", "validation", "test"} and len(dataset["train"]) > 50
    assert sorted(p.name for p in (cell_counter_model.parent / "examples").glob("*.png"))


def test_a_crop_classifier_trained_on_the_counters_test_slides_is_refused(tmp_path):
    from datasets import Dataset, DatasetDict
    from train_cell_counter import check_classifier_split

    phash = {"train": "00000000ffffffff", "validation": "ffffffff00000000", "test": "0f0f0f0f0f0f0f0f"}
    slides = DatasetDict({split: Dataset.from_dict({"image_phash": [phash[split]]}) for split in phash})
    crops = tmp_path / "crops"
    (crops / "data").mkdir(parents=True)
    shard = crops / "data" / "train-00000-of-00001.parquet"
    pq.write_table(Dataset.from_dict({"image_phash": [phash["train"]] * 3}).data.table, shard)
    check_classifier_split(slides, str(crops))  # the same split: fine
    near_copy = f"{int(phash['test'], 16) ^ 0b10101:016x}"  # 3 bits off a test slide's hash
    pq.write_table(Dataset.from_dict({"image_phash": [phash["train"], near_copy]}).data.table, shard)
    with pytest.raises(SystemExit, match="1 test slides or near-copies of them gave"):
        check_classifier_split(slides, str(crops))
    pq.write_table(Dataset.from_dict({"image_sha256": ["a"]}).data.table, shard)  # an older cut: no hashes to compare
    with pytest.raises(SystemExit, match="prepared before near-copies"):
        check_classifier_split(slides, str(crops))
    check_classifier_split(slides, str(tmp_path / "absent"))  # no crop dataset here: a warning only


def test_the_leak_check_reads_the_dataset_the_given_crop_classifier_trained_on(trained_model, tmp_path):
    """It read the crop task's dataset whatever ``--classifier`` was given (a review, 2026-12-03)."""
    from train_cell_counter import CLASSIFIER_TASK, classifier_dataset

    recorded = json.loads((trained_model / "eval_results.json").read_text())["dataset"]
    assert Path(recorded).is_dir() and recorded != get_task(CLASSIFIER_TASK).dataset
    assert classifier_dataset(trained_model) == recorded
    assert classifier_dataset(tmp_path) == get_task(CLASSIFIER_TASK).dataset  # a folder that records none
