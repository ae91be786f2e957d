"""Cat, dog or neither: a Gradio Space with an upload tab and a live webcam tab.

The model answers ``neither`` itself (a class it was trained on), so the webcam pointed at a
wall, a face or a chart stays ``neither``. The webcam tab streams frames downscaled in the
browser (320x240 camera constraints) every ``STREAM_EVERY`` seconds through Gradio's own
streaming; each reply carries the label, its confidence, the server time of that frame and the
frames per second of the session. The model is ``$IMAGEZOO_MODEL`` (a Hub id such as
``hf-hub:imagezoo/cats-dogs`` or a local folder), defaulting to the repo's trained folder
under ``models/`` when present and to its Hub id otherwise; it runs on the runtime its card
chose (ONNX when that was as accurate and faster).
"""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from imagezoo.caching import load_once
from imagezoo.inference import ImageClassifier
from imagezoo.predictors import load_predictor
from imagezoo.tasks import default_model_id
from imagezoo.ui import SPACE_DELETE_CACHE, image_upload, open_upload, show_on_upload

HERE = Path(__file__).resolve().parent
MODEL_ID = default_model_id("cats-dogs", HERE.parents[1] / "models")
EXAMPLES = sorted(str(p) for p in (HERE / "examples").glob("*.jpg"))
STREAM_EVERY = 0.1  # seconds between frames the browser sends
#: a stream holds one of STREAMS slots for its whole session (a frame costs about 21 ms on 2 cores), so a
#: session ends after STREAM_SECONDS: with 10 minutes, a fifth viewer of 4 slots waited up to 10 minutes
STREAMS, STREAM_SECONDS = 8, 120
CAMERA = {"video": {"width": {"ideal": 320}, "height": {"ideal": 240}}}  # downscaled before sending
NOTICE = (
    "A demo model: it knows cats and dogs from one public photo set and answers *neither* for anything "
    "else. Its measured accuracy and refusal rates per kind of image are in the model card."
)


@load_once
def classifier() -> ImageClassifier:
    return load_predictor(MODEL_ID)


def classify(image: str | Image.Image | None) -> dict[str, float]:
    """``{label: probability}`` for one uploaded photo."""
    return classifier().predict([open_upload(image, "a photo")])[0]


def classify_frame(frame: np.ndarray | None, session: dict | None):
    """One webcam frame -> (probabilities, status line, session state with the frame times)."""
    session = session or {"times": []}
    if frame is None:
        return None, "waiting for the camera...", session
    start = time.perf_counter()
    probs = classifier().predict([Image.fromarray(frame)])[0]
    server_ms = (time.perf_counter() - start) * 1000
    now = time.time()
    times = [t for t in session["times"] if now - t < 2.0] + [now]  # the last two seconds
    fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    label = max(probs, key=probs.get)
    status = (f"{label} ({probs[label]:.0%}) - {fps:.1f} frames/s - {server_ms:.0f} ms on the server "
              f"for a {frame.shape[1]}x{frame.shape[0]} frame")
    return probs, status, {"times": times}


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Cat, dog or neither", delete_cache=SPACE_DELETE_CACHE) as demo:
        gr.Markdown(f"# Cat, dog or neither\n{NOTICE}")
        with gr.Tab("Photo"):
            with gr.Row():
                photo = image_upload(label="Photo")
                verdict = gr.Label(num_top_classes=3, label="Prediction")
            show_on_upload(photo, classify, [verdict], None, api_name="classify")
            if EXAMPLES:
                gr.Examples(EXAMPLES, inputs=photo)
        with gr.Tab("Webcam"):
            gr.Markdown(f"Allow the camera, then press record: every frame is classified as it arrives. A session "
                        f"streams for up to {STREAM_SECONDS // 60} minutes, so that others get their turn: press "
                        "record again to go on.")
            with gr.Row():
                camera = gr.Image(
                    sources=["webcam"], streaming=True, type="numpy", label="Camera",
                    webcam_options=gr.WebcamOptions(mirror=True, constraints=CAMERA), elem_id="camera",
                )
                with gr.Column():
                    live = gr.Label(num_top_classes=3, label="Live prediction", elem_id="live-label")
                    status = gr.Textbox(label="Status", elem_id="live-status", interactive=False)
            session = gr.State()
            camera.stream(
                classify_frame, [camera, session], [live, status, session],
                stream_every=STREAM_EVERY, concurrency_limit=STREAMS, time_limit=STREAM_SECONDS,
                api_name="classify_frame",
            )
    return demo


demo = build_demo()

if __name__ == "__main__":
    demo.launch()
