"""The batch job and the nuclei Space on a real (briefly trained) U-Net and real DSB2018 images."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, assert_uploads_reach_the_app, space_app
from PIL import Image
from pycocotools import mask as coco_mask

from imagezoo.batch import discover, output_schema, run_job, score_items
from imagezoo.images import load_image
from imagezoo.instances import decode_rle
from imagezoo.predictors import Item, JobOptions, load_predictor
from imagezoo.predictors.segmenter import InstanceSegmenter, image_tensor
from imagezoo.ui import SPACE_DELETE_CACHE

pytestmark = pytest.mark.slow


@pytest.fixture()
def nuclei_folder(tmp_path, dsb_sample_ids, dsb_dir, bad_files):
    """Real DSB images (nested, one without extension) plus every kind of bad file."""
    folder = tmp_path / "nuclei"
    (folder / "plate1" / "well").mkdir(parents=True)
    for n, sample in enumerate(dsb_sample_ids[:3]):
        source = dsb_dir / sample / "images" / f"{sample}.png"
        target = folder / "plate1" / "well" / f"{n}.png" if n else folder / "no_extension"
        shutil.copy(source, target)
    for kind, path in bad_files.items():
        if kind not in ("good", "no_extension"):
            shutil.copy(path, folder / path.name)
    return folder


def test_rows_masks_and_objects_agree(nuclei_model, nuclei_folder, tmp_path):
    out, masks = tmp_path / "nuclei.parquet", tmp_path / "masks"
    summary = run_job(nuclei_folder, str(nuclei_model), out, masks_dir=masks, progress=False)
    rows = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    assert set(rows) == set(discover(nuclei_folder).names) and summary.errors == 5 and summary.scored == 3
    assert pq.read_schema(out).equals(output_schema([]), check_metadata=False)
    objects = pacsv.read_csv(masks / "objects.csv").to_pylist()
    for path, row in rows.items():
        label_png = masks / f"{path}.png"
        if row["error"] is not None:
            assert row["n_objects"] is None and row["mask_rle"] is None and not label_png.exists()
            continue
        labels = np.asarray(Image.open(label_png))
        image = np.asarray(Image.open(nuclei_folder / path).convert("RGB"))
        assert labels.shape == image.shape[:2] == (row["height"], row["width"])
        assert Image.open(label_png).mode.startswith("I;16")
        assert row["n_objects"] == labels.max() == len(np.unique(labels)) - 1
        assert row["foreground_fraction"] == pytest.approx((labels > 0).mean(), abs=1e-6)
        np.testing.assert_array_equal(decode_rle(row["mask_rle"]), labels > 0)
        rle = json.loads(row["mask_rle"])  # what a user does with pycocotools directly
        np.testing.assert_array_equal(coco_mask.decode({**rle, "counts": rle["counts"].encode()}), labels > 0)
        mine = [o for o in objects if o["image"] == path]
        assert len(mine) == row["n_objects"]
        assert sum(o["area"] for o in mine) == (labels > 0).sum()
    assert sum(r["n_objects"] or 0 for r in rows.values()) > 0, "the trained model finds nuclei"


def test_resume_reuses_rows_and_keeps_the_masks(nuclei_model, nuclei_folder, tmp_path):
    out, masks = tmp_path / "nuclei.parquet", tmp_path / "masks"
    run_job(nuclei_folder, str(nuclei_model), out, masks_dir=masks, progress=False, num_workers=0)
    first = sorted(pq.read_table(out).to_pylist(), key=lambda r: r["path"])
    objects = (masks / "objects.csv").read_text()
    again = run_job(nuclei_folder, str(nuclei_model), out, masks_dir=masks, resume=True, progress=False)
    assert again.skipped == 3 and again.scored == 0
    assert sorted(pq.read_table(out).to_pylist(), key=lambda r: r["path"]) == first
    assert (masks / "objects.csv").read_text() == objects
    elsewhere = tmp_path / "new-masks"  # a resumed job asked for label images it never wrote rescores those files
    moved = run_job(nuclei_folder, str(nuclei_model), out, masks_dir=elsewhere, resume=True, progress=False)
    assert moved.skipped == 0 and moved.scored == 3
    assert (elsewhere / "objects.csv").read_text() == objects


def test_a_file_that_fails_on_a_rerun_leaves_no_label_image_behind(nuclei_model, nuclei_folder, tmp_path):
    """Label images and tables of an earlier run never contradict this run's error rows."""
    out, masks = tmp_path / "nuclei.parquet", tmp_path / "masks"
    run_job(nuclei_folder, str(nuclei_model), out, masks_dir=masks, progress=False, num_workers=0)
    broken = "plate1/well/1.png"
    assert (masks / f"{broken}.png").is_file() and (masks / f"{broken}.objects.csv").is_file()
    (nuclei_folder / broken).write_bytes((nuclei_folder / broken).read_bytes()[:200])  # truncated since
    run_job(nuclei_folder, str(nuclei_model), out, masks_dir=masks, progress=False, num_workers=0)
    row = next(r for r in pq.read_table(out).to_pylist() if r["path"] == broken)
    assert row["error"] is not None
    assert not (masks / f"{broken}.png").exists() and not (masks / f"{broken}.objects.csv").exists()
    assert broken not in {o["image"] for o in pacsv.read_csv(masks / "objects.csv").to_pylist()}
    only_bad = tmp_path / "only-bad"  # nothing scored: the merged table is emptied, not left from before
    only_bad.mkdir()
    (only_bad / "notes.png").write_text("not an image")
    run_job(only_bad, str(nuclei_model), tmp_path / "bad.parquet", masks_dir=masks, progress=False, num_workers=0)
    table = pacsv.read_csv(masks / "objects.csv")
    assert table.num_rows == 0 and table.column_names[0] == "image"


