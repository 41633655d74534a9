"""This process's cache of hot (event, space) indexes: entries, locks, eviction, fork checks.

The same for every backend: the database (SQLite or PostgreSQL) is the truth, an entry is
a copy that a search brings up to date first (store/face_store.py ``_sync``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator

from . import ann
from .index import FlatIndex


class Entry:
    """This process's cache of one (event, space)."""

    __slots__ = ("ann", "changes", "evicted", "flat", "key", "last_used", "lock", "purge", "seq", "sid", "snap_seq")

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.lock = threading.Lock()
        self.sid: int | None = None
        self.seq = 0
        self.flat: FlatIndex | None = None
        self.snap_seq: int | None = None  # seq of the snapshot file this cache knows to be on disk
        self.changes = 0  # faces added + removed since that snapshot
        self.last_used = 0.0
        self.evicted = False
        self.purge = False  # the loaded snapshot held since-deleted faces: remove it
        self.ann: ann.AnnCache | None = None  # this process's copy of the approximate index, if any

    def reset(self) -> None:
        self.sid, self.seq, self.flat, self.snap_seq, self.changes, self.purge = None, 0, None, None, 0, False
        self.ann = None


class EntryCache:
    """Entries by key in least-recently-used order, plus this process's counters (for /metrics)."""

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self.guard = threading.Lock()
        self._pid = os.getpid()
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self._counters: dict[str, int] = {}

    def check_fork(self) -> None:
        pid = os.getpid()
        if pid != self._pid:
            # Caches (and faiss objects) built by a parent are not used in a forked child.
            self.guard = threading.Lock()
            self._entries = OrderedDict()
            self._counters = {}
            self._pid = pid

    def entry(self, key: tuple[str, str]) -> Entry:
        self.check_fork()
        with self.guard:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = Entry(key)
            self._entries.move_to_end(key)
            return entry

    @contextlib.contextmanager
    def locked(self, key: tuple[str, str]) -> Iterator[Entry]:
        """The entry for ``key``, locked (taken again if evicted meanwhile)."""
        while True:
            entry = self.entry(key)
            entry.lock.acquire()
            if not entry.evicted:
                break
            entry.lock.release()
        try:
            yield entry
        finally:
            entry.lock.release()

    def drop(self, key: tuple[str, str]) -> None:
        self.check_fork()
        with self.guard:
            entry = self._entries.pop(key, None)
        if entry is not None:
            entry.evicted = True

    def enforce_budget(self, keep: tuple[str, str]) -> None:
        """Drop least recently searched entries above ``max_bytes``; ``keep`` always stays."""
        if self.max_bytes is None:
            return
        with self.guard:
            total = sum(e.flat.nbytes for e in self._entries.values() if e.flat is not None)
            for key in list(self._entries):
                if total <= self.max_bytes:
                    break
                entry = self._entries[key]
                if key == keep or entry.flat is None or not entry.lock.acquire(blocking=False):
                    continue
                try:
                    total -= entry.flat.nbytes
                    entry.evicted = True
                    entry.reset()
                    del self._entries[key]
                finally:
                    entry.lock.release()
                self._count_unlocked("evictions")

    def evict(self, event_id: str | None = None) -> int:
        self.check_fork()
        with self.guard:
            keys = [k for k in self._entries if event_id is None or k[0] == event_id]
            entries = [self._entries.pop(k) for k in keys]
        for e in entries:
            with e.lock:
                e.evicted = True
                e.reset()
        return len(entries)

    def count(self, name: str, n: int = 1) -> None:
        with self.guard:
            self._count_unlocked(name, n)

    def _count_unlocked(self, name: str, n: int = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + n

    def stats(self) -> dict:
        """This process's view, for /metrics: cached indexes and counters. No I/O."""
        self.check_fork()
        with self.guard:
            entries = list(self._entries.values())
            counters = dict(self._counters)
        cached = []
        for e in entries:
            flat = e.flat
            if flat is None:
                continue
            cached.append({
                "event_id": e.key[0], "space": e.key[1], "faces": flat.n_alive, "masked": flat.n_dead,
                "seq": e.seq, "snapshot_seq": e.snap_seq, "bytes": flat.nbytes,
            })
        return {
            "pid": os.getpid(),
            "cached_indexes": len(cached),
            "cached_faces": sum(c["faces"] for c in cached),
            "cached_bytes": sum(c["bytes"] for c in cached),
            "cache": cached,
            "counters": counters,
        }
