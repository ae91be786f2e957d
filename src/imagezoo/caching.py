"""Models loaded once per process, however many requests ask for them at the same time.

``functools.cache`` runs its function once per concurrent first caller: a Space whose webcam stream
serves four frames at once, or whose chat and analysis tabs start together, loaded the same model
several times on a cold start. Standard library only, so every Space can import it.
"""

from __future__ import annotations

import functools
import threading
from typing import Callable, TypeVar

T = TypeVar("T")


def load_once(loader: Callable[..., T]) -> Callable[..., T]:
    """``loader(*args)`` computed once per distinct ``args`` and kept; callers arriving while it runs wait
    for that result instead of loading again. ``.cache_clear()`` forgets every result."""
    results: dict[tuple, T] = {}
    lock = threading.Lock()

    @functools.wraps(loader)
    def load(*args):
        with lock:  # loads are rare and slow: one at a time is simpler than a lock per key, and as fast
            if args not in results:
                results[args] = loader(*args)
            return results[args]

    load.cache_clear = results.clear
    return load
