"""Writing files and folders so that a killed or failed process never leaves a half-written one under its
final name."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomically(target: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a hidden temp file beside ``target`` (unique per process, so parallel
    workers never share one), then rename it over ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
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
