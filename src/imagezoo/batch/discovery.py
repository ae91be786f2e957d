"""Which files under a folder the batch job scores, and the names its rows give them."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from imagezoo.files import storable_text


@dataclass(frozen=True)
class Listing:
    """What :func:`discover` found. ``names`` key the rows (in walk order, '/'-separated, valid UTF-8);
    ``on_disk`` holds the relative path of each name that is not its own path (a file name that is not
    UTF-8, or whose escaped form another file has for real); ``unlisted`` the error of each folder that
    could not be listed, named ``folder/``, so it gets an error row instead of vanishing from the output."""

    names: list[str]
    on_disk: dict[str, str] = field(default_factory=dict)
    unlisted: dict[str, str] = field(default_factory=dict)


def output_name(relative: str) -> str:
    """``relative`` as the Parquet, the object CSV and ``--masks-dir`` name it: its undecodable bytes written
    as ``\\xNN`` (:func:`~imagezoo.files.storable_text`)."""
    return storable_text(relative)


def discover(root: str | Path, exclude: Iterable[str | Path] = ()) -> Listing:
    """Every file under ``root`` (recursively, symlinked folders followed once each) that could be an image.

    Files are judged by content later, so nothing is filtered by extension, except
    hidden files, Pascal-VOC sidecars (``x.xml`` next to another ``x.*``), which
    annotate an image rather than being one, and ``exclude``: the job's own outputs
    (Parquet, its parts, label images) when they lie inside ``root``, so a re-run
    does not score them.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    excluded = {Path(path).resolve() for path in exclude} - {root}
    names: list[str] = []
    seen: set[str] = set()
    on_disk: dict[str, str] = {}
    unlisted: dict[str, str] = {}

    def add(relative: str) -> str:
        name = output_name(relative)
        if name in seen:  # an escaped name that another file has for real (``caf\xe9.png`` written out)
            name = next(f"{name} ({k})" for k in itertools.count(2) if f"{name} ({k})" not in seen)
        seen.add(name)
        names.append(name)
        if name != relative:
            on_disk[name] = relative
        return name

    def cannot_list(err: OSError) -> None:
        folder = Path(err.filename)
        if folder == root:
            raise err
        reason = f"{type(err).__name__}: folder cannot be listed, its files were not scored ({err.strerror or err})"
        unlisted[add(f"{folder.relative_to(root).as_posix()}/")] = reason

    walked = {str(root)}  # real paths: a folder reached twice (a symlink loop, two links) is listed once
    for folder, dirs, files in os.walk(root, onerror=cannot_list, followlinks=True):
        kept = []
        for child in sorted(dirs):
            real = os.path.realpath(Path(folder, child))
            if not child.startswith(".") and Path(real) not in excluded and real not in walked:
                walked.add(real)
                kept.append(child)
        dirs[:] = kept
        stems = Counter(Path(f).stem for f in files)
        for name in sorted(files):
            if name.startswith(".") or (name.lower().endswith(".xml") and stems[Path(name).stem] > 1):
                continue
            if Path(folder, name) in excluded:
                continue
            add(Path(folder, name).relative_to(root).as_posix())
    return Listing(names, on_disk, unlisted)
