"""The ``"segmenter"`` predictor: an smp U-Net folder -> instance labels, counts, RLE masks, object tables.

The network predicts two channels (nucleus body and border); instances come from a
marker-controlled watershed on them (:mod:`imagezoo.instances`). Images of any size go
through :func:`imagezoo.segmentation.predict_probabilities` (padding to the encoder's
stride, overlapping tiles with Gaussian blending for large ones), so the Space, the batch
job and evaluation all segment alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch
from PIL import Image
from torch import nn

from imagezoo.files import write_atomically
from imagezoo.images import ImageSource, load_image
from imagezoo.instances import OBJECT_COLUMNS, encode_rle, object_table
from imagezoo.predictors.base import Item, JobOptions, Predictor, Preparer, error_text, register_predictor
from imagezoo.segmentation import SegmenterConfig, load_unet, predict_probabilities

logger = logging.getLogger(__name__)

OBJECTS_CSV = "objects.csv"
OBJECTS_SCHEMA = pa.schema(
    [("image", pa.string())]
    + [(name, pa.float64() if name.startswith(("centroid", "mean")) else pa.int64()) for name in OBJECT_COLUMNS]
)


@dataclass
class Segmentation:
    """One image's result: instance labels (0 background, 1..N) and the network's probabilities
    (body, border)."""

    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def n_objects(self) -> int:
        return int(self.labels.max(initial=0))

    @property
    def foreground_fraction(self) -> float:
        return float((self.labels > 0).mean())


def image_tensor(image: Image.Image, path: Path | None = None, item: Item | None = None) -> torch.Tensor:
    """Whole RGB image as uint8 (1, 3, H, W); also the segmenter's worker-side preparer."""
    tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).unsqueeze(0)
    if item is not None:
        item.inputs = tensor
    return tensor


def mask_paths(masks_dir: str, relative: str) -> tuple[Path, Path]:
    """Where one input's label image and object table go: the input tree mirrored under ``masks_dir``."""
    base = Path(masks_dir, relative)
    return base.with_name(base.name + ".png"), base.with_name(base.name + ".objects.csv")


#: the most objects a label image (16-bit PNG) can number
MAX_LABEL = int(np.iinfo(np.uint16).max)


def write_label_image(target: Path, labels: np.ndarray) -> None:
    """Instance labels as a 16-bit grey PNG (0 background, k nucleus k), as Fiji and CellProfiler read them."""
    if labels.max(initial=0) > MAX_LABEL:
        raise ValueError(f"{int(labels.max())} objects do not fit a 16-bit label image (at most {MAX_LABEL:,})")
    image = Image.fromarray(labels.astype(np.uint16))
    write_atomically(target, lambda tmp: image.save(tmp, format="PNG"))


def write_objects_csv(target: Path, image_name: str, labels: np.ndarray, image: np.ndarray) -> None:
    """One row per object (:data:`~imagezoo.instances.OBJECT_COLUMNS`), the image's name first."""
    rows = [{"image": image_name, **row} for row in object_table(labels, image)]
    table = pa.Table.from_pylist(rows, schema=OBJECTS_SCHEMA)
    write_atomically(target, lambda tmp: pacsv.write_csv(table, tmp))


