"""The one interface every servable model implements, and the registry that picks it.

A model folder's ``config.json`` names its predictor (``_imagezoo.predictor``; timm
classifier folders, which predate the key, default to ``"classifier"``), so the batch job,
the Spaces and evaluation load any model with :func:`load_predictor` and never branch on
what kind of model it is.

The batch job talks to a predictor in three steps, split so that the expensive one can
run wherever the model lives:

* :meth:`Predictor.preparer` - a small picklable callable, built from the config only,
  that turns one decoded image into uint8 model inputs (and per-file facts such as boxes)
  inside DataLoader workers or Ray tasks;
* :meth:`Predictor.forward` - model outputs for a list of prepared items;
* :meth:`Predictor.rows` / :meth:`Predictor.write_outputs` - one file's output rows, and
  any files it writes beside them (label images for segmenters).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch
from huggingface_hub import snapshot_download
from PIL import Image

from imagezoo.files import storable_text
from imagezoo.images import file_sha256
from imagezoo.tasks import GATE_KEY, HUB_PREFIX

WEIGHTS_NAME = "model.safetensors"
LOCAL_PREFIX = "local-dir:"
CONFIG_KEY = "_imagezoo"  # smp ignores config keys starting with "_" when it builds the model


def error_text(err: BaseException) -> str:
    """A file's ``error`` column: the exception's type and message (what failed, and why), a non-UTF-8 path
    in the message escaped (:func:`~imagezoo.files.storable_text`): unescaped, Arrow failed on the whole part."""
    return storable_text(f"{type(err).__name__}: {err}")


@dataclass
class Item:
    """One file on its way through the batch job: model inputs, or the reason there are none."""

    path: str
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    inputs: torch.Tensor | None = None  # uint8 (k, C, H, W): k = 1, or one per box
    context: dict = field(default_factory=dict)  # the predictor's per-file facts, JSON-serialisable
    error: str | None = None
    skipped: bool = False


@dataclass(frozen=True)
class JobOptions:
    """What the batch job asks of a model beyond scoring whole images."""

    boxes: str | None = None  # "voc": score each box of an annotation file beside the image
    masks_dir: str | None = None  # write per-image label images and object tables here


def prob_column(label: str) -> str:
    """The batch output's column holding the probability of ``label``."""
    return f"prob_{label}"


#: ``prepare(image, path, item)`` fills ``item.inputs`` (and ``item.context``) for one decoded image.
Preparer = Callable[[Image.Image, Path, Item], None]


def local_folder(model_id: str) -> Path:
    """The folder a ``local-dir:PATH`` or plain-path model id names."""
    return Path(model_id.removeprefix(LOCAL_PREFIX))


def absolute_model_id(model_id: str) -> str:
    """A model folder's absolute path (valid from any working directory); a Hub id unchanged."""
    return model_id if model_id.startswith(HUB_PREFIX) else str(local_folder(model_id).resolve())


def resolve_model_folder(model_id: str, revision: str | None = None) -> tuple[Path, str]:
    """Local folder holding ``config.json`` + ``model.safetensors`` (and any sub-models' folders), and its revision.

    ``model_id`` is ``hf-hub:ORG/NAME``, ``local-dir:PATH`` or a plain path. For the Hub
    the revision is the commit hash; for a folder, the first 12 hex digits of a SHA-256 over
    every file that decides its outputs (weights, configs, ONNX exports, sub-models' too), so a
    changed runtime or threshold is a new revision as much as new weights are.
    """
    if model_id.startswith(HUB_PREFIX):
        patterns = ["*.json", "*.safetensors", "*.md", "*.onnx", f"*/{WEIGHTS_NAME}", "*/config.json"]
        folder = Path(snapshot_download(model_id[len(HUB_PREFIX):], revision=revision, allow_patterns=patterns))
    else:
        folder = local_folder(model_id)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{model_id}: no config.json; expected a model folder in timm's or smp's Hub format")
    if not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{model_id}: no {WEIGHTS_NAME} (only safetensors weights are loaded)")
    if model_id.startswith(HUB_PREFIX):
        return folder, folder.name
    served = sorted({*folder.glob("**/*.safetensors"), *folder.glob("**/config.json"), *folder.glob("**/*.onnx")})
    digests = "".join(f"{path.relative_to(folder)}:{file_sha256(path)}" for path in served)
    return folder, hashlib.sha256(digests.encode()).hexdigest()[:12]


