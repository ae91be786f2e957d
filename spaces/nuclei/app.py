"""Nuclei segmentation: a Gradio Space.

Upload a microscopy image (fluorescence, bright-field or H&E): every nucleus is found,
separated from its neighbours, counted and shown in its own colour. The threshold slider
re-runs only the post-processing (the network's probabilities are kept per session), and
the label image (16-bit PNG) and the per-nucleus table (CSV) can be downloaded for Fiji or
CellProfiler. The model is ``$IMAGEZOO_MODEL`` (a Hub id such as ``hf-hub:imagezoo/nuclei-unet``
or a local folder), defaulting to the repo's ``models/nuclei-unet`` when present.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np

from imagezoo.caching import load_once
from imagezoo.instances import overlay
from imagezoo.predictors import load_predictor
from imagezoo.predictors.segmenter import (
    MAX_LABEL,
    InstanceSegmenter,
    Segmentation,
    write_label_image,
    write_objects_csv,
)
from imagezoo.tasks import default_model_id
from imagezoo.ui import SPACE_DELETE_CACHE, image_upload, open_upload, show_on_upload

HERE = Path(__file__).resolve().parent
MODEL_ID = default_model_id("nuclei-unet", HERE.parents[1] / "models")
EXAMPLES = sorted(str(p) for p in (HERE / "examples").glob("*.png"))
DISCLAIMER = (
    "For teaching and exploration only: not validated for laboratory or clinical decisions. "
    "The model card reports its measured accuracy per image type; check it on images of your own first."
)
#: our label images and tables; folders are deleted after SPACE_DELETE_CACHE's age, as Gradio's cache is
SCRATCH = Path(tempfile.mkdtemp(prefix="nuclei-space-"))
#: a session's image and probabilities (float32, 16 bytes a pixel with the image) are kept this long after its
#: last segmentation for the slider; unbounded, a 50-megapixel upload's 800 MB outlived the visit
STATE_SECONDS = 1800


def download_folder() -> Path:
    """A new folder for one render's files; folders older than ``SPACE_DELETE_CACHE`` go (Gradio has copied them)."""
    for old in SCRATCH.iterdir():
        with contextlib.suppress(OSError):  # another render may be deleting it too
            if time.time() - old.stat().st_mtime > SPACE_DELETE_CACHE[1]:
                shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=SCRATCH))


@load_once
def segmenter() -> InstanceSegmenter:
    return load_predictor(MODEL_ID)


def render(name: str, image: np.ndarray, probabilities: np.ndarray, threshold: float):
    """Overlay, summary and downloadable files (named after the upload ``name``) for one threshold."""
    result = Segmentation(segmenter().instances(probabilities, threshold=threshold), probabilities)
    folder = download_folder()
    label_png, table_csv = folder / f"{name}.labels.png", folder / f"{name}.objects.csv"
    write_objects_csv(table_csv, name, result.labels, image)
    count = f"{result.n_objects} nucleus" if result.n_objects == 1 else f"{result.n_objects} nuclei"
    text = f"**{count}** (threshold {threshold:.2f}); foreground {result.foreground_fraction:.1%} of the image."
    if result.n_objects > MAX_LABEL:
        text += f" No label image: a 16-bit PNG numbers at most {MAX_LABEL:,} objects (the table lists every one)."
        return overlay(image, result.labels), text, [str(table_csv)]
    write_label_image(label_png, result.labels)
    return overlay(image, result.labels), text, [str(label_png), str(table_csv)]


def segment(image_path: str | None, threshold: float):
    """Segment an upload; keep its name, image and probabilities in the session for the slider."""
    picture = open_upload(image_path, "a microscopy image")
    state = Path(image_path).stem, np.asarray(picture), segmenter().probabilities(picture)
    return *render(*state, threshold), state


def rethreshold(threshold: float, state):
    """Re-run only the post-processing at a new threshold."""
    if state is None:
        raise gr.Error(f"Upload a microscopy image first (a segmentation is kept {STATE_SECONDS // 60} minutes).")
    return *render(*state, threshold), state


#: the outputs before an image is segmented: no overlay, count or downloads, no probabilities for the slider
NO_SEGMENTATION = (None, "", None, None)


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Nuclei segmentation", delete_cache=SPACE_DELETE_CACHE) as demo:
        gr.Markdown(f"# Find and count cell nuclei\n\n{DISCLAIMER}\n\nModel: `{MODEL_ID}`")
        state = gr.State(None, time_to_live=STATE_SECONDS)
        with gr.Row():
            upload = image_upload(label="Microscopy image")
            result = gr.Image(label="Nuclei (one colour each)", format="png")
        threshold = gr.Slider(0.05, 0.95, value=segmenter().settings.threshold, step=0.05, label="Foreground threshold")
        summary = gr.Markdown()
        files = gr.File(label="Label image (16-bit PNG) and per-nucleus table (CSV)", file_count="multiple")
        outputs = [result, summary, files, state]
        # one queue: a slider moved during a segmentation re-renders the session's probabilities once they
        # are the new image's (Gradio reads a gr.State when the event runs, not when it is sent)
        show_on_upload(upload, segment, outputs, NO_SEGMENTATION, [threshold], api_name="segment", concurrency_id="segment")
        # always_last: a release while the last one waits in the queue is run after it, not dropped (Gradio's
        # default for release, "once", left the slider at one value and the results at another)
        threshold.release(rethreshold, [threshold, state], outputs, api_name="rethreshold", concurrency_id="segment",
                          trigger_mode="always_last")
        if EXAMPLES:
            gr.Examples(EXAMPLES, inputs=upload)
    return demo


demo = build_demo()

if __name__ == "__main__":
    demo.launch()
