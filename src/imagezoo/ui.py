"""Gradio pieces every Space shares (imported by the Spaces only: the library does not need Gradio)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import gradio as gr
from gradio.data_classes import ImageData
from PIL import Image

from imagezoo.images import ImageError, load_image

#: every Space's ``gr.Blocks(delete_cache=...)``: uploads and outputs in Gradio's cache older than
#: 10 minutes are deleted every 10 minutes, so a long-running Space does not fill its disk
SPACE_DELETE_CACHE = (600, 600)


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


def open_upload(path: str | None, what: str) -> Image.Image:
    """An upload as RGB, or a ``gr.Error`` the user can act on: nothing uploaded yet ("Upload ``what``
    first.") or :func:`~imagezoo.images.load_image`'s reason the file is not an image."""
    if not path:
        raise gr.Error(f"Upload {what} first.")
    try:
        return load_image(path)
    except ImageError as err:
        raise gr.Error(str(err)) from err


def show_on_upload(upload: gr.Image, fn: Callable[..., Any], outputs: Sequence, empty: Any, inputs: Sequence = (),
                   **event: Any) -> None:
    """``fn(image, *inputs)`` shown in ``outputs`` as each new image lands, the outputs first set to ``empty``
    so that nothing shown (or kept in a ``gr.State``) describes an image no longer there; a removed image
    leaves them empty. ``event`` goes to Gradio's ``change`` (``api_name``, ``concurrency_id``).

    The upload's own change event, not a button: a button clicked while the file was still uploading sent
    its request first, and a clearing on the change that followed wiped the new result
    (docs/experiments/brain-mri.md).
    """
    def on_upload(image: str | None, *values: Any):
        yield empty
        if image:
            yield fn(image, *values)

    on_upload.__name__ = f"{fn.__name__}_on_upload"  # Gradio names the event after it
    upload.change(on_upload, [upload, *inputs], list(outputs), **event)
