"""Gradio pieces every Space shares (imported by the Spaces only: the library does not need Gradio)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import gradio as gr
from gradio.context import get_blocks_context
from gradio.data_classes import ImageData
from PIL import Image

from imagezoo.images import ImageError, load_image


def image_upload(label: str, **kwargs) -> gr.Image:
    """An image upload that hands the app the user's own file, and says why a file is not an image.

    ``type="filepath"`` with ``image_mode=None``: Gradio's default conversion to RGB would clip a 16-bit
    image to white and drop alpha before :mod:`imagezoo.images` normalises it as training did. Gradio opens
    every upload with Pillow first, and a file Pillow cannot open (text, an empty file, a decompression
    bomb) failed there with an unexplained "Error"; it now gets :func:`~imagezoo.images.load_image`'s
    message, the batch job's for the same file. The component's own ``preprocess`` is wrapped, not
    subclassed: the front end knows only Gradio's components by name.
    """
    upload = gr.Image(type="filepath", image_mode=None, label=label, **kwargs)
    gradio_preprocess = upload.preprocess

    def preprocess(payload: ImageData | None) -> str | None:
        try:
            return gradio_preprocess(payload)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as gradio_error:
            name = payload.orig_name or Path(payload.path).name
            try:
                load_image(payload.path, name=name)
            except ImageError as error:
                raise gr.Error(str(error)) from gradio_error
            return payload.path  # Pillow's lazy open failed where our decoder does not

    upload.preprocess = preprocess
    return upload


def forget_on_new_upload(upload: gr.Image, empty: Callable[[], tuple], outputs: Sequence, events: Sequence) -> None:
    """A new or cleared ``upload`` sets ``outputs`` (session state included) to ``empty()`` and cancels
    ``events`` still queued or running on the old image, so nothing shown or kept describes an image no
    longer there.

    Gradio's cancel can lose the race with an event about to finish, whose result then lands after the
    clearing; so the clearing joins the events' concurrency group and queues behind them. ``events`` (what
    ``.click`` and friends return, inside the same ``gr.Blocks``) must share one group: ``concurrency_id=``
    the same name on each.
    """
    registered = get_blocks_context().fns  # the events' settings, as Gradio's own `cancels` looks them up
    groups = {registered[event["id"]].concurrency_id for event in events}
    if len(groups) != 1:
        raise ValueError(f"the events a new upload cancels must share one concurrency_id, not {sorted(groups)}")
    upload.change(empty, None, list(outputs), api_name=False, cancels=list(events), concurrency_id=groups.pop())
