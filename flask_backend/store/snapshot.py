"""FAISS snapshots: a cache that makes cold starts fast. SQLite stays the source of truth.

Per (space, event) two files in ``<data>/<space>/``:

- ``<event>.faiss``: a ``faiss.IndexIDMap`` over an ``IndexFlatIP``, i.e. the vectors and
  the face-id mapping in ONE file, so they are replaced together by one atomic rename.
  It is byte-for-byte what ``faiss.write_index`` writes (``faiss.read_index`` opens it; a
  test checks both ways), but it is written from and read straight into the store's own
  matrix: no second in-memory copy, no faiss import needed to save or load;
- ``<event>.json``: which space row (``sid``) and change sequence (``seq``) the file
  reflects, plus the SHA-256 of its id array.

Writers write a temp file, fsync it, rename it over the old one and fsync the directory,
faiss file first, json second. A loader trusts a snapshot only when the json's sid is the
space's current sid and its ``ids_sha256`` matches the faiss file's ids, so a crash
between the two renames (or a torn file) is detected and the snapshot is ignored.

Every create/replace/remove of these files happens under ``SnapshotLocks`` (a thread lock
plus a POSIX byte-range lock, shared by all processes). Deleters remove the files AFTER
committing the delete to SQLite; writers check the database for newer deletes while
holding the lock. Either way no snapshot containing deleted embeddings survives.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .index import FlatIndex, allocate

FORMAT = 1
LOCK_FILE = ".snapshots.lock"


@dataclass(frozen=True)
class SnapshotPaths:
    faiss: Path
    meta: Path
    faiss_tmp: Path
    meta_tmp: Path

    @property
    def directory(self) -> Path:
        return self.faiss.parent

    @classmethod
    def of(cls, data_dir: Path, space_name: str, event_id: str) -> SnapshotPaths:
        # event_id is validated ([A-Za-z0-9_.-], no leading '.'), so these stay in the directory.
        base = data_dir / space_name
        return cls(
            faiss=base / f"{event_id}.faiss",
            meta=base / f"{event_id}.json",
            faiss_tmp=base / f"{event_id}.faiss.tmp",
            meta_tmp=base / f"{event_id}.json.tmp",
        )


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()


_registry_guard = threading.Lock()
_registry_pid: int | None = None
_lock_fds: dict[str, int] = {}
_thread_locks: dict[tuple[str, int], threading.Lock] = {}
_inherited_fds: list[int] = []  # never closed: closing any fd of the file drops the process's locks


def _after_fork_in_child() -> None:
    # A parent thread may have held the guard at fork time; the child gets a fresh one.
    global _registry_guard
    _registry_guard = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _registry(path: str, offset: int) -> tuple[int, threading.Lock]:
    """This process's fd for ``path`` and the thread lock for one of its bytes.

    Module-wide, so that two FaceStore objects on one data dir in one process exclude each
    other too (POSIX locks are per process: they cannot tell threads or objects apart).
    """
    global _registry_pid, _lock_fds, _thread_locks
    with _registry_guard:
        pid = os.getpid()
        if _registry_pid != pid:  # first use, or a forked child: locks are not inherited
            _inherited_fds.extend(_lock_fds.values())
            _lock_fds, _thread_locks, _registry_pid = {}, {}, pid
        fd = _lock_fds.get(path)
        if fd is None:
            fd = _lock_fds[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        return fd, _thread_locks.setdefault((path, offset), threading.Lock())


class SnapshotLocks:
    """Mutual exclusion for one (space, event)'s snapshot files across threads and processes.

    One lock file for the whole data dir; each key locks one byte at a hashed offset (a
    collision only serialises two events). A thread lock per byte keeps this process's
    threads apart, the POSIX byte-range lock other processes.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = str((data_dir / LOCK_FILE).resolve())

    @contextlib.contextmanager
    def hold(self, space_name: str, event_id: str, *, exclusive: bool = True) -> Iterator[None]:
        offset = zlib.crc32(f"{space_name}/{event_id}".encode()) & 0x3FFFFFFF
        fd, tlock = _registry(self.path, offset)
        with tlock:
            fcntl.lockf(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, 1, offset)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)


