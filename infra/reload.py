"""A file read again whenever it changes, so that credentials rotate without a restart."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or replaced (inode, mtime in ns, size); None if absent."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size


class Reloaded(Generic[T]):
    """``load(path)``, done again on the first ``get()`` after the file changes (thread-safe).

    A load that fails raises from ``get()`` (the caller answers an error: nothing is let through on a
    file it cannot read) and is tried again on the next call.
    """

    def __init__(self, path: Path, load: Callable[[Path], T]) -> None:
        self.path, self._load = path, load
        self._stamp: tuple[int, int, int] | None | bool = False  # False: never loaded
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            stamp = file_stamp(self.path)
            if stamp != self._stamp:
                self._value, self._stamp = self._load(self.path), stamp
            return self._value  # type: ignore[return-value]
