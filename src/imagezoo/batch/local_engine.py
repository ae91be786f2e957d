"""The local engine: DataLoader workers that each hold a model replica and prepare their own batches."""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from functools import partial
from typing import Generator, Iterator

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from imagezoo.batch.items import Preprocessor, lost_file, score_items
from imagezoo.batch.run import JobRun
from imagezoo.predictors import Item, JobOptions, Predictor

logger = logging.getLogger(__name__)

#: chunks a worker prepares ahead of the one the driver waits for
PREFETCH = 2
#: how DataLoader words a worker that died (killed by a signal, or exited) rather than raised
WORKER_DIED = "DataLoader worker (pid"

Scored = list[tuple[Item, list[dict]]]


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (a container's or ``taskset``'s cpuset),
    not the host's count, so a job pinned to 4 of 64 cores starts 4 replicas, not 64."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ScoredChunks(torch.utils.data.Dataset):
    """Chunks of file names, each prepared *and* scored by the process that loads it."""

    def __init__(self, predictor: Predictor, preprocess: Preprocessor, chunks: list[list[str]], batch_size: int,
                 options: JobOptions):
        self.predictor, self.preprocess, self.batch_size, self.options = predictor, preprocess, batch_size, options
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> Scored:
        items = [self.preprocess(relative) for relative in self.chunks[index]]
        return score_items(self.predictor, items, self.batch_size, self.options)


def set_worker_threads(threads: int, worker_id: int) -> None:
    torch.set_num_threads(threads)


def worker_died(err: BaseException) -> bool:
    """Whether the loader failed because a worker process ended (the kernel's out-of-memory killer,
    say), not because of an exception raised in it."""
    return isinstance(err, RuntimeError) and str(err).startswith(WORKER_DIED)


@contextmanager
def worker_deaths_deferred() -> Iterator[None]:
    """Run the block without DataLoader's SIGCHLD handler, which raises a worker's death at whatever line
    the driver is on: inside a file's collection it would leave the file half recorded. The death is
    then found at the next fetch (the loader checks its workers while it waits)."""
    if not hasattr(signal, "SIGCHLD") or threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, handler)


class LocalRun:
    """One local engine run: loaders over chunks of ``job.files``, and what to do when a worker dies."""

    def __init__(self, job: JobRun):
        self.job = job
        self.num_workers = available_cpus() if job.num_workers is None else job.num_workers
        self.threads = job.threads or (1 if self.num_workers else available_cpus())
        self.reused: set[tuple[str, str]] = set()
        self.death: str | None = None  # the message of the last worker death

    def loader(self, chunks: list[list[str]], num_workers: int) -> DataLoader:
        """Workers with more than one thread are spawned rather than forked: GNU OpenMP hangs in a
        forked child once the parent has used its thread pool."""
        job = self.job
        return DataLoader(
            ScoredChunks(job.predictor, job.preprocess, chunks, job.batch_size, job.options),
            batch_size=None,
            num_workers=num_workers,
            worker_init_fn=partial(set_worker_threads, self.threads),
            multiprocessing_context="spawn" if num_workers and self.threads > 1 else None,
            prefetch_factor=PREFETCH if num_workers else None,
        )

    def attempt(self, chunks: list[list[str]], num_workers: int) -> Generator[Scored, None, int | None]:
        """Yield each chunk's scored files; return ``None`` once all came back, or the number that came
        back before a worker died. The failed loader is left here, so its other workers are shut down
        and its dead one is no longer watched."""
        received = 0
        try:
            for scored in self.loader(chunks, num_workers):
                yield scored
                received += 1
        except RuntimeError as err:
            if not num_workers or not worker_died(err):
                raise
            self.death = str(err)
            return received
        return None

    def scored(self, chunks: list[list[str]]) -> Iterator[Scored]:
        """Each chunk's scored files, in order. When a worker dies, the chunks it may have held (those
        in flight) are scored again one file at a time, and the rest by a new pool of workers."""
        while chunks:
            received = yield from self.attempt(chunks, self.num_workers)
            if received is None:
                return
            chunks = chunks[received:]
            held = self.num_workers * PREFETCH  # a loader sends out at most this many chunks ahead
            names = [name for chunk in chunks[:held] for name in chunk]
            chunks = chunks[held:]
            logger.warning("%s; scoring the %d files it may have held one at a time", self.death, len(names))
            yield from self.one_by_one(names)

    def one_by_one(self, names: list[str]) -> Iterator[Scored]:
        """``names`` scored in order by one worker; the file it dies on is scored alone by a fresh worker,
        and if that one dies too, the file gets an error row and the others go on."""
        while names:
            received = yield from self.attempt([[name] for name in names], 1)
            if received is None:
                return
            suspect, names = names[received], names[received + 1:]
            if (yield from self.attempt([[suspect]], 1)) is not None:
                logger.warning("%s: %s when scored alone; recorded as the file's error", suspect, self.death)
                error = f"the worker scoring this file alone ended ({self.death}): most likely out of memory"
                yield [lost_file(self.job.preprocess, self.job.predictor, suspect, error)]

    def run(self) -> set[tuple[str, str]]:
        job = self.job
        if not self.num_workers:
            torch.set_num_threads(self.threads)
        chunks = [job.files[i:i + job.chunk_size] for i in range(0, len(job.files), job.chunk_size)]
        with tqdm(total=len(job.files), unit="img", disable=not job.progress, desc="scoring") as bar:
            for scored in self.scored(chunks):
                with worker_deaths_deferred():
                    for item, rows in scored:
                        job.collect(item.path, item.sha256, item.skipped, rows, self.reused)
                bar.update(len(scored))
        return self.reused


def run_local(job: JobRun) -> set[tuple[str, str]]:
    """Score ``job.files`` with DataLoader workers that each hold a model replica and decode their own batches.

    On CPU, one single-threaded replica per core (the default) beats one multi-threaded model
    fed by decoding workers: a single-threaded forward does more work per core (one core:
    265 img/s, two cores in one process: 375) and no replica waits at an OpenMP barrier for a
    thread a decoder pre-empted. ``num_workers=0`` scores in this process on ``threads``
    (default: all cores). The writer stays here; workers send back rows only. A worker that
    dies (a file too large for the memory left, say) costs only that file, which gets an error
    row. Returns the (path, sha256) keys skipped because a previous run scored them.
    """
    return LocalRun(job).run()
