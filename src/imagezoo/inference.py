"""Load an exported classifier (local folder or ``hf-hub:`` id) and score images with it.

Weights are read only from ``model.safetensors``: a repo or folder holding just a
pickled checkpoint is refused rather than unpickled. The preprocessing comes from the
model's own ``config.json``, so the Space, the batch job and user code all see the
exact input the model was trained on. :class:`ImageClassifier` is the ``"classifier"``
:class:`~imagezoo.predictors.Predictor`: whole images, or one crop per box of a
Pascal-VOC file (``--boxes voc``) with a per-image viability summary for live/dead models.
A folder may also carry ONNX exports (served when ``config.json`` names one as ``runtime``) and
an open-set backstop (``backstop``: the pretrained ImageNet head, a Mahalanobis distance, or both vetoing
together, that can veto a known class; :mod:`imagezoo.open_set`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from timm.data import create_transform, resolve_data_config
from timm.data.transforms import MaybePILToTensor
from torch import nn
from torchvision.transforms import CenterCrop, Resize, v2

import imagezoo  # noqa: F401  (registers imagezoo architectures with timm)
from imagezoo.data.voc import cell_inputs, clip_boxes, read_voc, voc_sibling
from imagezoo.export import RUNTIME_FILES, RUNTIMES, OnnxRunner
from imagezoo.images import ImageSource, load_image
from imagezoo.open_set import load_backstop, served_network
from imagezoo.predictors.base import (
    LOCAL_PREFIX,
    WEIGHTS_NAME,
    Item,
    JobOptions,
    Predictor,
    prob_column,
    register_predictor,
)
from imagezoo.tasks import CELL_CROP_CONTEXT, DEAD, DECISIVE_KEY, LIVE
from imagezoo.viability import viability

BOX_MODES = ("voc",)

#: timm's eval steps -> torchvision v2 steps with the same parameters. v2 resizes uint8 tensors with
#: SIMD kernels: ~4x faster than Pillow's bicubic on a 220 px slide, within one grey level of it.
TENSOR_STEPS = {
    Resize: lambda step: v2.Resize(step.size, step.interpolation, step.max_size, antialias=True),
    CenterCrop: lambda step: v2.CenterCrop(step.size),
}


def uint8_eval_transform(data_config: dict) -> Callable[[Image.Image], torch.Tensor]:
    """timm's eval resize/crop for ``data_config``, PIL image -> uint8 (C, H, W) tensor.

    Runs on tensors (see :data:`TENSOR_STEPS`) when every step has a v2 twin, else with timm's
    own PIL steps. Stops before normalisation (timm's prefetcher convention) so workers hand over
    4x fewer bytes and a whole batch is normalised at once.
    """
    steps = create_transform(**data_config, use_prefetcher=True).transforms
    steps = [step for step in steps if not isinstance(step, MaybePILToTensor)]
    if all(type(step) in TENSOR_STEPS for step in steps):
        return v2.Compose([v2.PILToTensor(), *(TENSOR_STEPS[type(step)](step) for step in steps)])
    return v2.Compose([*steps, v2.PILToTensor()])


@dataclass(frozen=True)
class Uint8Normalize:
    """uint8 (C, H, W) or (N, C, H, W) -> the model's float input, ``(x - 255 mean) / (255 std)``.

    The one normalisation of every classifier input: serving applies it per batch, training's
    validation and test per image, so a card's numbers come from the floats users' images get.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean).view(-1, 1, 1) * 255
        std = torch.tensor(self.std).view(-1, 1, 1) * 255
        return (pixels.float() - mean) / std


