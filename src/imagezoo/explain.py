"""What a classifier looked at: Grad-CAM heat-maps and the feature maps of a chosen layer.

Grad-CAM comes from pytorch-grad-cam; it needs gradients, so it runs outside
``inference_mode`` on the torch model (never the ONNX runner). Layers are named as timm's
``feature_info`` names them (``blocks.0`` ... ``blocks.6`` for EfficientNet), which is also
where the default Grad-CAM target, the last stage, comes from.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from imagezoo.images import ImageSource, load_image
from imagezoo.inference import ImageClassifier


def feature_layers(classifier: ImageClassifier) -> list[str]:
    """Names of the model's feature stages, shallow to deep (timm's ``feature_info``)."""
    return [info["module"] for info in classifier.model.feature_info]


def _module(classifier: ImageClassifier, layer: str | None) -> torch.nn.Module:
    layers = feature_layers(classifier)
    layer = layer or layers[-1]
    if layer not in layers:
        raise ValueError(f"unknown layer {layer!r}; known: {layers}")
    return classifier.model.get_submodule(layer)


def grad_cam(
    classifier: ImageClassifier, image: ImageSource, target: str | None = None, layer: str | None = None,
    max_side: int | None = None,
) -> tuple[np.ndarray, str]:
    """Grad-CAM heat-map in [0, 1] at the image's own size (H, W), or shrunk to at most ``max_side`` pixels
    a side, for class ``target`` (default: the predicted one) at ``layer`` (default: the last stage); returns
    it with the class. The map is computed at the network's input size, so shrinking it loses nothing an
    :func:`overlay` shows (pass :data:`OVERLAY_MAX_SIDE`), and a 7000x7000 photo's map is 1024 px, not 196 MB."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    image = load_image(image)
    batch = classifier.preprocess(image).unsqueeze(0)
    if target is None:
        target = classifier.label_names[int(classifier.predict_tensor(batch).argmax())]
    if target not in classifier.label_names:
        raise ValueError(f"unknown class {target!r}; known: {list(classifier.label_names)}")
    with torch.inference_mode(False), torch.enable_grad():
        with GradCAM(classifier.model, [_module(classifier, layer)]) as cam:
            heat = cam(batch.clone(), targets=[ClassifierOutputTarget(classifier.label_names.index(target))])[0]
    size = image.size
    if max_side is not None and max(size) > max_side:
        size = tuple(max(1, round(side * max_side / max(size))) for side in size)
    resized = Image.fromarray(np.float32(heat)).resize(size, Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized), 0, 1), target


#: an overlay is for the eye: drawn at most this many pixels wide or high (the colour map of a 50-megapixel
#: heat-map alone would take 1.6 GB)
OVERLAY_MAX_SIDE = 1024


def overlay(image: ImageSource, heat: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """``heat`` (H, W in [0, 1]) drawn over ``image`` with the jet colour map, at the image's size or
    shrunk to :data:`OVERLAY_MAX_SIDE`."""
    image = load_image(image).copy()
    image.thumbnail((OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE))
    heat = np.asarray(Image.fromarray(np.float32(heat)).resize(image.size, Image.Resampling.BILINEAR))
    colours = (colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255).astype(np.uint8)
    return Image.blend(image, Image.fromarray(colours), alpha)


def feature_maps(
    classifier: ImageClassifier, image: ImageSource, layer: str, n: int = 16, tile: int = 96
) -> Image.Image:
    """The ``n`` most active channels of ``layer`` for ``image``, each min-max scaled, as a grey grid."""
    module = _module(classifier, layer)
    captured = {}
    handle = module.register_forward_hook(lambda _module, _inputs, output: captured.setdefault("maps", output))
    try:
        _torch_forward(classifier, image)
    finally:
        handle.remove()
    maps = captured["maps"][0].float()
    top = maps.mean(dim=(1, 2)).argsort(descending=True)[:n]
    columns = int(np.ceil(np.sqrt(len(top))))
    rows = int(np.ceil(len(top) / columns))
    grid = Image.new("L", (columns * tile, rows * tile), 255)
    for k, channel in enumerate(top.tolist()):
        values = maps[channel].numpy()
        scaled = (values - values.min()) / max(float(np.ptp(values)), 1e-6)
        cell = Image.fromarray((scaled * 255).astype(np.uint8)).resize((tile - 2, tile - 2), Image.Resampling.NEAREST)
        grid.paste(cell, ((k % columns) * tile + 1, (k // columns) * tile + 1))
    return grid


@torch.inference_mode()
def _torch_forward(classifier: ImageClassifier, image: ImageSource) -> None:
    """Run the torch model (hooks see its layers even when the classifier serves through ONNX)."""
    classifier.model(classifier.preprocess(image).unsqueeze(0).contiguous(memory_format=torch.channels_last))
