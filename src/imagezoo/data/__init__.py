"""Dataset readers and preparation: public layouts in, Hugging Face ``datasets`` out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from datasets import DatasetDict

#: every prepared dataset's splits, in this order
SPLITS = ("train", "validation", "test")


def load_splits(dataset_id: str) -> "DatasetDict":
    """``load_dataset`` for a Hub id or a local Hub-layout folder.

    A local folder is rebuilt on every call: ``datasets`` keys its cache of local files
    in a way that can return the rows of an earlier preparation after the folder was
    rewritten in place, and a rebuild of our small sets takes seconds. Split sizes are not
    checked against a cached record: two folders of the same name (a test's and the real
    one) share that record, and the rows were just read from the files. ``datasets`` is imported
    here, not at module level, so serving code that reads annotations never loads it.
    """
    import pyarrow.parquet as pq
    from datasets import Features, load_dataset

    if Path(dataset_id).is_dir():
        # the files' own features, which also key the cache: the cached record of a folder of that name
        # otherwise supplies its features, and a column added since fails the cast
        shards = sorted(Path(dataset_id).glob("**/*.parquet"))
        features = Features.from_arrow_schema(pq.read_schema(shards[0])) if shards else None
        return load_dataset(dataset_id, features=features, download_mode="force_redownload", verification_mode="no_checks")
    return load_dataset(dataset_id)


def check_splits(dataset: "DatasetDict", dataset_id: str, splits: Sequence[str] = SPLITS) -> None:
    """Raise unless each of ``splits`` is there with rows: training selects its epoch on validation and
    reports test, so an empty one would otherwise fail after the training it wasted."""
    empty = [split for split in splits if split not in dataset or len(dataset[split]) == 0]
    if empty:
        raise ValueError(f"{dataset_id}: no rows in split(s) {empty}; every one of {list(splits)} is needed")


def check_label_names(dataset: "DatasetDict", label_names: Sequence[str], dataset_id: str, column: str = "label") -> None:
    """Raise unless ``dataset``'s class names in ``column`` are ``label_names`` in that order: a model
    trains on the integer labels, and the same classes in another order would be silently swapped."""
    feature = dataset["train"].features[column]
    names = getattr(getattr(feature, "feature", feature), "names", None)  # a Sequence of labels holds its ClassLabel
    if names is not None and list(names) != list(label_names):
        raise ValueError(f"{dataset_id}: its {column!r} classes are {names}, the task's are {list(label_names)}")