def test_names_that_collide_or_are_long_cost_at_most_their_own_file(nuclei_model, dsb_dir, dsb_sample_ids, tmp_path):
    """``a``'s label image is ``DIR/a.png``, where ``a.png/b.png``'s folder would go: one of them gets an error
    row, and the job used to end at its clean-up after the Parquet was written, with no ``objects.csv``. A name
    near the 255-byte limit failed for its temp file's longer name (a review, 2026-12-03)."""
    folder = tmp_path / "in"
    (folder / "a.png").mkdir(parents=True)
    source = dsb_dir / dsb_sample_ids[0] / "images" / f"{dsb_sample_ids[0]}.png"
    long_name = "x" * 236 + ".png"  # its object table: 252 bytes
    for name in ("a", "a.png/b.png", long_name):
        shutil.copy(source, folder / name)
    out, masks = tmp_path / "out.parquet", tmp_path / "masks"
    summary = run_job(folder, str(nuclei_model), out, masks_dir=masks, progress=False, num_workers=0)
    rows = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    assert summary.scored == 2 and [rows[name]["error"] is None for name in ("a", "a.png/b.png")].count(True) == 1
    assert rows[long_name]["error"] is None and (masks / f"{long_name}.objects.csv").is_file()
    assert (masks / "objects.csv").is_file()


def test_ray_engine_gives_the_same_rows(nuclei_model, nuclei_folder, tmp_path):
    local, ray_out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    run_job(nuclei_folder, str(nuclei_model), local, progress=False, num_workers=0)
    run_job(nuclei_folder, str(nuclei_model), ray_out, engine="ray", progress=False)
    drop = lambda rows: sorted(({k: v for k, v in r.items() if k != "error"} for r in rows), key=lambda r: r["path"])  # noqa: E731
    assert drop(pq.read_table(ray_out).to_pylist()) == drop(pq.read_table(local).to_pylist())


def test_options_a_model_cannot_serve_are_refused(nuclei_model, trained_model, nuclei_folder, tmp_path):
    with pytest.raises(ValueError, match="--boxes needs an image classifier"):
        run_job(nuclei_folder, str(nuclei_model), tmp_path / "a.parquet", boxes="voc", progress=False)
    with pytest.raises(ValueError, match="--masks-dir needs a segmentation model"):
        run_job(nuclei_folder, str(trained_model), tmp_path / "b.parquet", masks_dir=tmp_path / "m", progress=False)
    code = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "batch_predict.py"), "--dir", str(nuclei_folder), "--model",
         str(trained_model), "--masks-dir", str(tmp_path / "m"), "--out", str(tmp_path / "c.parquet")],
        capture_output=True, text=True,
    )
    assert code.returncode == 2 and "--masks-dir needs a segmentation model" in code.stderr


def test_a_file_that_fails_to_segment_gets_an_error_not_the_batch(nuclei_model, dsb_dir, dsb_sample_ids):
    segmenter = load_predictor(str(nuclei_model))
    path = dsb_dir / dsb_sample_ids[0] / "images" / f"{dsb_sample_ids[0]}.png"
    good = Item("good.png", inputs=image_tensor(load_image(path)))
    bad = Item("bad.png", inputs=good.inputs.float())  # not the uint8 every preparer makes
    (_, bad_rows), (_, good_rows) = score_items(segmenter, [bad, good], batch_size=2, options=JobOptions())
    assert len(bad_rows) == 1 and "uint8" in bad_rows[0]["error"] and "n_objects" not in bad_rows[0]
    assert good_rows[0]["error"] is None and good_rows[0]["n_objects"] == segmenter.segment(path).n_objects


def test_the_folder_config_picks_the_predictor(nuclei_model, trained_model):
    assert isinstance(load_predictor(str(nuclei_model)), InstanceSegmenter)
    assert type(load_predictor(str(trained_model))).__name__ == "ImageClassifier"


