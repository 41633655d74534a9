"""The store's own errors for storage faults: the HTTP layer, the worker and the CLI map them.

``StorageFull``: the data dir's file system has no room for the write (SQLITE_FULL, ENOSPC).
``StorageUnavailable``: the database cannot be used right now: read-only file system or
file, cannot be opened, I/O error, or the lock was not obtained within the busy timeout.
Both are transient from the caller's point of view: nothing acknowledged is lost (the write
was rolled back as a whole) and the same write succeeds once the fault is gone, with no
restart. ``health`` keeps the last fault of this process for /health until a write succeeds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path


class StorageError(Exception):
    code = "storage_error"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason  # short machine word: disk_full, read_only, cannot_open, io_error, locked


class StorageFull(StorageError):
    code = "storage_full"


class StorageUnavailable(StorageError):
    code = "storage_unavailable"


_UNAVAILABLE = {
    "SQLITE_READONLY": "read_only",
    "SQLITE_CANTOPEN": "cannot_open",
    "SQLITE_IOERR": "io_error",
    "SQLITE_BUSY": "locked",
    "SQLITE_LOCKED": "locked",
    "SQLITE_PERM": "read_only",
}


@contextlib.contextmanager
def storage_faults(health: Health | None = None) -> Iterator[None]:
    """Turn SQLite / OS storage faults raised inside into StorageFull / StorageUnavailable."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        err = classify(exc)
        if err is None:
            raise
        if health is not None:
            health.failed(err)
        raise err from exc


def classify(exc: BaseException) -> StorageError | None:
    """The storage fault ``exc`` stands for, or None when it is something else (a bug)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, sqlite3.Error):
        name = (getattr(exc, "sqlite_errorname", "") or "").split("_")
        base = "_".join(name[:2]) if len(name) >= 2 else ""
        text = str(exc).lower()
        if base == "SQLITE_FULL" or "disk is full" in text:
            return StorageFull("the data directory is full: the write was not stored", "disk_full")
        reason = _UNAVAILABLE.get(base)
        if reason is None:
            if "readonly" in text or "read-only" in text:
                reason = "read_only"
            elif "locked" in text:
                reason = "locked"
            elif "unable to open" in text:
                reason = "cannot_open"
            elif "disk i/o" in text:
                reason = "io_error"
        if reason is not None:
            return StorageUnavailable(f"the database is unavailable ({reason})", reason)
        return None
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull("the data directory is full: the write was not stored", "disk_full")
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return StorageUnavailable("the data directory is not writable", "read_only")
        if exc.errno == errno.EIO:
            return StorageUnavailable("the data directory had an I/O error", "io_error")
    return None


class Health:
    """This process's view of the data dir: the last storage fault (until a write succeeds)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._last: tuple[str, str, float] | None = None  # (code, reason, when)
        self.errors: dict[str, int] = {}

    def failed(self, err: StorageError) -> None:
        with self._lock:
            self._last = (err.code, err.reason, time.time())
            self.errors[err.reason] = self.errors.get(err.reason, 0) + 1

    def succeeded(self) -> None:
        if self._last is not None:
            with self._lock:
                self._last = None

    def _existing(self) -> Path:
        """The data dir, or its nearest existing parent (before the first write creates it)."""
        path = self.data_dir
        while not path.exists() and path.parent != path:
            path = path.parent
        return path

    def free_bytes(self) -> int | None:
        try:
            st = os.statvfs(self._existing())
        except OSError:
            return None
        return int(st.f_bavail * st.f_frsize)

    def status(self, min_free_bytes: int = 0) -> dict:
        """{"ok", "reason", "free_bytes", "writable"} without touching the database."""
        free = self.free_bytes()
        writable = os.access(self._existing(), os.W_OK)
        reason = None
        if self._last is not None:
            reason = f"{self._last[0]}: {self._last[1]}"
        elif free is None:
            reason = "storage_unavailable: cannot_stat"
        elif not writable:
            reason = "storage_unavailable: read_only"
        elif free < min_free_bytes:
            reason = "storage_full: low_free_space"
        return {"ok": reason is None, "reason": reason, "free_bytes": free, "writable": writable}
