"""FaceStore: per-(event, space) exact face search, shared safely by many processes and hosts.

How the pieces fit:

- The database is the only source of truth: SQLite in the data dir (store/sqlite.py, the
  default) or PostgreSQL (store/postgres.py, ``store_url``), both speaking store/sql.py.
  A write is one transaction; when ``put_photo`` returns, the photo is durable and visible
  to every process on every host.
- Each process caches a ``FlatIndex`` per hot (event, space) (store/cache.py) and brings it
  up to date by change ``seq`` before every search (store/searching.py).
- Snapshots and approximate indexes are a per-host cache for cold starts (store/upkeep.py).
- Deletes commit first, then remove the affected snapshots on this host (other hosts drop
  theirs when their next search sees the delete) and make the erasure final in the
  database (SQLite: WAL checkpoint; PostgreSQL: VACUUM).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import errors
from . import ann, snapshot, sql, thumbnails_db
from .backends import open_backend
from .cache import EntryCache
from .errors import Health, storage_faults
from .ids import validate_event_id, validate_photo_id
from .models import SPACE_NAMES, FaceRecord, PhotoState, Space
from .searching import Searching
from .upkeep import SnapshotUpkeep
from .vectors import prepare_faces, validate_space, validate_space_name

_MAX_URL = 8192


def _int_list(values: Sequence[int], what: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise errors.invalid_face(f"{what} must be integers")
        out.append(int(v))
    return out


class FaceStore(Searching, SnapshotUpkeep):
    """See the module docstring. Safe to share between threads; one instance per process."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        store_url: str | None = None,
        pool_max: int = 4,
        connect_timeout_s: float = 5.0,
        faiss_threads: int = 1,
        snapshot_min_faces: int = 10_000,
        snapshot_refresh_fraction: float = 0.25,
        cache_max_bytes: int | None = 4 << 30,
        tombstone_retention_s: float = 24 * 3600.0,
        busy_timeout_s: float = 60.0,
        checkpoint_wait_s: float = 2.0,
        ann_min_faces: int = 0,
        ann_sigmas: float = ann.DEFAULT_SIGMAS,
    ) -> None:
        """Open (creating if needed) the store: the database, and this host's cache under ``data_dir``.

        ``store_url``: None → SQLite in ``data_dir``; ``postgresql://…`` → that database
        (``pool_max`` connections per process, ``connect_timeout_s`` before a 503).
        ``snapshot_min_faces``: events smaller than this are rebuilt from the database on a cold
        start (fast enough) and get no snapshot. A snapshot is rewritten once the faces
        changed since it reach ``max(snapshot_min_faces, snapshot_refresh_fraction * faces)``.
        ``cache_max_bytes``: least recently searched events are dropped from this process's
        memory above it (None: no limit); the event being searched always stays.
        ``ann_min_faces``: events with at least this many faces may be searched approximately
        (store/ann.py) once a writer built their index (0: never).
        """
        self.data_dir = Path(data_dir)
        self.health = Health(self.data_dir)
        self.faiss_threads = max(1, int(faiss_threads))
        self.snapshot_min_faces = int(snapshot_min_faces)
        self.snapshot_refresh_fraction = float(snapshot_refresh_fraction)
        self.cache_max_bytes = cache_max_bytes
        self.tombstone_retention_s = float(tombstone_retention_s)
        self.checkpoint_wait_s = float(checkpoint_wait_s)
        self.ann_min_faces = int(ann_min_faces)
        self.ann_sigmas = float(ann_sigmas)
        self._locks = snapshot.SnapshotLocks(self.data_dir)
        self._cache = EntryCache(cache_max_bytes)
        self._stale_at: dict[tuple[str, str], float] = {}  # last one-statement match that found writes (searching.py)
        with storage_faults(self.health):  # a read-only or full data dir: a clear error, not a crash
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._db = open_backend(self.data_dir, store_url, busy_timeout_s=busy_timeout_s, health=self.health,
                                    pool_max=pool_max, connect_timeout_s=connect_timeout_s)
            snapshot.fsync_dir(self.data_dir)  # the database files' directory entries survive power loss
            self.sweep_snapshots()

    # ------------------------------------------------------------------ writes
    def put_photo(
        self,
        event_id: str,
        photo_id: str,
        space: Space,
        faces: Sequence[FaceRecord],
        *,
        source_url: str | None = None,
    ) -> int:
        """Store (or replace) one photo's faces in ``space``; durable when it returns.

        A photo with zero faces is recorded too, so it is not retried. Returns the face count.
        """
        return self.put_photos(event_id, space, [(photo_id, faces, source_url)])[0]

    def put_photos(
        self,
        event_id: str,
        space: Space,
        photos: Iterable[tuple[str, Sequence[FaceRecord], str | None]],
    ) -> list[int]:
        """Bulk form of ``put_photo``: many (photo_id, faces, source_url) in ONE transaction.

        All or nothing; returns each photo's face count. For bulk ingest and benchmarks.
        """
        validate_event_id(event_id)
        validate_space(space)
        prepared = []
        for photo_id, faces, source_url in photos:
            validate_photo_id(photo_id)
            if source_url is not None and (not isinstance(source_url, str) or len(source_url) > _MAX_URL):
                raise errors.invalid_source_url(_MAX_URL)
            emb, meta = prepare_faces(faces, space.dim)
            prepared.append((photo_id, emb, meta, source_url))
        if not prepared:
            return []
        now = time.time()
        counts = []
        with self._db.write() as c:
            sid, seq = sql.space_for_write(c, event_id, space, now)
            delta = sql.Delta()
            for photo_id, emb, meta, source_url in prepared:
                counts.append(sql.put_one(c, sid, seq, photo_id, emb, meta, source_url, now, delta))
            sql.finish_write(c, sid, seq, now, delta, self.tombstone_retention_s)
        self._cache.count("puts", len(counts))
        return counts

    # ----------------------------------------------------------------- deletes
    def delete_photo(self, event_id: str, photo_id: str) -> dict[str, int]:
        """Remove a photo from every space: {space_name: faces_removed}. 404 unknown_photo if absent."""
        validate_event_id(event_id)
        validate_photo_id(photo_id)
        with self._db.write() as c:
            out = sql.delete_photo(c, event_id, photo_id, time.time(), self.tombstone_retention_s)
            thumbnails_db.delete_photo_rows(c, event_id, photo_id)
        self._after_delete(event_id, list(out))
        self._cache.count("photo_deletes")
        return out

    def delete_faces(self, event_id: str, space_name: str, face_ids: Sequence[int]) -> int:
        """Remove individual faces (for "forget me"); their photos stay, with fewer faces. Returns count."""
        validate_event_id(event_id)
        validate_space_name(space_name)
        ids = sorted(set(_int_list(face_ids, "face_ids")))
        with self._db.write() as c:
            n = sql.delete_faces(c, event_id, space_name, ids, time.time(), self.tombstone_retention_s)
        if n:
            self._after_delete(event_id, [space_name])
            self._cache.count("face_deletes", n)
        return n

    def drop_space(self, event_id: str, space_name: str) -> int:
        """Remove an event's whole index in one space (before reindexing with a new model). Returns faces removed."""
        validate_event_id(event_id)
        validate_space_name(space_name)
        with self._db.write() as c:
            sid = sql.space_sid(c, event_id, space_name)
            if sid is None:
                return 0
            removed = sql.drop_sid(c, sid)
        self._after_delete(event_id, [space_name], forget=True, bulk=True)
        return removed

    def delete_event(self, event_id: str) -> dict[str, int]:
        """Remove an event from every space, snapshots included: {space_name: faces_removed}."""
        validate_event_id(event_id)
        out: dict[str, int] = {}
        with self._db.write() as c:
            rows = sql.event_sids(c, event_id)
            if not rows and not thumbnails_db.event_has_rows(c, event_id):
                raise errors.unknown_event(event_id)
            thumbnails_db.delete_event_rows(c, event_id)
            for sid, name in rows:
                out[name] = sql.drop_sid(c, sid)
        self._after_delete(event_id, list(SPACE_NAMES), forget=True, bulk=True)
        self._cache.count("event_deletes")
        return out

    def _after_delete(self, event_id: str, space_names: Iterable[str], *, forget: bool = False,
                      bulk: bool = False) -> None:
        """After a committed delete: this host's snapshots holding the deleted vectors go, then
        the database makes the erasure final (``bulk``: a whole event/space went)."""
        for name in space_names:
            paths = snapshot.SnapshotPaths.of(self.data_dir, name, event_id)
            with self._locks.hold(name, event_id):
                snapshot.remove(paths)
                ann.remove(ann.AnnPaths.of(self.data_dir, name, event_id))
            if forget:
                self._cache.drop((event_id, name))
        self._db.erase(self.checkpoint_wait_s, bulk)

    def checkpoint(self, wait_s: float = 5.0) -> bool:
        """Make past deletes final in the database files (SQLite: fold and truncate the WAL)."""
        return self._db.erase(wait_s)

    # ----------------------------------------------------------------- queries
    def space_of(self, event_id: str, space_name: str) -> Space | None:
        validate_event_id(event_id)
        validate_space_name(space_name)
        with self._db.read() as c:
            return sql.space_of(c, event_id, space_name)

    def event_exists(self, event_id: str) -> bool:
        validate_event_id(event_id)
        with self._db.read() as c:
            return sql.event_exists(c, event_id)

    def photo_state(self, event_id: str, photo_id: str, space_name: str) -> PhotoState | None:
        validate_event_id(event_id)
        validate_photo_id(photo_id)
        validate_space_name(space_name)
        with self._db.read() as c:
            return sql.photo_state(c, event_id, photo_id, space_name)

    def photo_states(self, event_id: str, space_name: str, photo_ids: Sequence[str]) -> dict[str, PhotoState]:
        """``photo_state`` for many photos in one query (match results): {photo_id: state}."""
        validate_event_id(event_id)
        validate_space_name(space_name)
        if not photo_ids:
            return {}
        with self._db.read() as c:
            return sql.photo_states(c, event_id, space_name, photo_ids)

    def totals(self) -> dict[str, dict[str, int]]:
        """{space: {"events", "photos", "faces"}} over the whole store, from the per-space counters
        (one cheap query: what /metrics reports on every scrape)."""
        with self._db.read() as c:
            return sql.totals(c)

    def list_photos(self, event_id: str, space_name: str | None = None) -> list[PhotoState]:
        """Every photo of the event (in one space, or in all: one entry per space), by photo_id."""
        validate_event_id(event_id)
        if space_name is not None:
            validate_space_name(space_name)
        with self._db.read() as c:
            return sql.list_photos(c, event_id, space_name)

    def list_events(self) -> list[str]:
        with self._db.read() as c:
            return sql.list_events(c)

    def event_summary(self, event_id: str) -> dict | None:
        validate_event_id(event_id)
        with self._db.read() as c:
            return sql.event_summary(c, event_id)

    # ------------------------------------------------------------ cache admin
    def evict(self, event_id: str | None = None) -> int:
        """Drop cached indexes (all, or one event's) from this process's memory."""
        return self._cache.evict(event_id)

    def stats(self) -> dict:
        """This process's view, for /metrics: cached indexes and counters. No I/O."""
        return self._cache.stats()

    @property
    def db(self) -> Any:  # SqliteBackend or PostgresBackend
        """The database, for the tables kept next to the faces (access_db.py, thumbnails_db.py)."""
        return self._db

    def close(self) -> None:
        """Close this process's database connections and drop its caches."""
        self.evict()
        self._db.close()
