"""``run_job``: discover files, load the model as its predictor, run an engine, merge the output."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from imagezoo.batch.discovery import discover
from imagezoo.batch.items import Preprocessor
from imagezoo.batch.local_engine import run_local
from imagezoo.batch.output import (
    ROWS_PER_PART,
    PartWriter,
    done_keys,
    finalize,
    output_schema,
    parts_dir_for,
    previous_sources,
)
from imagezoo.batch.ray_engine import run_ray
from imagezoo.batch.run import BATCH_SIZE, JobRun, JobSummary
from imagezoo.predictors import JobOptions, load_predictor

logger = logging.getLogger(__name__)

#: engine name -> ``run(job) -> reused keys``; ``ray`` imports Ray only when it runs
ENGINES: dict[str, Callable[[JobRun], set[tuple[str, str]]]] = {"local": run_local, "ray": run_ray}
#: engine name -> (module it needs, how to install it): checked before the model loads or a part is deleted
ENGINE_NEEDS = {"ray": ("ray", 'pip install -e ".[ray]"')}


def run_job(
    directory: str | Path,
    model_id: str,
    out: str | Path,
    boxes: str | None = None,
    resume: bool = False,
    engine: str = "local",
    batch_size: int = BATCH_SIZE,
    num_workers: int | None = None,
    rows_per_part: int = ROWS_PER_PART,
    threads: int | None = None,
    progress: bool = True,
    masks_dir: str | Path | None = None,
    gate: str | bool | None = None,
) -> JobSummary:
    """Score every file under ``directory`` with ``model_id`` (any predictor) into the Parquet file ``out``;
    with ``gate`` (default: the one ``model_id``'s config names; ``False``: none), only images the gate model
    accepts get ``model_id``'s label."""
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {sorted(ENGINES)}, not {engine!r}")
    if engine in ENGINE_NEEDS and importlib.util.find_spec(ENGINE_NEEDS[engine][0]) is None:
        module, install = ENGINE_NEEDS[engine]
        raise ValueError(f"--engine {engine} needs the {module} package, not installed here: {install}")
    for name, value, least in (("--batch-size", batch_size, 1), ("--rows-per-part", rows_per_part, 1),
                               ("--num-workers", num_workers, 0), ("--threads", threads, 1)):
        if value is not None and value < least:
            raise ValueError(f"{name} must be at least {least}, not {value}")
    root, out = Path(directory).resolve(), Path(out).resolve()  # absolute: Ray workers run elsewhere
    masks_dir = None if masks_dir is None else Path(masks_dir).resolve()
    if masks_dir == root:  # a folder inside --dir is left out of the inputs; --dir itself cannot be
        raise ValueError(f"--masks-dir is --dir ({root}): label images would lie beside the inputs and be scored "
                         "as inputs by the next run; give a separate folder, e.g. a sub-folder of it")
    listing = discover(root, exclude=[out, parts_dir_for(out), *([masks_dir] if masks_dir else [])])
    files = listing.names
    if not files:
        raise ValueError(f"{root}: no files to score (the folder is empty)")
    predictor = load_predictor(model_id, gate=gate)
    options = JobOptions(boxes=boxes, masks_dir=None if masks_dir is None else str(masks_dir))
    predictor.check_options(options)
    schema = output_schema(predictor.label_names)
    out.parent.mkdir(parents=True, exist_ok=True)
    reused_sources = previous_sources(out, schema) if resume else []
    if not resume:
        shutil.rmtree(parts_dir_for(out), ignore_errors=True)
    done = {key: source for key, source in done_keys(reused_sources, predictor.revision).items()
            if predictor.has_outputs(options, key[0])}
    job = JobRun(
        predictor=predictor,
        preprocess=Preprocessor(str(root), predictor.preparer(options), frozenset(done), options.boxes == "voc",
                                listing.on_disk, listing.unlisted),
        files=files,
        writer=PartWriter(parts_dir_for(out), schema, rows_per_part),
        summary=JobSummary(files=len(files)),
        options=options,
        batch_size=batch_size,
        num_workers=num_workers,
        threads=threads,
        progress=progress,
    )
    start = time.perf_counter()
    try:
        reused = ENGINES[engine](job)
    finally:  # what was scored reaches a part even when the job fails, for --resume
        job.writer.flush()
    job.summary.seconds = time.perf_counter() - start
    finalize(out, schema, done, reused, job.writer.written, rows_per_part)
    rows = pq.read_table(out, columns=["path", "error"]).to_pylist()
    scored = {row["path"] for row in rows if row["error"] is None}
    predictor.finish_outputs(options, sorted(scored), sorted({row["path"] for row in rows} - scored))
    return job.summary
