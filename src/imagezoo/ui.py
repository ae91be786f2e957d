"""Gradio pieces every Space shares (imported by the Spaces only: the library does not need Gradio)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio.data_classes import ImageData
from PIL import Image

from imagezoo.images import ImageError, load_image


class ImageUpload(gr.Image):
    """An image upload that hands the app the user's own file, and says why a file is not an image.

    ``type="filepath"`` with ``image_mode=None``: Gradio's default conversion to RGB would clip a 16-bit
    image to white and drop alpha before :mod:`imagezoo.images` normalises it as training did. Gradio opens
    every upload with Pillow first, and a file Pillow cannot open (text, an empty or cut-short file, a
    decompression bomb) failed there with an unexplained "Error"; it now gets
    :func:`~imagezoo.images.load_image`'s message, the batch job's for the same file.
    """

    is_template = True  # served by gr.Image's front end

    def __init__(self, label: str, **kwargs):
        super().__init__(type="filepath", image_mode=None, label=label, **kwargs)

    def preprocess(self, payload: ImageData | None) -> str | None:
        try:
            return super().preprocess(payload)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as gradio_error:
            name = payload.orig_name or Path(payload.path).name
            try:
                load_image(payload.path, name=name)
            except ImageError as error:
                raise gr.Error(str(error)) from gradio_error
            return payload.path  # Pillow's lazy open failed where our decoder does not
