"""Loaded models, once per process, shared by every engine that asks for the same ones.

A process normally builds one ``Services`` (web worker, photo worker, CLI), but anything
that builds several (the test suite builds dozens of apps; a tool comparing settings) would
otherwise load the same ONNX sessions and dlib networks again each time. The key holds
everything a loaded model depends on, so engines that would load different models never
share. Only successful loads are kept: a pack that failed may be fixed and tried again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_loaded: dict[Hashable, Any] = {}
_key_locks: dict[Hashable, threading.Lock] = {}
loads: dict[str, int] = {}  # real loads per kind in this process (the tests read it)


def shared(kind: str, key: Hashable, load: Callable[[], Any]) -> Any:
    """The models ``load()`` returns for ``(kind, key)``, loading them at most once per process."""
    full = (kind, key)
    with _lock:
        if full in _loaded:
            return _loaded[full]
        key_lock = _key_locks.setdefault(full, threading.Lock())
    with key_lock:  # one load per key; other keys load in parallel
        with _lock:
            if full in _loaded:
                return _loaded[full]
        value = load()  # raises: nothing is kept
        with _lock:
            _loaded[full] = value
            loads[kind] = loads.get(kind, 0) + 1
        return value


def files_identity(folder: Path, pattern: str) -> tuple[tuple[str, int, int], ...]:
    """The files a pack's models come from (symlinks resolved), with size and mtime: a pack
    rewritten in place gets a new key."""
    out = []
    for path in sorted(folder.glob(pattern)):
        real = path.resolve()
        st = real.stat()
        out.append((str(real), st.st_size, st.st_mtime_ns))
    return tuple(out)
