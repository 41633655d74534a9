"""SQLite: the single source of truth for every event, space, photo and face.

WAL mode lets many processes read while one writes; ``synchronous=FULL`` makes a commit
durable (fsync of the WAL) before ``put_photo`` returns; ``secure_delete`` zeroes deleted
rows and freed pages so deleted embeddings do not linger in the file. Connections are per
process (SQLite handles must not cross ``fork``) and per thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .access_db import SCHEMA as ACCESS_SCHEMA  # keys, event access, forget records: same file
from .errors import Health, StorageUnavailable, storage_faults
from .thumbnails_db import SCHEMA as THUMBNAILS_SCHEMA  # thumbnails, ingest outcomes: same file

DB_FILE = "facestore.sqlite3"
SCHEMA_VERSION = 2
# Version 2 (face quality, issue 10): faces gained size_px, sharpness, yaw, pitch, quality
# (NULL for faces stored before, and for precomputed vectors).
FACE_QUALITY_COLUMNS = ("size_px", "sharpness", "yaw", "pitch", "quality")

# Embeddings are immutable per face_id. ``seq`` is a per-space change counter: every write
# transaction bumps spaces.seq once and stamps the faces it adds and the tombstones of the
# faces it removes with the new value, so a process whose cache is at seq S catches up
# with two range queries (faces seq > S, tombstones seq > S). face_id is AUTOINCREMENT, so
# ids grow in commit order and are never reused.
SCHEMA = """
CREATE TABLE IF NOT EXISTS spaces (
    sid         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,
    name        TEXT NOT NULL,
    engine      TEXT NOT NULL,
    model_id    TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    seq         INTEGER NOT NULL DEFAULT 0,
    tomb_floor  INTEGER NOT NULL DEFAULT 0,  -- tombstones with seq <= tomb_floor were pruned
    snap_seq    INTEGER NOT NULL DEFAULT 0,  -- seq of the newest snapshot written
    n_photos    INTEGER NOT NULL DEFAULT 0,
    n_faces     INTEGER NOT NULL DEFAULT 0,
    n_empty     INTEGER NOT NULL DEFAULT 0,  -- photos without faces
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    UNIQUE (event_id, name)
);
CREATE TABLE IF NOT EXISTS photos (
    pid         INTEGER PRIMARY KEY AUTOINCREMENT,
    sid         INTEGER NOT NULL,
    photo_id    TEXT NOT NULL,
    source_url  TEXT,
    faces       INTEGER NOT NULL,
    ingested_at REAL NOT NULL,
    UNIQUE (sid, photo_id)
);
CREATE TABLE IF NOT EXISTS faces (
    face_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    sid         INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    det_score   REAL NOT NULL,
    norm        REAL NOT NULL,
    embedding   BLOB NOT NULL,          -- float32 little-endian, L2-normalised
    size_px     REAL,                   -- face quality (schema 2), NULL when unknown
    sharpness   REAL,
    yaw         REAL,
    pitch       REAL,
    quality     REAL
);
CREATE INDEX IF NOT EXISTS faces_sid_seq ON faces (sid, seq);
CREATE INDEX IF NOT EXISTS faces_pid ON faces (pid);
-- covering (face_id is the rowid): a snapshot load reads each face's photo and norm from it
CREATE INDEX IF NOT EXISTS faces_sid_meta ON faces (sid, pid, norm);
CREATE TABLE IF NOT EXISTS tombstones (
    sid         INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    face_id     INTEGER NOT NULL,
    kind        INTEGER NOT NULL,       -- 0: replaced by a re-put, 1: deleted (snapshots must go)
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tombstones_sid_seq ON tombstones (sid, seq);
"""

def _add_face_quality_columns(c: sqlite3.Connection) -> None:
    """Schema 1 -> 2: a file made before face quality keeps its faces (columns NULL).
    Runs in the schema transaction; a fresh file already has the columns."""
    have = {row[1] for row in c.execute("PRAGMA table_info(faces)")}
    for name in FACE_QUALITY_COLUMNS:
        if name not in have:
            c.execute(f"ALTER TABLE faces ADD COLUMN {name} REAL")


TOMB_REPLACED = 0
TOMB_DELETED = 1


class Database:
    """Per-process, per-thread SQLite connections to one store file, with transaction helpers."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 60.0, health: Health | None = None) -> None:
        self.path = str(path)
        self.health = health
        self.busy_timeout_ms = int(busy_timeout_s * 1000)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        # Connections inherited through fork are never used or closed in the child:
        # closing them could disturb the parent's locks. They are kept referenced here.
        self._abandoned: list[object] = []
        self._closed = False
        self._init_schema()

    # -- connections --------------------------------------------------------
    def _check_fork(self) -> None:
        pid = os.getpid()
        if pid != self._pid:
            # Runs first thing in a forked child, before it has other threads. The parent's
            # lock may have been held by one of its threads at fork time: replace, never wait.
            self._lock = threading.Lock()
            self._abandoned.append((self._local, self._conns))
            self._local = threading.local()
            self._conns = []
            self._pid = pid

    def conn(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("store is closed")
        self._check_fork()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        for _ in range(50):  # switching a fresh file to WAL needs a moment of exclusivity
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                break
            except sqlite3.OperationalError:
                time.sleep(0.05)
        else:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not put {self.path} in WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA journal_size_limit=67108864")
        conn.execute("PRAGMA cache_size=-32768")
        return conn

    def _init_schema(self) -> None:
        with self.write() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has schema {version}, newer than this code ({SCHEMA_VERSION})")
            for stmt in (SCHEMA + ACCESS_SCHEMA + THUMBNAILS_SCHEMA).split(";"):
                if stmt.strip():
                    c.execute(stmt)
            if version < 2:
                _add_face_quality_columns(c)
            if version < SCHEMA_VERSION:
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- transactions -------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; waits (busy_timeout) for other writers instead of failing.

        Storage faults (disk full, read-only, lock timeout...) roll the whole transaction
        back and raise StorageFull / StorageUnavailable (store/errors.py)."""
        with self._reopen_after_fault(), storage_faults(self.health):
            conn = self.conn()
            if conn.in_transaction:
                raise RuntimeError("nested write transaction")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may have rolled back already
                        conn.execute("ROLLBACK")
                raise
        if self.health is not None:
            self.health.succeeded()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one consistent snapshot."""
        with self._reopen_after_fault(), storage_faults(self.health):
            conn = self.conn()
            if conn.in_transaction:  # joined: the outer transaction's snapshot
                yield conn
                return
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    @contextmanager
    def _reopen_after_fault(self) -> Iterator[None]:
        """After a read-only / cannot-open / I/O fault, drop this thread's connection: SQLite
        keeps a handle it opened read-only read-only for good, so the next call opens afresh
        and writes work again once the fault is gone (no restart)."""
        try:
            yield
        except StorageUnavailable as exc:
            if exc.reason != "locked":
                conn = getattr(self._local, "conn", None)
                if conn is not None and not conn.in_transaction:
                    self._local.conn = None
                    with self._lock:
                        if conn in self._conns:
                            self._conns.remove(conn)
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
            raise

    def checkpoint(self, wait_s: float = 5.0) -> bool:
        """Copy the WAL into the main file and truncate it; True when fully done.

        Needed after deletes: until then the deleted rows' old page images may remain in
        the -wal file. Returns False if other connections still read old snapshots after
        ``wait_s``; a later checkpoint (the next delete, or ``FaceStore.checkpoint``) finishes it.
        """
        conn = self.conn()
        if conn.in_transaction:
            raise RuntimeError("checkpoint inside a transaction")
        conn.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
        try:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        return busy == 0

    def close(self) -> None:
        """Close this process's connections (inherited ones are left alone)."""
        self._check_fork()
        with self._lock:
            conns, self._conns = self._conns, []
            self._local = threading.local()
            self._closed = True
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