def read_meta(paths: SnapshotPaths) -> dict[str, Any] | None:
    try:
        meta = json.loads(paths.meta.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return None
    for key in ("sid", "seq", "ntotal", "dim"):
        if not isinstance(meta.get(key), int):
            return None
    if not isinstance(meta.get("ids_sha256"), str):
        return None
    return meta


# faiss's serialisation (index_write.cpp) of IndexIDMap(IndexFlatIP):
#   "IxMp" header  "IxFI" header  u64 n*d  f32[n*d]  u64 n  i64[n]
# header = i32 d, i64 ntotal, i64 dummy, i64 dummy, u8 is_trained, i32 metric_type
_HEADER = struct.Struct("<iqqqBi")
_DUMMY = 1 << 20
_METRIC_INNER_PRODUCT = 0


def _header(dim: int, n: int) -> bytes:
    return _HEADER.pack(dim, n, _DUMMY, _DUMMY, 1, _METRIC_INNER_PRODUCT)


def _write_all(fh: Any, data: np.ndarray) -> None:
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    step = 1 << 28
    for start in range(0, len(view), step):
        fh.write(view[start : start + step])


def _read_exact(fh: Any, out: np.ndarray) -> bool:
    view = memoryview(out).cast("B")
    got = 0
    while got < len(view):
        n = fh.readinto(view[got : got + (1 << 28)])
        if not n:
            return False
        got += n
    return True


def load(paths: SnapshotPaths, meta: dict[str, Any]) -> FlatIndex | None:
    """The index saved in ``paths.faiss`` if it is exactly the one ``meta`` describes, else None."""
    dim, n = meta["dim"], meta["ntotal"]
    if dim <= 0 or n < 0:
        return None
    try:
        with open(paths.faiss, "rb") as fh:
            expected = 2 * (4 + _HEADER.size) + 8 + n * dim * 4 + 8 + n * 8
            if os.fstat(fh.fileno()).st_size != expected:
                return None
            head = fh.read(2 * (4 + _HEADER.size) + 8)
            outer, inner = head[: 4 + _HEADER.size], head[4 + _HEADER.size : 2 * (4 + _HEADER.size)]
            if outer != b"IxMp" + _header(dim, n) or inner != b"IxFI" + _header(dim, n):
                return None
            if struct.unpack("<Q", head[-8:])[0] != n * dim:
                return None
            buf = allocate(n, dim)
            if not _read_exact(fh, buf[:n]):
                return None
            if struct.unpack("<Q", fh.read(8))[0] != n:
                return None
            ids = np.empty(n, dtype="<i8")
            if not _read_exact(fh, ids):
                return None
    except (OSError, struct.error):
        return None
    if ids_digest(ids) != meta["ids_sha256"] or (n > 1 and not (np.diff(ids) > 0).all()):
        return None
    return FlatIndex(dim, buf, ids.astype(np.int64, copy=False))


def write(paths: SnapshotPaths, flat: FlatIndex, meta: dict[str, Any]) -> dict[str, Any]:
    """Persist ``flat`` (must hold no masked rows) atomically; caller holds the lock. Returns the meta."""
    if flat.n_dead:
        raise ValueError("compact before writing a snapshot")
    paths.directory.mkdir(parents=True, exist_ok=True)
    remove_temp(paths)
    n, dim = flat.n_total, flat.dim
    try:
        with open(os.open(paths.faiss_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(b"IxMp" + _header(dim, n) + b"IxFI" + _header(dim, n) + struct.pack("<Q", n * dim))
            _write_all(fh, flat.matrix.astype("<f4", copy=False))
            fh.write(struct.pack("<Q", n))
            _write_all(fh, flat.ids.astype("<i8", copy=False))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(paths.faiss_tmp, paths.faiss)
        fsync_dir(paths.directory)
        full = dict(meta)
        full.update(format=FORMAT, ntotal=n, dim=dim, ids_sha256=ids_digest(flat.ids), written_at=time.time())
        with open(os.open(paths.meta_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            json.dump(full, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(paths.meta_tmp, paths.meta)
        fsync_dir(paths.directory)
    except BaseException:
        remove_temp(paths)
        raise
    return full


def remove_temp(paths: SnapshotPaths) -> None:
    for p in (paths.faiss_tmp, paths.meta_tmp):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def remove(paths: SnapshotPaths) -> bool:
    """Delete the snapshot (json first, so a half-removed pair is never trusted); caller holds the lock."""
    removed = False
    for p in (paths.meta, paths.faiss, paths.faiss_tmp, paths.meta_tmp):
        try:
            p.unlink()
            removed = True
        except FileNotFoundError:
            pass
    if removed:
        fsync_dir(paths.directory)
    return removed
