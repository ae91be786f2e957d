"""Per-file work shared by every engine: prepare a file, then score a batch of prepared files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from imagezoo.data.voc import voc_sibling
from imagezoo.images import file_sha256, load_image
from imagezoo.predictors import Item, JobOptions, Predictor, Preparer
from imagezoo.predictors.base import error_text


@dataclass
class Preprocessor:
    """A listed name -> :class:`Item`: hash, skip if already done, decode (any mode), then the model's preparer.

    Picklable and model-free, so it runs in DataLoader workers and Ray tasks. A bad file
    becomes an item carrying an ``error``, never an exception.
    """

    root: str
    prepare: Preparer
    done: frozenset = frozenset()  # (path, sha256) pairs to skip
    with_annotation: bool = False  # --boxes voc: the rows depend on the annotation beside the file too
    on_disk: Mapping[str, str] = field(default_factory=dict)  # from the job's Listing
    unlisted: Mapping[str, str] = field(default_factory=dict)

    def digest(self, path: Path, name: str) -> str:
        """The file's SHA-256; with an annotation that its rows come from, the SHA-256 of both digests,
        so that ``--resume`` rescores a slide whose boxes were corrected."""
        digest = file_sha256(path, name)
        annotation = voc_sibling(path) if self.with_annotation else None
        if annotation is None or not annotation.is_file():
            return digest
        return hashlib.sha256(f"{digest}:{file_sha256(annotation)}".encode()).hexdigest()

    def path(self, name: str) -> Path:
        """Where the file a listed name stands for lies (its own path, or the one it was escaped from)."""
        return Path(self.root, self.on_disk.get(name, name))

    def __call__(self, name: str) -> Item:
        item = Item(name)
        if name in self.unlisted:
            item.error = self.unlisted[name]
            return item
        path = self.path(name)
        try:
            item.sha256 = self.digest(path, name)
            if (name, item.sha256) in self.done:
                item.skipped = True
                return item
            image = load_image(path, name=name)
            item.width, item.height = image.size
            self.prepare(image, path, item)
        except Exception as err:  # noqa: BLE001 - any failure is this file's, recorded in its row
            item.error = error_text(err)
            item.inputs = None
        return item


def base_row(item: Item, predictor: Predictor) -> dict:
    """The provenance columns every row of a file carries."""
    return dict(
        path=item.path, sha256=item.sha256, width=item.width, height=item.height,
        model_id=predictor.model_id, model_revision=predictor.revision, error=item.error,
    )


def lost_file(preprocess: Preprocessor, predictor: Predictor, name: str, error: str) -> tuple[Item, list[dict]]:
    """The error row of a file whose worker process died scoring it alone (out of memory, most likely):
    the engines record it, with their ``error`` text, instead of ending the job or retrying it forever."""
    item = Item(name, error=error)
    try:  # the hash only, for the row's provenance; decoding is what may not fit
        item.sha256 = preprocess.digest(preprocess.path(name), name)
    except (OSError, ValueError):  # gone, or not a regular file: the error row says enough
        pass
    return item, [base_row(item, predictor)]


def forward_each(predictor: Predictor, items: Sequence[Item], batch_size: int) -> list:
    """``predictor.forward`` of the batch; if it fails, of each item alone, so the failure is recorded
    as the error of the file that caused it (a slide with thousands of boxes running out of memory,
    say) and the other files are still scored."""
    try:
        return list(predictor.forward(items, batch_size))
    except Exception as err:  # noqa: BLE001 - narrowed to the failing files below
        if len(items) == 1:
            items[0].error = error_text(err)
            return [None]
    outputs = []
    for item in items:
        outputs.extend(forward_each(predictor, [item], batch_size))
    return outputs


def score_items(
    predictor: Predictor, items: Sequence[Item], batch_size: int, options: JobOptions
) -> list[tuple[Item, list[dict]]]:
    """Each item (inputs dropped once scored) with its output rows (none if skipped).

    A failure while scoring or writing one file's outputs becomes that file's error row.
    """
    scored = []
    for item, output in zip(items, forward_each(predictor, items, batch_size)):
        rows = []
        if not item.skipped:
            base = base_row(item, predictor)
            if item.error is None:
                try:
                    predictor.write_outputs(item, output, options)
                    rows = [{**base, **row} for row in predictor.rows(item, output)]
                except Exception as err:  # noqa: BLE001 - recorded in the file's row
                    base["error"] = error_text(err)
            rows = rows or [base]
        item.inputs = None
        scored.append((item, rows))
    return scored
