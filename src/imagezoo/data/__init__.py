"""Dataset readers and preparation: public layouts in, Hugging Face ``datasets`` out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import DatasetDict


def load_splits(dataset_id: str) -> "DatasetDict":
    """``load_dataset`` for a Hub id or a local Hub-layout folder.

    A local folder is rebuilt on every call: ``datasets`` keys its cache of local files
    in a way that can return the rows of an earlier preparation after the folder was
    rewritten in place, and a rebuild of our small sets takes seconds. Split sizes are not
    checked against a cached record: two folders of the same name (a test's and the real
    one) share that record, and the rows were just read from the files. ``datasets`` is imported
    here, not at module level, so serving code that reads annotations never loads it.
    """
    from datasets import load_dataset

    if Path(dataset_id).is_dir():
        return load_dataset(dataset_id, download_mode="force_redownload", verification_mode="no_checks")
    return load_dataset(dataset_id)
