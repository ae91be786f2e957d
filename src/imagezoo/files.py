"""Writing files and folders so that a killed or failed process never leaves a half-written one under its
final name."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def storable_text(text: str) -> str:
    """``text`` with the undecodable bytes of a file name written as ``\\xNN``. A name that is not UTF-8
    (Latin-1 from an old share or zip) reaches Python with surrogates, which Arrow, CSV and JSON cannot store."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def write_atomically(target: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a hidden temp file beside ``target`` (unique per process and target, so parallel
    workers never share one), then rename it over ``target``. The temp name has a fixed length: a target
    whose name is near the file system's 255-byte limit must not fail for its temp file's name."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(os.fsencode(target.name)).hexdigest()[:16]
    tmp = target.with_name(f".{digest}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:  # a failed (or interrupted) write leaves nothing behind
        tmp.unlink(missing_ok=True)
        raise
    return target


def staging_folder(target: str | Path) -> Path:
    """An empty hidden folder beside ``target`` for a training run to write its model into; :func:`replace_folder`
    puts it in ``target``'s place once the run completes. A run that fails half-way leaves the model it would
    replace whole (not new weights beside an old config or card), and no file of an earlier run outlives it."""
    target = Path(target)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # what a failed run left
    staging.mkdir(parents=True)
    return staging


def replace_folder(new: str | Path, target: str | Path) -> Path:
    """Move the folder ``new`` to ``target``, replacing what is there: two renames, so a reader in between
    finds no folder, never a mixed one."""
    new, target = Path(new), Path(target)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists() or target.is_symlink():
        target.rename(old)
    new.rename(target)
    if old.is_symlink():
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)
    return target
