"""Load an exported classifier (local folder or ``hf-hub:`` id) and score images with it.

Weights are read only from ``model.safetensors``: a repo or folder holding just a
pickled checkpoint is refused rather than unpickled. The preprocessing comes from the
model's own ``config.json``, so the Space, the batch job and user code all see the
exact input the model was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import timm
import torch
from huggingface_hub import snapshot_download
from safetensors.torch import load_file
from timm.data import create_transform, resolve_data_config
from torch import nn

import imagezoo  # noqa: F401  (registers imagezoo architectures with timm)
from imagezoo.images import ImageSource, file_sha256, load_image

WEIGHTS_NAME = "model.safetensors"
HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"


def resolve_model_folder(model_id: str, revision: str | None = None) -> tuple[Path, str]:
    """Local folder holding ``config.json`` + ``model.safetensors``, and its revision.

    ``model_id`` is ``hf-hub:ORG/NAME``, ``local-dir:PATH`` or a plain path. For the Hub
    the revision is the commit hash; for a folder, the first 12 hex digits of the
    weights' SHA-256 (so two runs with different weights never share a revision).
    """
    if model_id.startswith(HUB_PREFIX):
        folder = Path(
            snapshot_download(
                model_id[len(HUB_PREFIX):], revision=revision, allow_patterns=["config.json", WEIGHTS_NAME, "*.md"]
            )
        )
    else:
        folder = Path(model_id.removeprefix(LOCAL_PREFIX))
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{model_id}: no config.json; expected a model folder in timm's Hub format")
    if not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{model_id}: no {WEIGHTS_NAME} (only safetensors weights are loaded)")
    if model_id.startswith(HUB_PREFIX):
        return folder, folder.name
    return folder, file_sha256(folder / WEIGHTS_NAME)[:12]


@dataclass
class ImageClassifier:
    """A timm classifier plus its labels, preprocessing, provenance and full ``config.json``."""

    model: nn.Module
    label_names: tuple[str, ...]
    data_config: dict
    model_id: str
    revision: str
    config: dict

    @classmethod
    def from_pretrained(cls, model_id: str, revision: str | None = None) -> "ImageClassifier":
        folder, resolved_revision = resolve_model_folder(model_id, revision)
        config = json.loads((folder / "config.json").read_text())
        model = timm.create_model(f"{LOCAL_PREFIX}{folder}", pretrained=False)
        model.load_state_dict(load_file(folder / WEIGHTS_NAME), strict=True)
        # channels-last convolutions are ~1.4x faster on CPU for these networks; outputs are unchanged
        model.to(memory_format=torch.channels_last).eval()
        label_names = config.get("label_names") or [str(i) for i in range(config["num_classes"])]
        if isinstance(label_names, dict):
            label_names = [label_names[str(i)] for i in range(config["num_classes"])]
        data_config = resolve_data_config({}, model=model)
        return cls(model, tuple(label_names), data_config, model_id, resolved_revision, config)

    @property
    def transform(self):
        return create_transform(**self.data_config)

    @property
    def uint8_transform(self):
        """The same resize/crop as :attr:`transform` but stopping at a uint8 tensor (timm's prefetcher
        convention): 4x less to move between processes; :meth:`normalize` finishes a whole batch."""
        return create_transform(**self.data_config, use_prefetcher=True)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) from :attr:`uint8_transform` -> the float input :attr:`transform` gives."""
        mean = torch.tensor(self.data_config["mean"]).view(1, -1, 1, 1) * 255
        std = torch.tensor(self.data_config["std"]).view(1, -1, 1, 1) * 255
        return (batch.float() - mean) / std

    def preprocess(self, image: ImageSource) -> torch.Tensor:
        """Decode (any mode, any source) and transform one image to a model input tensor."""
        return self.transform(load_image(image))

    @torch.inference_mode()
    def predict_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Class probabilities, shape (batch, n_classes), for already preprocessed inputs."""
        batch = batch.contiguous(memory_format=torch.channels_last)
        return self.model(batch).softmax(dim=-1).float().numpy()

    def predict_images(self, images: Sequence[ImageSource], batch_size: int = 256) -> np.ndarray:
        """Class probabilities, shape (n, n_classes), for many images in batches."""
        transform = self.transform
        return np.concatenate([
            self.predict_tensor(torch.stack([transform(load_image(im)) for im in images[i:i + batch_size]]))
            for i in range(0, len(images), batch_size)
        ])

    def predict(self, images: Sequence[ImageSource]) -> list[dict[str, float]]:
        """``{label: probability}`` for each image."""
        transform = self.transform
        batch = torch.stack([transform(load_image(image)) for image in images])
        return [dict(zip(self.label_names, map(float, row))) for row in self.predict_tensor(batch)]