class Predictor(ABC):
    """A loaded model with its labels, preprocessing and provenance, servable by the batch job."""

    #: registry name, written to config.json as ``_imagezoo.predictor``
    kind: ClassVar[str]
    #: classes with a ``prob_<label>`` column in the batch output (empty for segmenters)
    label_names: tuple[str, ...]
    #: files the batch job hands a worker at once (None: its batch size); a model that scores whole images
    #: one by one gains nothing from more, and each held image may be tens of megapixels
    files_per_chunk: ClassVar[int | None] = None
    model_id: str
    revision: str
    config: dict

    @classmethod
    @abstractmethod
    def from_folder(cls, folder: Path, config: dict, model_id: str, revision: str, **options) -> "Predictor":
        """Build from a resolved model folder (``config.json`` already read); ``options`` are the
        predictor's own loading choices (a classifier's ``runtime``)."""

    @classmethod
    def from_pretrained(cls, model_id: str, revision: str | None = None, **options) -> "Predictor":
        """Load a model folder or ``hf-hub:`` id; called on :class:`Predictor` itself, the
        folder's config picks the class."""
        folder, resolved = resolve_model_folder(model_id, revision)
        config = json.loads((folder / "config.json").read_text())
        target = predictor_class(config, model_id)
        if cls is not Predictor and not issubclass(target, cls):
            raise ValueError(f"{model_id} is a {target.kind!r} model, not a {cls.kind!r} one: load it with load_predictor")
        return target.from_folder(folder, config, model_id, resolved, **options)

    @classmethod
    def refuse_options(cls, model_id: str, options: dict) -> None:
        """For predictors without loading choices: name what was asked rather than fail with a ``TypeError``."""
        if options:
            raise ValueError(f"{model_id}: a {cls.kind!r} model takes no loading options, got {sorted(options)}")

    @property
    def load_spec(self) -> dict:
        """The :func:`~imagezoo.predictors.load_predictor` arguments that rebuild this predictor elsewhere
        (a Ray actor, in another working directory): the folder's absolute path, or the Hub id at the
        commit loaded here; pipelines add their other models."""
        ungated = {"gate": False} if self.config.get(GATE_KEY) else {}  # loaded without the gate its config names
        if self.model_id.startswith(HUB_PREFIX):
            return {"model_id": self.model_id, "revision": self.revision, **ungated}
        return {"model_id": absolute_model_id(self.model_id), **ungated}

    def check_options(self, options: JobOptions) -> None:
        """Raise ``ValueError`` naming what this model cannot do of ``options``."""

    @abstractmethod
    def preparer(self, options: JobOptions) -> Preparer:
        """The worker-side step: decoded image -> uint8 inputs; picklable and model-free."""

    @abstractmethod
    def forward(self, items: Sequence[Item], batch_size: int) -> list[Any]:
        """One output per item (``None`` for items without inputs)."""

    @abstractmethod
    def rows(self, item: Item, output: Any) -> list[dict]:
        """The prediction columns of one file's output rows (provenance columns are added by the job)."""

    def write_outputs(self, item: Item, output: Any, options: JobOptions) -> None:
        """Files written beside the rows (e.g. label images), in the worker; nothing by default."""

    def has_outputs(self, options: JobOptions, path: str) -> bool:
        """Whether :meth:`write_outputs`' files for input ``path`` exist, so ``--resume`` can reuse its
        rows (a re-run with a new ``--masks-dir`` rescores the files it has no label image of)."""
        return True

    def finish_outputs(self, options: JobOptions, paths: list[str], failed: list[str]) -> None:
        """Once the job's output is complete: combine per-file outputs of ``paths`` (the files
        scored without error, resumed ones included) and remove any of ``failed`` (the files whose
        row is an error); nothing by default."""


PREDICTORS: dict[str, type[Predictor]] = {}
#: the module that registers each built-in predictor, imported on first use (a classifier never loads smp)
BUILTIN_PREDICTORS = {
    "classifier": "imagezoo.inference",
    "segmenter": "imagezoo.predictors.segmenter",
    "cell-counter": "imagezoo.predictors.cells",
}


def register_predictor(cls: type[Predictor]) -> type[Predictor]:
    PREDICTORS[cls.kind] = cls
    return cls


def predictor_name(config: dict, model_id: str = "the model folder") -> str:
    """The predictor a model folder's config asks for; timm folders without the key are classifiers."""
    name = (config.get(CONFIG_KEY) or {}).get("predictor")
    if name:
        return name
    if "architecture" in config:
        return "classifier"
    what = ("a plain segmentation_models_pytorch folder: imagezoo.segmentation.save_unet adds the settings a U-Net "
            "is served with" if "_model_class" in config else "neither a timm nor an imagezoo model folder")
    raise ValueError(f"{model_id}: config.json names no timm 'architecture' and no {CONFIG_KEY!r} predictor; {what}")


def predictor_class(config: dict, model_id: str = "the model folder") -> type[Predictor]:
    name = predictor_name(config, model_id)
    if name not in PREDICTORS and name in BUILTIN_PREDICTORS:
        importlib.import_module(BUILTIN_PREDICTORS[name])
    try:
        return PREDICTORS[name]
    except KeyError:
        known = sorted({*PREDICTORS, *BUILTIN_PREDICTORS})
        raise KeyError(f"unknown predictor {name!r} in config.json; known: {known}") from None