@register_predictor
@dataclass
class InstanceSegmenter(Predictor):
    """An smp U-Net with its post-processing settings (``config.json["_imagezoo"]``) and provenance."""

    kind = "segmenter"
    files_per_chunk = 1

    model: nn.Module
    settings: SegmenterConfig
    model_id: str
    revision: str
    config: dict
    label_names: tuple[str, ...] = ()

    @classmethod
    def from_folder(cls, folder: Path, config: dict, model_id: str, revision: str, **options) -> "InstanceSegmenter":
        cls.refuse_options(model_id, options)
        model, settings = load_unet(folder)
        return cls(model, settings, model_id, revision, config)

    def probabilities(self, image: ImageSource | torch.Tensor) -> np.ndarray:
        """Sigmoid (body, border) maps, float32 (2, H, W), for an image of any size."""
        tensor = image if isinstance(image, torch.Tensor) else image_tensor(load_image(image))[0]
        return predict_probabilities(self.model, tensor, self.settings)

    def postprocess_settings(self, threshold: float | None = None, min_size: int | None = None) -> SegmenterConfig:
        """The model's settings with ``threshold`` / ``min_size`` replaced where given (``None``: the tuned one)."""
        given = {k: v for k, v in dict(threshold=threshold, min_size=min_size).items() if v is not None}
        return replace(self.settings, **given)

    def instances(self, probabilities: np.ndarray, threshold: float | None = None, min_size: int | None = None) -> np.ndarray:
        """Instance labels from probabilities; ``None`` keeps the model's tuned setting."""
        return self.postprocess_settings(threshold, min_size).instances(probabilities)

    def from_probabilities(
        self, image: torch.Tensor, probabilities: np.ndarray, threshold: float | None = None, min_size: int | None = None
    ) -> Segmentation:
        """The result from already computed probabilities of the uint8 (3, H, W) ``image`` (the post-processing
        a threshold slider re-runs; a cell counter also classifies the cells of ``image`` here)."""
        return Segmentation(self.instances(probabilities, threshold, min_size), probabilities)

    def segment(
        self, image: ImageSource | torch.Tensor, threshold: float | None = None, min_size: int | None = None
    ) -> Segmentation:
        tensor = image if isinstance(image, torch.Tensor) else image_tensor(load_image(image))[0]
        return self.from_probabilities(tensor, self.probabilities(tensor), threshold, min_size)

    def predict(self, images: Sequence[ImageSource]) -> list[Segmentation]:
        return [self.segment(image) for image in images]

    # ---------------------------------------------------------------- the batch job's interface

    def check_options(self, options: JobOptions) -> None:
        if options.boxes:
            raise ValueError(f"--boxes needs an image classifier; {self.model_id} is a segmentation model")

    def preparer(self, options: JobOptions) -> Preparer:
        return image_tensor

    def forward(self, items: Sequence[Item], batch_size: int) -> list[Segmentation | None]:
        """Images differ in size, so each is segmented on its own (large ones in tiles); a
        failure (out of memory on a huge image, say) becomes that file's error, not the batch's."""
        outputs = []
        for item in items:
            output = None
            if item.inputs is not None:
                try:
                    output = self.segment(item.inputs[0])
                except Exception as err:  # noqa: BLE001 - recorded in the file's row
                    item.error = error_text(err)
            outputs.append(output)
        return outputs

    def rows(self, item: Item, output: Segmentation) -> list[dict]:
        return [{
            "n_objects": output.n_objects,
            "foreground_fraction": output.foreground_fraction,
            "mask_rle": encode_rle(output.labels > 0),
        }]

    def write_outputs(self, item: Item, output: Segmentation, options: JobOptions) -> None:
        """``DIR/<input>.png`` (uint16 labels) and ``DIR/<input>.objects.csv`` (one row per object)."""
        if not options.masks_dir:
            return
        png, csv = mask_paths(options.masks_dir, item.path)
        write_label_image(png, output.labels)
        write_objects_csv(csv, item.path, output.labels, item.inputs[0].permute(1, 2, 0).numpy())

    def has_outputs(self, options: JobOptions, path: str) -> bool:
        return not options.masks_dir or all(target.is_file() for target in mask_paths(options.masks_dir, path))

    def finish_outputs(self, options: JobOptions, paths: list[str], failed: list[str]) -> None:
        """``DIR/objects.csv``: every object of every scored file, in path order (resumed files included,
        header only when there is none); a failed file's label image and table from an earlier run go,
        so that no file left in ``DIR`` contradicts its error row."""
        if not options.masks_dir:
            return
        for path in failed:
            for stale in mask_paths(options.masks_dir, path):
                try:
                    stale.unlink(missing_ok=True)
                except OSError as err:  # a parent is a file, the name is too long: there is no such file
                    logger.warning("%s not removed (%s)", stale, err)
        convert = pacsv.ConvertOptions(column_types=OBJECTS_SCHEMA)
        tables = [
            pacsv.read_csv(csv, convert_options=convert)
            for path in paths if (csv := mask_paths(options.masks_dir, path)[1]).is_file()
        ]
        merged = pa.concat_tables(tables) if tables else OBJECTS_SCHEMA.empty_table()
        write_atomically(Path(options.masks_dir, OBJECTS_CSV), lambda tmp: pacsv.write_csv(merged, tmp))
