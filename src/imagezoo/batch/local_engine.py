"""The local engine: DataLoader workers that each hold a model replica and prepare their own batches."""

from __future__ import annotations

import os
from functools import partial

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from imagezoo.batch.items import Preprocessor, score_items
from imagezoo.batch.run import JobRun
from imagezoo.predictors import Item, JobOptions, Predictor


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (a container's or ``taskset``'s cpuset),
    not the host's count, so a job pinned to 4 of 64 cores starts 4 replicas, not 64."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ScoredChunks(torch.utils.data.Dataset):
    """``files`` in chunks of ``batch_size``, each prepared *and* scored by the process that loads it."""

    def __init__(self, predictor: Predictor, preprocess: Preprocessor, files: list[str], batch_size: int,
                 options: JobOptions):
        self.predictor, self.preprocess, self.batch_size, self.options = predictor, preprocess, batch_size, options
        self.chunks = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> list[tuple[Item, list[dict]]]:
        items = [self.preprocess(relative) for relative in self.chunks[index]]
        return score_items(self.predictor, items, self.batch_size, self.options)


def set_worker_threads(threads: int, worker_id: int) -> None:
    torch.set_num_threads(threads)


def run_local(job: JobRun) -> set[tuple[str, str]]:
    """Score ``job.files`` with DataLoader workers that each hold a model replica and decode their own batches.

    On CPU, one single-threaded replica per core (the default) beats one multi-threaded model
    fed by decoding workers: a single-threaded forward does more work per core (one core:
    265 img/s, two cores in one process: 375) and no replica waits at an OpenMP barrier for a
    thread a decoder pre-empted. ``num_workers=0`` scores in this process on ``threads``
    (default: all cores). Workers with more than one thread are spawned rather than forked:
    GNU OpenMP hangs in a forked child once the parent has used its thread pool. The writer
    stays here; workers send back rows only. Returns the (path, sha256) keys skipped because a
    previous run scored them.
    """
    num_workers = available_cpus() if job.num_workers is None else job.num_workers
    threads = job.threads or (1 if num_workers else available_cpus())
    if not num_workers:
        torch.set_num_threads(threads)
    loader = DataLoader(
        ScoredChunks(job.predictor, job.preprocess, job.files, job.batch_size, job.options),
        batch_size=None,
        num_workers=num_workers,
        worker_init_fn=partial(set_worker_threads, threads),
        multiprocessing_context="spawn" if num_workers and threads > 1 else None,
        prefetch_factor=2 if num_workers else None,
    )
    reused: set[tuple[str, str]] = set()
    with tqdm(total=len(job.files), unit="img", disable=not job.progress, desc="scoring") as bar:
        for scored in loader:
            for item, rows in scored:
                job.collect(item.path, item.sha256, item.skipped, rows, reused)
            bar.update(len(scored))
    return reused
