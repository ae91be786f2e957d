"""Live/dead cell classifier: a Gradio Space.

Tab 1 scores one cell crop. Tab 2 takes a whole slide alone: the cell counter finds
every cell, outlines live ones green and dead ones red, and reports the counts and the
slide's viability. Tab 3 takes a slide plus its Pascal-VOC boxes and scores each box.
The crop classifier is ``$IMAGEZOO_MODEL`` (a Hub id such as ``hf-hub:imagezoo/ldc-live-dead``
or a local folder) and the counter ``$IMAGEZOO_COUNTER_MODEL``, each defaulting to the repo's
trained folder under ``models/`` when present and to its Hub id otherwise.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gradio as gr
import numpy as np

from imagezoo.caching import load_once
from imagezoo.cells import draw_boxes
from imagezoo.data.voc import AnnotationError, read_voc
from imagezoo.images import ImageError, load_image
from imagezoo.inference import ImageClassifier
from imagezoo.predictors import load_predictor
from imagezoo.predictors.cells import CellCounter
from imagezoo.tasks import default_model_id
from imagezoo.ui import SPACE_DELETE_CACHE, image_upload, open_upload, show_on_upload
from imagezoo.viability import score_boxes, viability, viability_percent

HERE = Path(__file__).resolve().parent
MODEL_ID = default_model_id("ldc-live-dead", HERE.parents[1] / "models")
COUNTER_ID = default_model_id("ldc-viability", HERE.parents[1] / "models", env="IMAGEZOO_COUNTER_MODEL")
EXAMPLES = sorted(str(p) for p in (HERE / "examples").glob("*.png"))
SLIDE_EXAMPLES = sorted(str(p) for p in (HERE / "examples" / "slides").glob("*.png"))
CELL_COLUMNS = ["cell", "label", "score", "center_x", "center_y", "xmin", "ymin", "xmax", "ymax"]
#: above this many pixels a slide is counted with one pass of the network, not test-time augmentation's 8:
#: LDC slides are about 0.05 megapixels, and at 8 passes a 4-megapixel photo held the Space's one queue
#: for minutes on 2 CPU cores (a review, 2026-12-03)
TTA_MAX_PIXELS = 1_000_000
DISCLAIMER = (
    "For teaching and exploration only: this model has not been validated for laboratory or clinical "
    "decisions. Its accuracy on the LDC test split is in the model card; your microscope and stain may differ."
)


@load_once
def classifier() -> ImageClassifier:
    return load_predictor(MODEL_ID)


def classify_cell(image: str | None) -> dict[str, float]:
    """Probabilities of ``dead`` and ``live`` for one cell crop."""
    return classifier().predict([open_upload(image, "a cell image")])[0]


@load_once
def counter() -> CellCounter:
    return load_predictor(COUNTER_ID)


@load_once
def one_pass_counter() -> CellCounter:
    """The counter without test-time augmentation (the same network), for slides over :data:`TTA_MAX_PIXELS`."""
    model = counter()
    return dataclasses.replace(model, settings=dataclasses.replace(model.settings, tta=False))


def count_cells(image_path: str | None):
    """Every cell of a slide found, outlined by class, counted; viability and a per-cell table."""
    image = open_upload(image_path, "a slide image")
    large = counter().settings.tta and image.width * image.height > TTA_MAX_PIXELS
    result = (one_pass_counter() if large else counter()).segment(image)
    summary = result.summary
    if summary["viability"] is None:
        text = "**No cell found** on this slide: viability is undefined."
    else:
        text = (
            f"**Viability {viability_percent(summary['n_live'], summary['n_dead'])}**: {summary['n_live']} live (green), "
            f"{summary['n_dead']} dead (red) cells found."
        )
    if large:
        text += (f" Counted with one pass of the network: the mean over 8 flips and turns, which the model card's "
                 f"numbers use, runs on slides up to {TTA_MAX_PIXELS / 1e6:g} megapixels here.")
    table = [
        [cell.label_id, result.cell_label(cell), round(result.cell_score(cell), 3),
         round(cell.centre[0], 1), round(cell.centre[1], 1), *cell.box]
        for cell in result.cells
    ]
    return result.outlined(np.asarray(image)), text, table


def score_slide(image_path: str | None, xml_path: str | None):
    """Every annotated cell of a slide, coloured by the model's answer, plus viability."""
    if not image_path or not xml_path:
        raise gr.Error("Upload both the slide image and its Pascal-VOC XML file.")
    try:
        image = load_image(image_path)
        boxes = read_voc(xml_path, image.size)
    except (ImageError, AnnotationError) as err:
        raise gr.Error(str(err)) from err
    scores = score_boxes(classifier(), image, boxes)
    summary = viability([s.label for s in scores])
    if summary["viability"] is None:
        text = "No annotated cell on this slide."
    else:
        text = (
            f"**Viability {viability_percent(summary['n_live'], summary['n_dead'])}**: {summary['n_live']} live "
            f"(green), {summary['n_dead']} dead (red), of {len(scores)} annotated cells."
        )
    if len(scores) < len(boxes):
        text += f" {len(boxes) - len(scores)} boxes lie outside the image and were not scored."
    return draw_boxes(np.asarray(image), [(s.box, s.label) for s in scores]), text


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Live/dead cells", delete_cache=SPACE_DELETE_CACHE) as demo:
        gr.Markdown(f"# Live or dead? Microscopy cell viability\n\n{DISCLAIMER}\n\nModel: `{MODEL_ID}`")
        with gr.Tab("One cell"):
            with gr.Row():
                cell = image_upload(label="Cell crop")
                probabilities = gr.Label(num_top_classes=2, label="Prediction")
            show_on_upload(cell, classify_cell, [probabilities], None, api_name="classify")
            if EXAMPLES:
                gr.Examples(EXAMPLES, inputs=cell)
        with gr.Tab("Whole image"):
            gr.Markdown(f"No box file needed: the cell counter finds the cells. Model: `{COUNTER_ID}`")
            with gr.Row():
                whole = image_upload(label="Slide image")
                outlined = gr.Image(label="Cells: live green, dead red", format="png")
            counts = gr.Markdown()
            cells = gr.Dataframe(headers=CELL_COLUMNS, label="Cells found", interactive=False)
            show_on_upload(whole, count_cells, [outlined, counts, cells], (None, "", None), api_name="count_cells")
            if SLIDE_EXAMPLES:
                gr.Examples(SLIDE_EXAMPLES, inputs=whole)
        with gr.Tab("Whole slide + VOC boxes"):
            with gr.Row():
                slide = gr.File(label="Slide image", file_types=["image"], type="filepath")
                xml = gr.File(label="Pascal-VOC XML", file_types=[".xml"], type="filepath")
            button = gr.Button("Score all cells", variant="primary")
            annotated = gr.Image(label="Cells: live green, dead red", format="png")
            report = gr.Markdown()
            button.click(score_slide, [slide, xml], [annotated, report], api_name="score_slide")
    return demo


demo = build_demo()

if __name__ == "__main__":
    demo.launch()
