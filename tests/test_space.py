"""The cells Space's functions on a real trained model and real LDC slides."""

import re

import gradio as gr
import numpy as np
import pytest
from conftest import LDC_SAMPLES, assert_uploads_reach_the_app, space_app
from PIL import Image

from imagezoo.cells import CLASS_COLOURS
from imagezoo.data.voc import read_voc
from imagezoo.tasks import default_model_id

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(trained_model):
    with space_app("cells", "cells_app", IMAGEZOO_MODEL=str(trained_model)) as module:
        yield module


def test_single_cell_gives_probabilities_for_both_labels(app, ldc_crops):
    for path in sorted((ldc_crops.parent / "examples").glob("*.png")):
        probabilities = app.classify_cell(str(path))
        assert set(probabilities) == {"dead", "live"}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_16bit_upload_is_accepted(app, ldc_dir, tmp_path):
    assert_uploads_reach_the_app(app.demo, tmp_path)
    path = ldc_dir / LDC_SAMPLES["I;16"]
    assert Image.open(path).mode == "I;16"  # the Space gets the file itself (image_mode=None), not Gradio's 8-bit copy
    probabilities = app.classify_cell(str(path))
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_whole_slide_scores_every_box_and_reports_viability(app, ldc_dir):
    """Every box drawn in its class colour on one picture (Gradio's AnnotatedImage made a full-size mask
    and PNG per box: 1.3 s a box on a 12 MP slide, a review on 2026-12-03)."""
    image_path = ldc_dir / LDC_SAMPLES["RGB"]
    xml_path = image_path.with_suffix(".xml")
    picture, text = app.score_slide(str(image_path), str(xml_path))
    image = np.asarray(Image.open(image_path).convert("RGB"))
    boxes = read_voc(xml_path)
    assert picture.shape == image.shape and len(boxes) > 0
    counts = {label: int(n) for n, label in re.findall(r"(\d+) (live|dead)", text)}
    assert counts["live"] + counts["dead"] == len(boxes) and f"of {len(boxes)} annotated cells" in text
    for box in boxes:  # each box's top edge is drawn in class colours (another box may cross it)
        edge = {tuple(pixel) for pixel in picture[box.ymin, box.xmin:box.xmax]}
        assert edge <= set(CLASS_COLOURS.values())


def test_slide_without_cells_says_so(app, ldc_dir):
    image_path = ldc_dir / LDC_SAMPLES["no_boxes"]
    picture, text = app.score_slide(str(image_path), str(image_path.with_suffix(".xml")))
    np.testing.assert_array_equal(picture, np.asarray(Image.open(image_path).convert("RGB")))
    assert "No annotated cell" in text


def test_an_annotation_of_another_image_or_not_voc_is_refused(app, ldc_dir, tmp_path):
    """Both gave a viability: the boxes of a 220x220 slide on a 40x40 copy ("0 live, 1 dead"), and an HTML
    page "No annotated cell on this slide" (a review, 2026-12-03)."""
    image_path = ldc_dir / LDC_SAMPLES["RGB"]
    small = tmp_path / "small.png"
    Image.open(image_path).resize((40, 40)).save(small)
    width, height = Image.open(image_path).size
    with pytest.raises(gr.Error, match=f"annotates a {width}x{height} image, not this 40x40 one"):
        app.score_slide(str(small), str(image_path.with_suffix(".xml")))
    page = tmp_path / "page.xml"
    page.write_text("<html><body>hello</body></html>")
    with pytest.raises(gr.Error, match="not a Pascal-VOC annotation"):
        app.score_slide(str(image_path), str(page))


def test_bad_inputs_become_gradio_errors(app, bad_files):
    with pytest.raises(gr.Error):
        app.classify_cell(None)
    with pytest.raises(gr.Error, match="truncated"):
        app.classify_cell(str(bad_files["truncated"]))
    with pytest.raises(gr.Error, match="truncated"):
        app.score_slide(str(bad_files["truncated"]), str(bad_files["text"]))
    with pytest.raises(gr.Error, match="Upload both"):
        app.score_slide(str(bad_files["good"]), None)


def test_model_id_defaults_and_override(app, trained_model):
    assert app.MODEL_ID == str(trained_model)
    assert app.classifier().model_id == str(trained_model)


def test_default_model_id_prefers_the_environment_then_the_trained_folder_then_the_hub(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGEZOO_MODEL", raising=False)
    assert default_model_id("nuclei-unet", tmp_path) == "hf-hub:imagezoo/nuclei-unet"
    (tmp_path / "nuclei-unet").mkdir()
    assert default_model_id("nuclei-unet", tmp_path) == str(tmp_path / "nuclei-unet")
    monkeypatch.setenv("IMAGEZOO_MODEL", "hf-hub:someone/else")
    assert default_model_id("nuclei-unet", tmp_path) == "hf-hub:someone/else"
    monkeypatch.delenv("IMAGEZOO_MODEL")
    with pytest.raises(KeyError, match="known:"):
        default_model_id("no-such-model", tmp_path / "missing")


def test_a_new_upload_first_clears_then_shows_its_own_result(tmp_path):
    """``show_on_upload``: the upload's change event yields the empty outputs at once, then ``fn``'s result;
    a removed image leaves them empty."""
    from imagezoo.ui import image_upload, show_on_upload

    with gr.Blocks() as demo:
        upload, size = image_upload(label="image"), gr.Markdown()
        show_on_upload(upload, lambda path, scale: f"{Image.open(path).width * scale} px", [size], "", [gr.State(2)],
                       api_name="size")
    (event,) = [fn for fn in demo.fns.values() if fn.name == "<lambda>_on_upload"]
    assert event.targets == [(upload._id, "change")] and event.api_name == "size"
    path = tmp_path / "a.png"
    Image.new("RGB", (5, 3)).save(path)
    assert list(event.fn(str(path), 2)) == ["", "10 px"]
    assert list(event.fn(None, 2)) == [""]
