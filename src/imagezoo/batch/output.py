"""The output: one Parquet schema for every model, parts written as the job runs, an atomic merge.

Rows go to complete Parquet "parts" (one row group each, written to a temp name and
renamed) as the job runs; at the end they are merged into the output through a temp file
and an atomic rename. A killed job keeps every finished part, and ``--resume`` skips files
whose (path, sha256) already has a row for the same model revision.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from imagezoo.files import write_atomically
from imagezoo.predictors import prob_column

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "5"
#: rows per Parquet part (row group) unless the job says otherwise
ROWS_PER_PART = 1024
#: a part is also written once its first row has waited this long: a job that gives one row per image
#: (a segmenter: seconds an image) would otherwise keep its first 1024 images in memory only
PART_SECONDS = 60.0
#: Columns every output has, in order; ``prob_<label>`` columns follow ``score``.
BASE_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("path", pa.string(), "file path relative to --dir, '/'-separated"),
    ("sha256", pa.string(), "SHA-256 of the file's bytes (--boxes voc with an annotation: of both files' digests)"),
    ("width", pa.int32(), "image width in pixels (null when unreadable)"),
    ("height", pa.int32(), "image height in pixels"),
    ("box_index", pa.int32(),
     "index of the box in its annotation file, or the cell's id in --masks-dir's label image; null for per-image rows"),
    ("box_xmin", pa.int32(), "box left edge (pixels)"),
    ("box_ymin", pa.int32(), "box top edge"),
    ("box_xmax", pa.int32(), "box right edge"),
    ("box_ymax", pa.int32(), "box bottom edge"),
    ("center_x", pa.float32(), "cell counters: the cell's centre (pixels from the left)"),
    ("center_y", pa.float32(), "cell counters: the cell's centre (pixels from the top)"),
    ("box_label", pa.string(), "the annotation's own label for the box, if any"),
    ("label", pa.string(), "predicted label (null on per-image summary rows of --boxes mode and cell counters)"),
    ("score", pa.float32(), "probability of the predicted label"),
]
TAIL_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("n_objects", pa.int32(), "segmentation: objects (cells) found; --boxes: boxes scored"),
    ("foreground_fraction", pa.float32(), "segmentation: share of foreground pixels"),
    ("mask_rle", pa.string(), "segmentation: foreground mask as COCO RLE JSON {size: [h, w], counts} (pycocotools)"),
    ("n_live", pa.int32(), "viability: cells predicted live on the image"),
    ("n_dead", pa.int32(), "viability: cells predicted dead on the image"),
    ("viability", pa.float32(), "viability: n_live / (n_live + n_dead)"),
    ("gate", pa.string(), "--gate: the gate's verdict (a refused image has no label)"),
    ("gate_score", pa.float32(), "--gate: the gate's probability of its accepting label"),
    ("decisive", pa.bool_(), "models with a decisive margin (tumour type): false when the top two probabilities "
     "are closer than it, and the label should not be read as the answer"),
    ("model_id", pa.string(), "the --model argument"),
    ("model_revision", pa.string(), "Hub commit hash, or a SHA-256 prefix of a folder's weights, configs, ONNX"),
    ("error", pa.string(), "why the file could not be scored; null on success"),
]


def output_schema(label_names: Iterable[str]) -> pa.Schema:
    """The Parquet schema for a model with ``label_names`` (documented in field metadata)."""
    columns = BASE_COLUMNS + [(prob_column(n), pa.float32(), f"probability of '{n}'") for n in label_names]
    columns += TAIL_COLUMNS
    fields = [pa.field(name, kind, metadata={"description": doc}) for name, kind, doc in columns]
    return pa.schema(fields, metadata={"imagezoo_schema_version": SCHEMA_VERSION})


class PartWriter:
    """Buffers rows and writes them as complete Parquet parts of ``rows_per_part`` rows, or of what came
    within ``part_seconds``."""

    def __init__(self, parts_dir: Path, schema: pa.Schema, rows_per_part: int = ROWS_PER_PART,
                 part_seconds: float = PART_SECONDS):
        self.parts_dir, self.schema, self.rows_per_part, self.part_seconds = parts_dir, schema, rows_per_part, part_seconds
        self.run = uuid.uuid4().hex[:8]
        self.buffer: list[dict] = []
        self.written: list[Path] = []
        self.oldest = 0.0  # when the first buffered row came
        parts_dir.mkdir(parents=True, exist_ok=True)

    def add(self, rows: list[dict]) -> None:
        if not self.buffer:
            self.oldest = time.monotonic()
        self.buffer.extend(rows)
        if len(self.buffer) >= self.rows_per_part or time.monotonic() - self.oldest >= self.part_seconds:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        table = pa.Table.from_pylist(self.buffer, schema=self.schema)
        target = self.parts_dir / f"part-{self.run}-{len(self.written):06d}.parquet"
        self.written.append(write_atomically(target, lambda tmp: pq.write_table(table, tmp)))
        self.buffer = []


def parts_dir_for(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def same_schema(written: pa.Schema, schema: pa.Schema) -> bool:
    """The same columns (names, types, order) under the same schema version: a column's description
    may be reworded between releases without making the rows it describes another kind of row."""
    version = (written.metadata or {}).get(b"imagezoo_schema_version")
    return written.equals(schema) and version == schema.metadata[b"imagezoo_schema_version"]


def previous_sources(out: Path, schema: pa.Schema) -> list[Path]:
    """Parquet files a resumed job can reuse: the last complete output and unmerged parts
    written with ``schema`` (files of another model or schema are left out, their rows redone)."""
    parts = sorted(parts_dir_for(out).glob("part-*.parquet")) if parts_dir_for(out).is_dir() else []
    sources = []
    for source in ([out] if out.is_file() else []) + parts:
        try:
            written = pq.read_schema(source)
        except (pa.ArrowInvalid, OSError) as err:  # not Parquet, or cut short (parts are renamed into place whole)
            logger.warning("%s is not a readable Parquet file (%s); its rows will be redone", source, err)
            continue
        if same_schema(written, schema):
            sources.append(source)
        else:
            logger.warning("%s was written for another model or schema; its rows will be redone", source)
    return sources


def done_keys(sources: list[Path], revision: str) -> dict[tuple[str, str], Path]:
    """(path, sha256) already scored without error by this model revision -> the newest source holding
    those rows. One source per file: an older output may also hold it (an error row since retried, or
    the rows a killed re-run wrote again), and merging both would give the file two sets of rows."""
    keys = {}
    for source in sources:  # oldest first: the last complete output, then the parts in order
        table = pq.read_table(source, columns=["path", "sha256", "model_revision", "error"])
        for path, sha, rev, err in zip(*(table[c].to_pylist() for c in table.column_names)):
            if rev == revision and err is None:
                keys[path, sha] = source
    return keys


def finalize(out: Path, schema: pa.Schema, done: dict[tuple[str, str], Path], keep: set[tuple[str, str]],
             new_parts: list[Path], rows_per_group: int = ROWS_PER_PART) -> None:
    """Merge the reused rows (files in ``keep``, each from its source in ``done``) and this run's parts
    into ``out``, atomically; parts written early (:data:`PART_SECONDS`) are joined into row groups of
    ``rows_per_group``.

    ``done``'s sources hold only files written with ``schema`` (see :func:`previous_sources`).
    """

    def merge(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            for source in dict.fromkeys(done.values()):
                parquet = pq.ParquetFile(source)
                for group in range(parquet.num_row_groups):
                    table = parquet.read_row_group(group)
                    keys = zip(table["path"].to_pylist(), table["sha256"].to_pylist())
                    mask = [key in keep and done[key] == source for key in keys]
                    if any(mask):
                        writer.write_table(table.filter(pa.array(mask)))
            pending: list[pa.Table] = []
            for part in new_parts:
                pending.append(pq.read_table(part))
                if sum(len(table) for table in pending) >= rows_per_group:
                    writer.write_table(pa.concat_tables(pending))
                    pending = []
            if pending:
                writer.write_table(pa.concat_tables(pending))

    write_atomically(out, merge)
    shutil.rmtree(parts_dir_for(out), ignore_errors=True)