@pytest.fixture(scope="module")
def nuclei_app(nuclei_model):
    with space_app("nuclei", "nuclei_app", IMAGEZOO_MODEL=str(nuclei_model)) as module:
        yield module


def test_space_segments_counts_and_exports(nuclei_app, nuclei_folder, tmp_path):
    assert_uploads_reach_the_app(nuclei_app.demo, tmp_path)
    path = nuclei_folder / "plate1" / "well" / "1.png"
    overlay, text, files, state = nuclei_app.segment(str(path), 0.5)
    name, image, probabilities = state
    assert overlay.shape == image.shape and probabilities.shape == (2, *image.shape[:2])
    labels = np.asarray(Image.open(files[0]))
    assert f"**{labels.max()} nuclei**" in text
    # named after the upload, in the files and the table (downloads of several images were all "upload")
    assert [Path(f).name for f in files] == ["1.labels.png", "1.objects.csv"] and name == "1"
    table = pacsv.read_csv(files[1]).to_pylist()
    assert len(table) == labels.max() and {str(row["image"]) for row in table} == {"1"}
    assert nuclei_app.build_demo().delete_cache == SPACE_DELETE_CACHE  # Gradio's copies of uploads and downloads go too
    stale = nuclei_app.SCRATCH / "stale"  # an earlier render's files, long copied into Gradio's cache
    stale.mkdir()
    os.utime(stale, (0, 0))
    stricter = nuclei_app.rethreshold(0.9, state)
    assert (np.asarray(Image.open(stricter[2][0])) > 0).sum() <= (labels > 0).sum()
    assert Path(files[0]).is_relative_to(nuclei_app.SCRATCH) and not stale.exists()


def test_space_counts_beyond_what_a_label_image_can_number(nuclei_app):
    """65,792 nuclei (8x8 squares 2 px apart): more than a 16-bit PNG can number. The count, overlay and
    table still come, and the text says why there is no label image (it used to be a bare error)."""
    body = np.zeros((256 * 10, 257 * 10), np.float32)
    body.reshape(256, 10, 257, 10)[:, :8, :, :8] = 1
    image = np.repeat((body * 200).astype(np.uint8)[..., None], 3, axis=2)
    overlay, text, files, _ = nuclei_app.rethreshold(0.5, ("squares", image, np.stack([body, np.zeros_like(body)])))
    assert "**65792 nuclei**" in text and "No label image" in text and overlay.shape == image.shape
    assert [Path(f).name for f in files] == ["squares.objects.csv"] and len(pacsv.read_csv(files[0])) == 65792
    one = np.zeros((64, 64), np.float32)
    one[20:30, 20:30] = 1
    assert "**1 nucleus**" in nuclei_app.rethreshold(0.5, ("one", image[:64, :64], np.stack([one, 0 * one])))[1]


def test_space_refuses_bad_uploads(nuclei_app, bad_files):
    with pytest.raises(gr.Error, match="Upload"):
        nuclei_app.segment(None, 0.5)
    with pytest.raises(gr.Error, match="truncated"):
        nuclei_app.segment(str(bad_files["truncated"]), 0.5)
    with pytest.raises(gr.Error, match="Upload a microscopy image first"):
        nuclei_app.rethreshold(0.5, None)


def test_a_new_upload_forgets_the_last_segmentation(nuclei_app, nuclei_folder):
    """The slider and the downloads must not describe an image no longer shown: a new upload is segmented as
    it lands, its first output emptying every output and the session's probabilities; the slider's renders
    share its queue, so they read the new image's probabilities."""
    events = {fn.name: fn for fn in nuclei_app.demo.fns.values()}
    segment, rethreshold = events["segment_on_upload"], events["rethreshold"]
    assert [event for _, event in segment.targets] == ["change"] and segment.outputs == rethreshold.outputs
    assert segment.concurrency_id == rethreshold.concurrency_id
    # a release while the last waits in the queue runs after it: Gradio's default for release ("once")
    # dropped it, leaving the slider at one value and the results at another (a review, 2026-12-03)
    assert [event for _, event in rethreshold.targets] == ["release"] and rethreshold.trigger_mode == "always_last"
    path = str(nuclei_folder / "plate1" / "well" / "1.png")
    first, result = segment.fn(path, 0.5)
    assert first == nuclei_app.NO_SEGMENTATION and result[1] == nuclei_app.segment(path, 0.5)[1]
    with pytest.raises(gr.Error, match="Upload a microscopy image first"):  # the slider, after the state was forgotten
        nuclei_app.rethreshold(0.5, first[-1])


def test_serving_code_does_not_import_training_libraries():
    code = (
        "import sys, imagezoo.predictors.segmenter, imagezoo.predictors.cells, imagezoo.inference, imagezoo.batch, "
        "imagezoo.viability, imagezoo.cells, imagezoo.predictors.gated, imagezoo.brain_mri, imagezoo.explain; "
        "print(sorted(m for m in ('datasets', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
