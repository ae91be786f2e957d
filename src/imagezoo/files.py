"""Writing files so that a killed process never leaves a half-written one under its final name."""

from __future__ import annotations

import os
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
