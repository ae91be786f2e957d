"""What an engine is handed (:class:`JobRun`) and what the job reports (:class:`JobSummary`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from imagezoo.batch.items import Preprocessor
from imagezoo.batch.output import PartWriter
from imagezoo.predictors import JobOptions, Predictor

#: files a model replica scores per forward pass unless the job says otherwise
BATCH_SIZE = 32


@dataclass
class JobSummary:
    files: int = 0
    scored: int = 0
    skipped: int = 0
    errors: int = 0
    rows: int = 0
    seconds: float = 0.0
    labels: Counter = field(default_factory=Counter)

    def record(self, rows: list[dict]) -> None:
        """Count one file's rows (its whole-image or summary row says whether it failed)."""
        self.rows += len(rows)
        for row in rows:
            if row.get("box_index") is None:
                self.errors += row["error"] is not None
                self.scored += row["error"] is None
            if row.get("label"):
                self.labels[row["label"]] += 1

    @property
    def images_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds else 0.0

    def text(self) -> str:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items())) or "none"
        return (
            f"{self.files} files: {self.scored} scored, {self.skipped} reused from a previous run, "
            f"{self.errors} errors; {self.rows} rows; labels: {labels}; "
            f"{self.images_per_second:.1f} images/s over {self.seconds:.1f} s"
        )


@dataclass
class JobRun:
    """Everything an engine needs; every engine is ``run(job: JobRun) -> set of reused (path, sha256)``.

    The writer stays in the driver: engines send rows back and the driver adds them (and
    records them in ``summary``), so the output and ``--resume`` work the same on every engine.
    """

    predictor: Predictor
    preprocess: Preprocessor
    files: list[str]
    writer: PartWriter
    summary: JobSummary
    options: JobOptions
    batch_size: int = BATCH_SIZE
    num_workers: int | None = None
    threads: int | None = None
    progress: bool = True

    @property
    def chunk_size(self) -> int:
        """Files a worker is handed at once: the predictor's choice, else the batch size."""
        return self.predictor.files_per_chunk or self.batch_size

    def collect(self, item_path: str, sha256: str | None, skipped: bool, rows: list[dict], reused: set) -> None:
        """Driver side of one scored file: a reuse marker, or rows to record and write."""
        if skipped:
            reused.add((item_path, sha256))
            self.summary.skipped += 1
        else:
            self.summary.record(rows)
            self.writer.add(rows)