def eval_transform(data_config: dict) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised float (C, H, W): :func:`uint8_eval_transform`, then :class:`Uint8Normalize`."""
    return v2.Compose([
        uint8_eval_transform(data_config),
        Uint8Normalize(tuple(data_config["mean"]), tuple(data_config["std"])),
    ])


@dataclass
class CropPreparer:
    """Worker-side step of the classifier: the whole image, or one crop per VOC box, as uint8 inputs.

    Built from the config alone (cheap to pickle into workers); normalisation happens per
    batch next to the model (:meth:`ImageClassifier.normalize`).
    """

    data_config: dict
    crop_context: float = CELL_CROP_CONTEXT
    boxes: str | None = None
    _transform: object = field(default=None, repr=False)

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        if self._transform is None:
            self._transform = uint8_eval_transform(self.data_config)
        return self._transform

    def __call__(self, image: Image.Image, path: Path, item: Item) -> None:
        sidecar = voc_sibling(path) if self.boxes == "voc" else None
        if sidecar is None or not sidecar.is_file():
            item.inputs = self.transform(image).unsqueeze(0)
            return
        kept = clip_boxes(read_voc(sidecar, image.size), image)
        item.context["boxes"] = [[index, box.name, box.xmin, box.ymin, box.xmax, box.ymax] for index, box in kept]
        if kept:
            item.inputs = cell_inputs(image, [box for _, box in kept], self.transform, self.crop_context)


@register_predictor
@dataclass
class ImageClassifier(Predictor):
    """A timm classifier plus its labels, preprocessing, provenance and full ``config.json``."""

    kind = "classifier"

    model: nn.Module
    label_names: tuple[str, ...]
    data_config: dict
    model_id: str
    revision: str
    config: dict
    runtime: str = "torch"
    runner: Callable[[torch.Tensor], torch.Tensor] | None = None  # an ONNX session; None: ``network``
    network: nn.Module | None = None  # the torch module making the served decision; None: ``model``

    def __post_init__(self):
        self.network = self.network if self.network is not None else self.model

    @classmethod
    def from_folder(
        cls, folder: Path, config: dict, model_id: str, revision: str, runtime: str | None = None
    ) -> "ImageClassifier":
        """``runtime``: ``"torch"``, ``"onnx"`` or ``"onnx-int8"``; ``None`` takes the folder's choice
        (config ``runtime``, written by the training script after measuring them), else torch."""
        model = timm.create_model(f"{LOCAL_PREFIX}{folder}", pretrained=False)
        model.load_state_dict(load_file(folder / WEIGHTS_NAME), strict=True)
        # channels-last convolutions are ~1.4x faster on CPU for these networks; outputs are unchanged
        model.to(memory_format=torch.channels_last).eval()
        label_names = config.get("label_names") or [str(i) for i in range(config["num_classes"])]
        if isinstance(label_names, dict):
            label_names = [label_names[str(i)] for i in range(config["num_classes"])]
        data_config = resolve_data_config({}, model=model)
        network = model
        if config.get("backstop"):
            spec = config["backstop"]
            backstop = load_backstop(load_file(folder / spec["file"]), spec)
            network = served_network(model, backstop, label_names, spec["reject_label"]).eval()
        runtime = runtime or config.get("runtime") or "torch"
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; known: {list(RUNTIMES)}")
        runner = None
        if runtime in RUNTIME_FILES:
            if not (folder / RUNTIME_FILES[runtime]).is_file():
                raise FileNotFoundError(f"{model_id}: runtime {runtime!r} needs {RUNTIME_FILES[runtime]}, not in the folder")
            runner = OnnxRunner(folder / RUNTIME_FILES[runtime])
        return cls(model, tuple(label_names), data_config, model_id, revision, config, runtime, runner, network)

    @property
    def uint8_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """Resize/crop of one RGB image to a uint8 tensor (see :func:`uint8_eval_transform`);
        the Space, the batch job and :meth:`predict` all go through it."""
        return uint8_eval_transform(self.data_config)

    @property
    def crop_context(self) -> float:
        """The margin its cell crops were cut with (config.json's ``crop_context``, else the registry's)."""
        return self.config.get("crop_context", CELL_CROP_CONTEXT)

    @property
    def decisive_margin(self) -> float | None:
        """The top-two probability margin under which a prediction names no class (config
        ``decisive_margin``); ``None``: the model has none."""
        return self.config.get(DECISIVE_KEY)

    def decisive(self, probs: np.ndarray) -> bool | None:
        """Whether one image's class probabilities are at least :attr:`decisive_margin` apart at the top."""
        if self.decisive_margin is None:
            return None
        second, first = np.sort(probs)[-2:]
        return bool(first - second >= self.decisive_margin)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) from :attr:`uint8_transform` -> the model's float input."""
        return Uint8Normalize(tuple(self.data_config["mean"]), tuple(self.data_config["std"]))(batch)

    def preprocess(self, image: ImageSource) -> torch.Tensor:
        """Decode (any mode, any source) and transform one image to a float model input (C, H, W)."""
        return self.normalize(self.uint8_transform(load_image(image)).unsqueeze(0))[0]

    @torch.inference_mode()
    def predict_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Class probabilities, shape (batch, n_classes), for already preprocessed inputs."""
        if self.runner is not None:
            return self.runner(batch).softmax(dim=-1).float().numpy()
        batch = batch.contiguous(memory_format=torch.channels_last)
        return self.network(batch).softmax(dim=-1).float().numpy()

    def predict_images(self, images: Sequence[ImageSource], batch_size: int = 256) -> np.ndarray:
        """Class probabilities, shape (n, n_classes), for many images in batches."""
        transform = self.uint8_transform
        return np.concatenate([
            self.predict_tensor(self.normalize(torch.stack([transform(load_image(im)) for im in images[i:i + batch_size]])))
            for i in range(0, len(images), batch_size)
        ])

    def predict(self, images: Sequence[ImageSource]) -> list[dict[str, float]]:
        """``{label: probability}`` for each image."""
        return [dict(zip(self.label_names, map(float, row))) for row in self.predict_images(images)]

    # ---------------------------------------------------------------- the batch job's interface

    def check_options(self, options: JobOptions) -> None:
        if options.boxes not in (None, *BOX_MODES):
            raise ValueError(f"--boxes must be one of {BOX_MODES}, not {options.boxes!r}")
        if options.masks_dir:
            raise ValueError(f"--masks-dir needs a segmentation model; {self.model_id} is an image classifier")

    def preparer(self, options: JobOptions) -> CropPreparer:
        return CropPreparer(self.data_config, self.crop_context, options.boxes)

    def forward(self, items: Sequence[Item], batch_size: int) -> list[np.ndarray | None]:
        """Probabilities of every input of ``items``, run in chunks of ``batch_size`` across items."""
        tensors = [item.inputs for item in items if item.inputs is not None]
        if not tensors:
            return [None] * len(items)
        stacked = torch.cat(tensors)
        probs = np.concatenate([
            self.predict_tensor(self.normalize(stacked[i:i + batch_size])) for i in range(0, len(stacked), batch_size)
        ])
        out, offset = [], 0
        for item in items:
            if item.inputs is None:
                out.append(None)
            else:
                out.append(probs[offset:offset + len(item.inputs)])
                offset += len(item.inputs)
        return out

    def rows(self, item: Item, output: np.ndarray | None) -> list[dict]:
        """One row per image; with boxes, one per box plus a per-image summary (viability for live/dead)."""

        def prediction(row: np.ndarray) -> dict:
            best, decisive = int(row.argmax()), self.decisive(row)
            return {"label": self.label_names[best], "score": float(row[best]),
                    **{prob_column(n): float(p) for n, p in zip(self.label_names, row)},
                    **({} if decisive is None else {"decisive": decisive})}

        boxes = item.context.get("boxes")
        if boxes is None:
            return [prediction(output[0])]
        rows = [
            {**prediction(row), "box_index": index, "box_label": name or None,
             "box_xmin": xmin, "box_ymin": ymin, "box_xmax": xmax, "box_ymax": ymax}
            for (index, name, xmin, ymin, xmax, ymax), row in zip(boxes, output if output is not None else [])
        ]
        summary = {"n_objects": len(boxes)}
        if {LIVE, DEAD} <= set(self.label_names):
            summary.update(viability([row["label"] for row in rows]))
        return [summary, *rows]
