"""The batch job on Ray Data: same preprocessing, rows and output as the local engine.

Pipeline: ``from_items(paths)`` -> ``map`` (hash, decode, crop, transform: CPU tasks) ->
``map_batches`` with a pool of model actors (one model load per actor) -> rows streamed
back to the driver, which writes the Parquet parts and the final file exactly as the
local engine does (so ``--resume`` and the atomic rename work the same way).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import torch

from imagezoo.batch import (
    Item,
    JobSummary,
    PartWriter,
    Preprocessor,
    output_schema,
    score_items,
)
from imagezoo.data.voc import Box
from imagezoo.inference import ImageClassifier

REUSED = "_reused"


def item_to_row(item: Item) -> dict:
    """An :class:`Item` as flat, Arrow-friendly columns (inputs as uint8 bytes)."""
    inputs = item.inputs.numpy() if item.inputs is not None else np.zeros((0,), np.uint8)
    return {
        "path": item.path,
        "sha256": item.sha256,
        "width": item.width,
        "height": item.height,
        "error": item.error,
        "skipped": item.skipped,
        "boxes": None if item.boxes is None
        else json.dumps([[i, *vars(b).values()] for i, b in zip(item.box_indices, item.boxes)]),
        "inputs": inputs.astype(np.uint8).tobytes(),
        "n_inputs": 0 if item.inputs is None else len(item.inputs),
    }


def row_to_item(row: dict, input_shape: tuple[int, ...]) -> Item:
    n = int(row["n_inputs"])
    inputs = torch.from_numpy(np.frombuffer(row["inputs"], np.uint8).reshape(n, *input_shape).copy()) if n else None
    boxes = None if row["boxes"] is None else json.loads(row["boxes"])
    as_int = lambda v: None if v is None or v != v else int(v)  # noqa: E731 - Arrow nulls arrive as None/NaN
    return Item(
        path=row["path"], sha256=row["sha256"], width=as_int(row["width"]), height=as_int(row["height"]),
        inputs=inputs, error=row["error"], skipped=bool(row["skipped"]),
        boxes=None if boxes is None else [Box(*b[1:]) for b in boxes],
        box_indices=None if boxes is None else [b[0] for b in boxes],
    )


class Prepare:
    """Ray ``map`` function: one path -> one preprocessed item row."""

    def __init__(self, preprocess: Preprocessor):
        self.preprocess = preprocess

    def __call__(self, row: dict) -> dict:
        return item_to_row(self.preprocess(row["path"]))


class ScoreActor:
    """Holds one model; turns a batch of item rows into output rows (plus reuse markers)."""

    def __init__(self, model_id: str, batch_size: int, threads: int):
        torch.set_num_threads(threads)
        self.classifier = ImageClassifier.from_pretrained(model_id)
        self.batch_size = batch_size
        self.input_shape = tuple(self.classifier.data_config["input_size"])
        self.schema = output_schema(self.classifier.label_names).append(pa.field(REUSED, pa.bool_()))

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = [row_to_item(row, self.input_shape) for row in batch.to_pylist()]
        rows = []
        for item, scored in score_items(self.classifier, items, self.batch_size):
            if item.skipped:
                rows.append({"path": item.path, "sha256": item.sha256, REUSED: True})
            else:
                rows.extend({**row, REUSED: False} for row in scored)
        return pa.Table.from_pylist(rows, schema=self.schema)


def run_ray(
    classifier: ImageClassifier,
    preprocess: Preprocessor,
    files: list[str],
    writer: PartWriter,
    summary: JobSummary,
    batch_size: int = 32,
    progress: bool = True,
    actors: int = 1,
) -> set[tuple[str, str]]:
    """Score ``files`` on the Ray cluster in ``RAY_ADDRESS`` (or a local one); returns reused keys."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    threads = max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)) // (2 * actors))
    dataset = (
        ray.data.from_items([{"path": path} for path in files])
        .map(Prepare(preprocess))
        .map_batches(
            ScoreActor,
            fn_constructor_kwargs=dict(model_id=classifier.model_id, batch_size=batch_size, threads=threads),
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
        )
    )
    reused = set()
    for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in table.to_pylist():
            if row.pop(REUSED):
                reused.add((row["path"], row["sha256"]))
                summary.skipped += 1
                continue
            summary.record([row])
            writer.add([row])
    return reused

