"""Which files under a folder the batch job scores."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable


def discover(root: str | Path, exclude: Iterable[str | Path] = ()) -> list[str]:
    """Every file under ``root`` (recursively, sorted) that could be an image.

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
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(folder, d) not in excluded)
        stems = Counter(Path(f).stem for f in files)
        for name in sorted(files):
            if name.startswith(".") or (name.lower().endswith(".xml") and stems[Path(name).stem] > 1):
                continue
            if Path(folder, name) in excluded:
                continue
            found.append(Path(folder, name).relative_to(root).as_posix())
    return found
