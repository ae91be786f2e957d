"""Nuclei U-Nets (segmentation-models-pytorch) on our ImageNet encoders: build, save, load, predict.

Serving code: the batch job, the Space and evaluation all call :func:`predict_probabilities`,
so every path pads, tiles and blends alike. smp and MONAI take seconds to import and are
imported where they are used; a folder holds smp's own format (``config.json`` +
``model.safetensors``) with our settings under ``config.json["_imagezoo"]``, so
``smp.from_pretrained(folder)`` loads it without imagezoo.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import timm
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from torch import nn

from imagezoo.instances import postprocess
from imagezoo.predictors.base import CONFIG_KEY, WEIGHTS_NAME, resolve_model_folder
from imagezoo.weights import create_pretrained

if TYPE_CHECKING:
    import segmentation_models_pytorch as smp


@dataclass(frozen=True)
class SegmenterConfig:
    """What serving needs beyond the network: input normalisation, tiling and post-processing.

    ``channels`` name the network's outputs: ``body`` (nucleus foreground) and ``border``
    (nucleus boundaries and contacts); the watershed grows body-minus-border seeds. A cell
    counter's are its classes, then optionally ``centre`` (:mod:`imagezoo.cells`).
    ``threshold`` and ``min_size`` are the post-processing settings tuned on validation.
    ``percentiles``: each image's intensities are stretched so these percentiles become 0 and
    255 before ``mean``/``std`` (``None``: not stretched), as CSBDeep and Cellpose do, so a dim
    fluorescence image reaches the network with the contrast of a bright one.
    """

    predictor: str = "segmenter"
    channels: tuple[str, ...] = ("body", "border")
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    threshold: float = 0.5
    min_size: int = 10
    postprocess: str = "watershed-border"
    tile_size: int = 1024  # larger images go through overlapping tiles
    tile_overlap: float = 0.5
    stride: int = 32  # the encoder's total downsampling: inputs are padded to a multiple of it
    percentiles: tuple[float, float] | None = None
    classifier: str | None = None  # cell counters: a crop classifier folder, inside the model's, that labels each object
    border_min_size: int | None = None  # cell counters: objects touching the image edge need this many pixels
    min_probability: tuple[str, float] | None = None  # cell counters: (label, p): call a cell that label only at p or more
    scale: float | None = None  # images are resized by this factor for the network, probabilities back (None: 1)
    tta: bool = False  # average the maps of the 8 flips and right-angle turns of each image (8x the network's time)

    @classmethod
    def from_dict(cls, values: dict) -> "SegmenterConfig":
        """From ``config.json`` (JSON turns tuples into lists)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def instances(self, probabilities: np.ndarray) -> np.ndarray:
        """Instance labels of (body, border) probabilities under these settings: the one call that
        serving, tuning and evaluation share, so what is scored is what is served."""
        return postprocess(self.postprocess, probabilities, threshold=self.threshold, min_size=self.min_size)


def stretch_contrast(image: np.ndarray, percentiles: tuple[float, float] | None) -> np.ndarray:
    """uint8 ``image`` with its ``percentiles`` (low, high) of all pixels and channels mapped to
    0 and 255 and clipped; colour ratios are kept. Unchanged when ``None`` or flat."""
    if percentiles is None:
        return image
    low, high = np.percentile(image, percentiles)
    if high - low < 1:
        return image
    scaled = (image.astype(np.float32) - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


def encoder_normalization(encoder: str) -> dict[str, tuple[float, ...]]:
    """``mean`` and ``std`` the timm ``encoder`` was pretrained with (0.5/0.5 for tf_ EfficientNet-Lite)."""
    cfg = timm.get_pretrained_cfg(encoder.removeprefix("tu-"))
    return dict(mean=tuple(cfg.mean), std=tuple(cfg.std))


def load_encoder_weights(model: "smp.Unet", encoder: str) -> None:
    """Copy ImageNet weights into ``model.encoder.model``; every encoder tensor must be filled.

    The weights come from the whole classifier (``create_pretrained``: the Hub, else our
    offline copy), which timm loads strictly; timm's own ``features_only`` loading is
    non-strict and would skip a misnamed tensor silently.
    """
    state = create_pretrained(encoder).state_dict()
    missing, _ = model.encoder.model.load_state_dict(state, strict=False)  # the rest is the classifier head
    if missing:
        raise RuntimeError(f"ImageNet weights of {encoder} lack {len(missing)} encoder tensors: {missing[:5]}")


def build_unet(encoder: str, pretrained: bool = True, **unet_kwargs) -> "smp.Unet":
    """An smp ``Unet`` on the timm ``encoder`` (``tf_efficientnet_lite0`` or ``tu-tf_efficientnet_lite0``).

    Built with ``encoder_weights=None`` so that its saved config never asks the Hub;
    ``pretrained`` copies the ImageNet weights in afterwards. ``unet_kwargs`` go to
    ``smp.Unet`` (``classes``, ``decoder_channels``...).
    """
    import segmentation_models_pytorch as smp

    encoder = encoder.removeprefix("tu-")
    model = smp.Unet(f"tu-{encoder}", encoder_weights=None, **unet_kwargs)
    if pretrained:
        load_encoder_weights(model, encoder)
    return model


def load_unet_weights(model: "smp.Unet", model_id: str) -> None:
    """Start ``model`` from a trained U-Net's safetensors (folder or ``hf-hub:`` id), to fine-tune it.

    Strict: the encoder, decoder widths and outputs must be the saved model's.
    """
    folder, _ = resolve_model_folder(model_id)
    model.load_state_dict(load_file(folder / WEIGHTS_NAME), strict=True)


def save_unet(model: "smp.Unet", config: SegmenterConfig, folder: str | Path, card: ModelCard | None = None) -> Path:
    """smp's ``save_pretrained`` with ``config`` stored as ``config.json["_imagezoo"]``, and our card.

    smp itself adds ``_model_class`` to the config the same way; keys starting with ``_``
    are dropped before they reach ``smp.Unet``.
    """
    folder = Path(folder)
    model.config[CONFIG_KEY] = asdict(config)
    try:
        model.save_pretrained(folder)
    finally:
        model.config.pop(CONFIG_KEY, None)
    if card is not None:
        card.save(folder / "README.md")  # replaces smp's generic card
    return folder


def load_unet(folder: str | Path) -> tuple[nn.Module, SegmenterConfig]:
    """A saved U-Net in eval mode and its settings; only safetensors weights are ever read."""
    import segmentation_models_pytorch as smp

    folder = Path(folder)
    if not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} (pickled checkpoints are never loaded)")
    settings = json.loads((folder / "config.json").read_text()).get(CONFIG_KEY)
    if settings is None:
        raise ValueError(f"{folder}/config.json has no {CONFIG_KEY!r} settings; save the model with save_unet")
    model = smp.from_pretrained(str(folder)).eval().to(memory_format=torch.channels_last)  # faster on a CPU
    return model, SegmenterConfig.from_dict(settings)


