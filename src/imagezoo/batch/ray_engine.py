"""The Ray Data engine: same preprocessing, rows and output as the local engine.

Pipeline: ``from_items(paths)`` -> ``map`` (hash, decode, the model's preparer: CPU tasks) ->
``map_batches`` with a pool of model actors (one model load per actor) -> one Arrow row per file
(its output rows nested in a list) streamed back to the driver, which writes the Parquet parts and
the final file exactly as the local engine does (so ``--resume`` and the atomic rename work the same way).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pyarrow as pa
import torch

from imagezoo.batch.items import Preprocessor, lost_file, score_items
from imagezoo.batch.output import output_schema
from imagezoo.batch.run import JobRun
from imagezoo.predictors import Item, JobOptions, load_predictor

REUSED = "_reused"

logger = logging.getLogger(__name__)


def item_to_row(item: Item) -> dict:
    """An :class:`Item` as flat, Arrow-friendly columns (inputs as uint8 bytes plus their shape)."""
    inputs = item.inputs.numpy() if item.inputs is not None else None
    return {
        "path": item.path,
        "sha256": item.sha256,
        "width": item.width,
        "height": item.height,
        "error": item.error,
        "skipped": item.skipped,
        "context": json.dumps(item.context),
        "inputs": b"" if inputs is None else inputs.astype(np.uint8).tobytes(),
        "shape": None if inputs is None else list(inputs.shape),
    }


def row_to_item(row: dict) -> Item:
    shape = row["shape"]
    inputs = None if shape is None else torch.from_numpy(np.frombuffer(row["inputs"], np.uint8).reshape(shape).copy())
    as_int = lambda v: None if v is None or v != v else int(v)  # noqa: E731 - Arrow nulls arrive as None/NaN
    return Item(
        path=row["path"], sha256=row["sha256"], width=as_int(row["width"]), height=as_int(row["height"]),
        inputs=inputs, context=json.loads(row["context"]), error=row["error"], skipped=bool(row["skipped"]),
    )


class Prepare:
    """Ray ``map`` function: one path -> one preprocessed item row."""

    def __init__(self, preprocess: Preprocessor):
        self.preprocess = preprocess

    def __call__(self, row: dict) -> dict:
        return item_to_row(self.preprocess(row["path"]))


class ScoreActor:
    """Holds one model; turns a batch of item rows into one row per file: its output rows, or a reuse marker.

    A file's rows travel nested in one Arrow row, so Ray can split or interleave output blocks
    as it likes without ever separating a file's rows.

    The model is the driver's: the same folder or Hub commit, checked by its revision, so one
    output never mixes two versions of a model (a push to the Hub repo during the job)."""

    def __init__(self, load_spec: dict, revision: str, batch_size: int, threads: int, options: JobOptions):
        torch.set_num_threads(threads)
        self.predictor = load_predictor(**load_spec)
        if self.predictor.revision != revision:
            raise RuntimeError(f"{load_spec}: this worker loaded revision {self.predictor.revision}, the job's is "
                               f"{revision} (the model changed while the job ran)")
        self.batch_size, self.options = batch_size, options
        rows = pa.list_(pa.struct(list(output_schema(self.predictor.label_names))))
        self.schema = pa.schema([("path", pa.string()), ("sha256", pa.string()), (REUSED, pa.bool_()), ("rows", rows)])

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = [row_to_item(row) for row in batch.to_pylist()]
        files = [
            {"path": item.path, "sha256": item.sha256, REUSED: item.skipped, "rows": [] if item.skipped else scored}
            for item, scored in score_items(self.predictor, items, self.batch_size, self.options)
        ]
        return pa.Table.from_pylist(files, schema=self.schema)


#: the error row of a file whose block failed twice: Ray Data skips the block whatever failed (its worker
#: died, out of memory most likely, or code outside the file's own scoring raised), so the cause is Ray's log
RAY_LOST = ("its Ray task failed twice, scoring this file alone: its worker died (most likely out of memory) or "
            "raised outside the file's own scoring; the Ray logs have the cause")

#: times Ray re-runs a task, or a model actor's batch, whose worker process died; Ray Data's default is
#: forever, so a file whose decoding the out-of-memory killer ends would hang the job
RETRIES = 1


def run_ray(job: JobRun) -> set[tuple[str, str]]:
    """Score ``job.files`` on the Ray cluster in ``RAY_ADDRESS`` (or a local one); returns reused keys.

    ``job.num_workers`` model actors (default 1), each on ``job.threads`` torch threads (default:
    half the cluster's CPUs over the actors, the other half decoding). Rows come back in the driver
    one file at a time, so a Parquet part never holds part of a file's rows (``--resume`` reuses whole files).
    A block whose worker died twice is skipped; its files are scored again one per block, and a file
    whose worker dies then too gets an error row, as on the local engine.
    """
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    settings = context.enable_progress_bars, context.max_errored_blocks
    context.enable_progress_bars, context.max_errored_blocks = job.progress, -1
    reused: set[tuple[str, str]] = set()
    try:
        scored = stream(job, job.files, job.chunk_size, None, reused)
        lost = [name for name in job.files if name not in scored]
        if lost:
            logger.warning("%d files were in blocks whose Ray worker died; scoring them one per block", len(lost))
            scored = stream(job, lost, 1, len(lost), reused)
        for name in lost:
            if name not in scored:
                item, rows = lost_file(job.preprocess, job.predictor, name, RAY_LOST)
                job.collect(item.path, item.sha256, item.skipped, rows, reused)
    finally:
        context.enable_progress_bars, context.max_errored_blocks = settings
    return reused


def stream(job: JobRun, files: list[str], batch_size: int, blocks: int | None, reused: set) -> set[str]:
    """Score ``files`` (in ``blocks`` blocks; ``None``: Ray's choice) and collect each file's rows in the
    driver; returns the files that came back (a block whose worker died is skipped)."""
    import ray

    actors = job.num_workers or 1
    cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    threads = job.threads or max(1, cpus // (2 * actors))
    dataset = (
        ray.data.from_items([{"path": path} for path in files], override_num_blocks=blocks)
        .map(Prepare(job.preprocess), max_retries=RETRIES)
        .map_batches(
            ScoreActor,
            fn_constructor_kwargs=dict(
                load_spec=job.predictor.load_spec, revision=job.predictor.revision, batch_size=job.batch_size,
                threads=threads, options=job.options,
            ),
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            max_task_retries=RETRIES,
        )
    )
    scored = set()
    # model_id as the user gave it (the actors load the folder by its absolute path), as the local engine writes it
    for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        for file in table.to_pylist():
            file_rows = [{**row, "model_id": job.predictor.model_id} for row in file["rows"]]
            job.collect(file["path"], file["sha256"], file[REUSED], file_rows, reused)
            scored.add(file["path"])
    return scored