def rescale(images: np.ndarray, scale: float | None, nearest: bool = False) -> np.ndarray:
    """uint8 (B, H, W, C) images resized by ``scale`` (bilinear; ``nearest`` for targets), as training
    and serving both resize for a model with ``SegmenterConfig.scale``; unchanged when ``None`` or 1."""
    if not scale or scale == 1:
        return images
    size = (max(1, round(images.shape[1] * scale)), max(1, round(images.shape[2] * scale)))  # a 1-px side stays 1 px
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    if nearest:
        x = F.interpolate(x, size=size, mode="nearest-exact")
    else:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return x.round_().clamp_(0, 255).byte().permute(0, 2, 3, 1).numpy()


def _as_batch(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 (B, H, W, 3) from RGB arrays (H, W, 3) / (B, H, W, 3) or tensors (3, H, W) / (B, 3, H, W)."""
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
        images = np.moveaxis(images, -3, -1)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images, got {images.dtype} {images.shape}")
    return images if images.ndim == 4 else images[None]


def d4_mean(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The mean sigmoid maps of ``x`` seen in the 8 orientations of the square's symmetry group (D4:
    4 right-angle turns, each mirrored or not), each map turned back; microscopy has no up, and the
    network was trained on all eight (``train_transform``). Inputs padded to the stride stay so turned."""
    total = 0
    for turns in range(4):
        for mirror in (False, True):
            view = torch.rot90(x, turns, dims=(2, 3))
            view = view.flip(3) if mirror else view
            maps = model(view).sigmoid()
            maps = maps.flip(3) if mirror else maps
            total = total + torch.rot90(maps, -turns, dims=(2, 3))
    return total / 8


@torch.inference_mode()
def predict_probabilities_batch(model: nn.Module, images: np.ndarray | torch.Tensor, config: SegmenterConfig) -> np.ndarray:
    """Sigmoid maps, float32 (B, channels, H, W), for same-sized uint8 RGB images of any size.

    Each image is contrast-stretched (``config.percentiles``, over the whole image, so tiles
    agree), resized by ``config.scale`` (the maps come back at the image's size), mirrored at
    the bottom/right edge up to a multiple of ``config.stride`` and cropped back. Images up to
    ``tile_size`` go through the network whole; larger ones in tiles of ``tile_size`` (or the
    padded side, where it is shorter) overlapping by ``tile_overlap``, blended with a Gaussian that
    down-weights tile borders, where the network sees least context. With ``config.tta`` every
    forward pass is :func:`d4_mean`'s eight.
    """
    batch = np.stack([stretch_contrast(image, config.percentiles) for image in _as_batch(images)])
    original_size = batch.shape[1:3]
    batch = rescale(batch, config.scale)
    height, width = batch.shape[1:3]
    padded_height = height + (-height) % config.stride
    padded_width = width + (-width) % config.stride
    # numpy's reflect handles pads wider than the image (torch's does not)
    batch = np.pad(batch, ((0, 0), (0, padded_height - height), (0, padded_width - width), (0, 0)), mode="reflect")
    device = next(model.parameters()).device
    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255)  # channels-last, as the model
    mean = torch.tensor(config.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, -1, 1, 1)
    x = (x - mean) / std
    model.eval()
    forward = partial(d4_mean, model) if config.tta else lambda batch: model(batch).sigmoid()
    if max(height, width) > config.tile_size:
        from monai.inferers import sliding_window_inference

        # a side shorter than a tile is not padded up to one: a 16 x 60000 strip stays a strip
        tile = (min(config.tile_size, padded_height), min(config.tile_size, padded_width))
        probs = sliding_window_inference(
            x, tile, sw_batch_size=1, predictor=forward, overlap=config.tile_overlap, mode="gaussian",
        )
    else:
        probs = forward(x)
    probs = probs[:, :, :height, :width].float()
    if (height, width) != original_size:  # back to the image's pixels: post-processing sizes stay in them
        probs = F.interpolate(probs, size=original_size, mode="area" if config.scale > 1 else "bilinear")
    return probs.cpu().numpy()


def predict_probabilities(model: nn.Module, image: np.ndarray | torch.Tensor, config: SegmenterConfig) -> np.ndarray:
    """Sigmoid maps, float32 (channels, H, W), for one uint8 RGB image: (H, W, 3) array or (3, H, W) tensor."""
    return predict_probabilities_batch(model, image, config)[0]
