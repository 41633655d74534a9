"""FaceStore: per-(event, space) exact face search, shared safely by many processes.

How the pieces fit (see also db.py, index.py, snapshot.py):

- SQLite (WAL, synchronous=FULL, secure_delete) is the only source of truth. A write is one
  transaction; when ``put_photo`` returns, the photo is durable and visible to everyone.
- Each process caches a ``FlatIndex`` per hot (event, space). Before every search it reads
  the space's change ``seq`` inside the same read transaction it searches in and, if it moved,
  applies only what changed since (tombstoned faces masked, new faces appended). A photo
  acknowledged by any process is therefore visible to the very next search anywhere.
- Snapshots (``<data>/<space>/<event>.faiss`` + ``.json``) are a cache for cold starts:
  load, then apply the DB changes since the snapshot's seq. They are written by searching
  processes when the cache has drifted far enough from the file, never by ``put_photo``, so
  a write costs the same whatever the event's size.
- Deletes commit to SQLite first, then remove the affected snapshots and checkpoint the WAL,
  so deleted embeddings leave every file under the data dir.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import errors
from ..errors import ApiError
from . import ann, ranking, snapshot, thumbnails_db
from .db import DB_FILE, TOMB_DELETED, TOMB_REPLACED, Database
from .errors import Health, StorageError, storage_faults
from .ids import validate_event_id, validate_photo_id
from .index import FlatIndex, get_faiss
from .models import SPACE_NAMES, FaceRecord, Hit, PhotoState, Space
from .vectors import normalize_query, prepare_faces, validate_space, validate_space_name

_FETCH_CHUNK = 8192
_PRUNE_EVERY = 64  # try pruning old tombstones once per this many writes to a space
_PRUNE_SCAN = 20_000
_MAX_URL = 8192


class _Entry:
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


class _Delta:
    __slots__ = ("empty", "faces", "photos")

    def __init__(self) -> None:
        self.photos = self.faces = self.empty = 0


def _int_list(values: Sequence[int], what: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise errors.invalid_face(f"{what} must be integers")
        out.append(int(v))
    return out


class FaceStore:
    """See the module docstring. Safe to share between threads; one instance per process."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
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
        """Open (creating if needed) the store under ``data_dir``.

        ``snapshot_min_faces``: events smaller than this are rebuilt from SQLite on a cold
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
        self._guard = threading.Lock()
        self._pid = os.getpid()
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._counters: dict[str, int] = {}
        self._eraser: threading.Thread | None = None  # retries a checkpoint a reader blocked
        self._eraser_pid = 0
        self._erase_again = threading.Event()
        self._closing = threading.Event()
        with storage_faults(self.health):  # a read-only or full data dir: a clear error, not a crash
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._db = Database(self.data_dir / DB_FILE, busy_timeout_s=busy_timeout_s, health=self.health)
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
            sid, seq = self._space_for_write(c, event_id, space, now)
            delta = _Delta()
            for photo_id, emb, meta, source_url in prepared:
                counts.append(self._put_one(c, sid, seq, photo_id, emb, meta, source_url, now, delta))
            self._finish_write(c, sid, seq, now, delta)
        self._count("puts", len(counts))
        return counts

    def _space_for_write(self, c: sqlite3.Connection, event_id: str, space: Space, now: float) -> tuple[int, int]:
        row = c.execute(
            "SELECT sid, engine, model_id, dim, seq FROM spaces WHERE event_id=? AND name=?", (event_id, space.name)
        ).fetchone()
        if row is None:
            cur = c.execute(
                "INSERT INTO spaces (event_id, name, engine, model_id, dim, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                (event_id, space.name, space.engine, space.model_id, int(space.dim), now, now),
            )
            return int(cur.lastrowid), 1  # type: ignore[arg-type]
        sid, engine, model_id, dim, seq = row
        recorded = Space(space.name, engine, model_id, dim)
        if (engine, model_id, dim) != (space.engine, space.model_id, int(space.dim)):
            raise errors.space_mismatch(event_id, recorded, space)
        return int(sid), int(seq) + 1

    def _put_one(
        self,
        c: sqlite3.Connection,
        sid: int,
        seq: int,
        photo_id: str,
        emb: np.ndarray,
        meta: list[tuple[float, ...]],
        source_url: str | None,
        now: float,
        delta: _Delta,
    ) -> int:
        k = len(meta)
        row = c.execute("SELECT pid, faces FROM photos WHERE sid=? AND photo_id=?", (sid, photo_id)).fetchone()
        if row is not None:
            pid, old = int(row[0]), int(row[1])
            if old:
                c.execute(
                    "INSERT INTO tombstones (sid, seq, face_id, kind, created_at) "
                    "SELECT sid, ?, face_id, ?, ? FROM faces WHERE pid=?",
                    (seq, TOMB_REPLACED, now, pid),
                )
                c.execute("DELETE FROM faces WHERE pid=?", (pid,))
            c.execute(
                "UPDATE photos SET source_url=?, faces=?, ingested_at=? WHERE pid=?", (source_url, k, now, pid)
            )
            delta.faces -= old
            delta.empty -= old == 0
        else:
            cur = c.execute(
                "INSERT INTO photos (sid, photo_id, source_url, faces, ingested_at) VALUES (?,?,?,?,?)",
                (sid, photo_id, source_url, k, now),
            )
            pid = int(cur.lastrowid)  # type: ignore[arg-type]
            delta.photos += 1
        if k:
            emb = emb.astype("<f4", copy=False)
            c.executemany(
                "INSERT INTO faces (sid, pid, seq, x1, y1, x2, y2, det_score, norm, "
                "size_px, sharpness, yaw, pitch, quality, embedding) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(sid, pid, seq, *m, emb[i].tobytes()) for i, m in enumerate(meta)],
            )
        delta.faces += k
        delta.empty += k == 0
        return k

    def _finish_write(self, c: sqlite3.Connection, sid: int, seq: int, now: float, delta: _Delta) -> None:
        c.execute(
            "UPDATE spaces SET seq=?, updated_at=?, n_photos=n_photos+?, n_faces=n_faces+?, n_empty=n_empty+? "
            "WHERE sid=?",
            (seq, now, delta.photos, delta.faces, delta.empty, sid),
        )
        if seq % _PRUNE_EVERY == 0:
            self._prune_tombstones(c, sid, now)

    def _prune_tombstones(self, c: sqlite3.Connection, sid: int, now: float) -> None:
        """Forget tombstones older than the retention (and than the newest snapshot).

        A cache or snapshot older than ``tomb_floor`` can no longer catch up incrementally
        and is rebuilt, so this only trims history nobody should still need.
        """
        floor, snap_seq = c.execute("SELECT tomb_floor, snap_seq FROM spaces WHERE sid=?", (sid,)).fetchone()
        bound = c.execute(
            "SELECT MAX(seq) FROM (SELECT seq, created_at FROM tombstones WHERE sid=? AND seq>? "
            "ORDER BY seq LIMIT ?) WHERE created_at < ?",
            (sid, floor, _PRUNE_SCAN, now - self.tombstone_retention_s),
        ).fetchone()[0]
        if bound is None:
            return
        if snap_seq:
            bound = min(bound, snap_seq)
        if bound > floor:
            c.execute("DELETE FROM tombstones WHERE sid=? AND seq<=?", (sid, bound))
            c.execute("UPDATE spaces SET tomb_floor=? WHERE sid=?", (bound, sid))

    # ----------------------------------------------------------------- deletes
    def delete_photo(self, event_id: str, photo_id: str) -> dict[str, int]:
        """Remove a photo from every space: {space_name: faces_removed}. 404 unknown_photo if absent."""
        validate_event_id(event_id)
        validate_photo_id(photo_id)
        now = time.time()
        out: dict[str, int] = {}
        with self._db.write() as c:
            rows = c.execute(
                "SELECT s.sid, s.name, s.seq, p.pid, p.faces FROM spaces s JOIN photos p ON p.sid = s.sid "
                "WHERE s.event_id=? AND p.photo_id=?",
                (event_id, photo_id),
            ).fetchall()
            if not rows:
                raise errors.unknown_photo(event_id, photo_id)
            thumbnails_db.delete_photo_rows(c, event_id, photo_id)
            for sid, name, seq, pid, faces in rows:
                seq = int(seq) + 1
                c.execute(
                    "INSERT INTO tombstones (sid, seq, face_id, kind, created_at) "
                    "SELECT sid, ?, face_id, ?, ? FROM faces WHERE pid=?",
                    (seq, TOMB_DELETED, now, pid),
                )
                c.execute("DELETE FROM faces WHERE pid=?", (pid,))
                c.execute("DELETE FROM photos WHERE pid=?", (pid,))
                delta = _Delta()
                delta.photos, delta.faces, delta.empty = -1, -int(faces), -(int(faces) == 0)
                self._finish_write(c, sid, seq, now, delta)
                out[name] = int(faces)
        self._after_delete(event_id, list(out))
        self._count("photo_deletes")
        return out

    def delete_faces(self, event_id: str, space_name: str, face_ids: Sequence[int]) -> int:
        """Remove individual faces (for "forget me"); their photos stay, with fewer faces. Returns count."""
        validate_event_id(event_id)
        validate_space_name(space_name)
        ids = sorted(set(_int_list(face_ids, "face_ids")))
        now = time.time()
        with self._db.write() as c:
            row = c.execute("SELECT sid, seq FROM spaces WHERE event_id=? AND name=?", (event_id, space_name)).fetchone()
            if row is None:
                raise self._missing(c, event_id, space_name)
            if not ids:
                return 0
            sid, seq = int(row[0]), int(row[1]) + 1
            found = c.execute(
                "SELECT face_id, pid FROM faces WHERE face_id IN (SELECT value FROM json_each(?)) AND sid=?",
                (_json_ints(ids), sid),
            ).fetchall()
            if not found:
                return 0
            found_ids = _json_ints([f for f, _ in found])
            c.execute(
                "INSERT INTO tombstones (sid, seq, face_id, kind, created_at) "
                "SELECT ?, ?, value, ?, ? FROM json_each(?)",
                (sid, seq, TOMB_DELETED, now, found_ids),
            )
            c.execute("DELETE FROM faces WHERE face_id IN (SELECT value FROM json_each(?))", (found_ids,))
            per_photo: dict[int, int] = {}
            for _f, pid in found:
                per_photo[pid] = per_photo.get(pid, 0) + 1
            delta = _Delta()
            for pid, n in per_photo.items():
                left = c.execute("UPDATE photos SET faces=faces-? WHERE pid=? RETURNING faces", (n, pid)).fetchone()[0]
                delta.empty += left == 0
            delta.faces = -len(found)
            self._finish_write(c, sid, seq, now, delta)
        self._after_delete(event_id, [space_name])
        self._count("face_deletes", len(found))
        return len(found)

    def drop_space(self, event_id: str, space_name: str) -> int:
        """Remove an event's whole index in one space (before reindexing with a new model). Returns faces removed."""
        validate_event_id(event_id)
        validate_space_name(space_name)
        with self._db.write() as c:
            row = c.execute("SELECT sid, n_faces FROM spaces WHERE event_id=? AND name=?", (event_id, space_name)).fetchone()
            if row is None:
                return 0
            removed = self._drop_sid(c, int(row[0]))
        self._after_delete(event_id, [space_name], forget=True)
        return removed

    def delete_event(self, event_id: str) -> dict[str, int]:
        """Remove an event from every space, snapshots included: {space_name: faces_removed}."""
        validate_event_id(event_id)
        out: dict[str, int] = {}
        with self._db.write() as c:
            rows = c.execute("SELECT sid, name FROM spaces WHERE event_id=?", (event_id,)).fetchall()
            if not rows and not thumbnails_db.event_has_rows(c, event_id):
                raise errors.unknown_event(event_id)
            thumbnails_db.delete_event_rows(c, event_id)
            for sid, name in rows:
                out[name] = self._drop_sid(c, int(sid))
        self._after_delete(event_id, list(SPACE_NAMES), forget=True)
        self._count("event_deletes")
        return out

    @staticmethod
    def _drop_sid(c: sqlite3.Connection, sid: int) -> int:
        removed = c.execute("SELECT COUNT(*) FROM faces WHERE sid=?", (sid,)).fetchone()[0]
        c.execute("DELETE FROM faces WHERE sid=?", (sid,))
        c.execute("DELETE FROM photos WHERE sid=?", (sid,))
        c.execute("DELETE FROM tombstones WHERE sid=?", (sid,))
        c.execute("DELETE FROM spaces WHERE sid=?", (sid,))
        return int(removed)

    def _after_delete(self, event_id: str, space_names: Iterable[str], *, forget: bool = False) -> None:
        """After a committed delete: snapshots holding the deleted vectors go, then the WAL is checkpointed."""
        for name in space_names:
            paths = snapshot.SnapshotPaths.of(self.data_dir, name, event_id)
            with self._locks.hold(name, event_id):
                snapshot.remove(paths)
                ann.remove(ann.AnnPaths.of(self.data_dir, name, event_id))
            if forget:
                self._drop_entry((event_id, name))
        self._finish_erasure()

    def _finish_erasure(self) -> None:
        """Checkpoint now; when a reader in another process blocks it (its snapshot still
        reads the old pages), keep retrying in the background until it completes, so the
        deleted bytes leave the files as soon as that reader is done, with no later delete."""
        if self.checkpoint(self.checkpoint_wait_s):
            return
        self._count("checkpoints_deferred")
        with self._guard:
            if self._eraser is not None and self._eraser.is_alive() and self._eraser_pid == os.getpid():
                self._erase_again.set()
                return
            self._erase_again.clear()
            self._eraser_pid = os.getpid()
            self._eraser = threading.Thread(target=self._retry_checkpoint, name="erasure-checkpoint", daemon=True)
            self._eraser.start()

    def _retry_checkpoint(self) -> None:
        delay = 0.1
        while not self._closing.wait(delay):
            self._erase_again.clear()
            try:
                if self.checkpoint(0.0) and not self._erase_again.is_set():
                    return
            except RuntimeError:  # closed meanwhile
                return
            delay = min(2 * delay, 2.0)

    def checkpoint(self, wait_s: float = 5.0) -> bool:
        """Fold the WAL into the database file and truncate it (so deleted rows leave the -wal file too)."""
        try:
            return self._db.checkpoint(wait_s)
        except sqlite3.OperationalError:
            return False

    # ----------------------------------------------------------------- queries
    def space_of(self, event_id: str, space_name: str) -> Space | None:
        validate_event_id(event_id)
        validate_space_name(space_name)
        with self._db.read() as c:
            row = c.execute(
                "SELECT name, engine, model_id, dim FROM spaces WHERE event_id=? AND name=?", (event_id, space_name)
            ).fetchone()
        return Space(row[0], row[1], row[2], int(row[3])) if row else None

    def event_exists(self, event_id: str) -> bool:
        validate_event_id(event_id)
        with self._db.read() as c:
            return c.execute("SELECT 1 FROM spaces WHERE event_id=? LIMIT 1", (event_id,)).fetchone() is not None

    def photo_state(self, event_id: str, photo_id: str, space_name: str) -> PhotoState | None:
        validate_event_id(event_id)
        validate_photo_id(photo_id)
        validate_space_name(space_name)
        with self._db.read() as c:
            row = c.execute(
                "SELECT p.photo_id, p.source_url, p.faces, p.ingested_at, s.model_id FROM spaces s "
                "JOIN photos p ON p.sid = s.sid WHERE s.event_id=? AND s.name=? AND p.photo_id=?",
                (event_id, space_name, photo_id),
            ).fetchone()
        return PhotoState(row[0], row[1], int(row[2]), float(row[3]), row[4]) if row else None

    def photo_states(self, event_id: str, space_name: str, photo_ids: Sequence[str]) -> dict[str, PhotoState]:
        """``photo_state`` for many photos in one query (match results): {photo_id: state}."""
        validate_event_id(event_id)
        validate_space_name(space_name)
        if not photo_ids:
            return {}
        with self._db.read() as c:
            rows = c.execute(
                "SELECT p.photo_id, p.source_url, p.faces, p.ingested_at, s.model_id FROM spaces s "
                "JOIN photos p ON p.sid = s.sid WHERE s.event_id=? AND s.name=? "
                "AND p.photo_id IN (SELECT value FROM json_each(?))",
                (event_id, space_name, json.dumps(list(photo_ids))),
            ).fetchall()
        return {r[0]: PhotoState(r[0], r[1], int(r[2]), float(r[3]), r[4]) for r in rows}

    def totals(self) -> dict[str, dict[str, int]]:
        """{space: {"events", "photos", "faces"}} over the whole store, from the per-space counters
        (one cheap query: what /metrics reports on every scrape)."""
        with self._db.read() as c:
            rows = c.execute(
                "SELECT name, COUNT(*), SUM(n_photos), SUM(n_faces) FROM spaces GROUP BY name ORDER BY name"
            ).fetchall()
        return {r[0]: {"events": int(r[1]), "photos": int(r[2] or 0), "faces": int(r[3] or 0)} for r in rows}

    def list_photos(self, event_id: str, space_name: str | None = None) -> list[PhotoState]:
        """Every photo of the event (in one space, or in all: one entry per space), by photo_id."""
        validate_event_id(event_id)
        if space_name is not None:
            validate_space_name(space_name)
        sql = (
            "SELECT p.photo_id, p.source_url, p.faces, p.ingested_at, s.model_id FROM spaces s "
            "JOIN photos p ON p.sid = s.sid WHERE s.event_id=?"
        )
        args: tuple[Any, ...] = (event_id,)
        if space_name is not None:
            sql += " AND s.name=?"
            args += (space_name,)
        sql += " ORDER BY p.photo_id, s.name"
        with self._db.read() as c:
            rows = c.execute(sql, args).fetchall()
        return [PhotoState(r[0], r[1], int(r[2]), float(r[3]), r[4]) for r in rows]

    def list_events(self) -> list[str]:
        with self._db.read() as c:
            return [r[0] for r in c.execute("SELECT DISTINCT event_id FROM spaces ORDER BY event_id")]

    def event_summary(self, event_id: str) -> dict | None:
        validate_event_id(event_id)
        with self._db.read() as c:
            rows = c.execute(
                "SELECT name, engine, model_id, dim, n_photos, n_faces, n_empty, updated_at, sid "
                "FROM spaces WHERE event_id=? ORDER BY name",
                (event_id,),
            ).fetchall()
            if not rows:
                return None
            if len(rows) == 1:
                photos = rows[0][4]
            else:  # a merge of the spaces' (sid, photo_id) index ranges, no temp b-tree
                photos = c.execute(
                    "SELECT COUNT(*) FROM (" + " UNION ".join(["SELECT photo_id FROM photos WHERE sid=?"] * len(rows)) + ")",
                    [r[8] for r in rows],
                ).fetchone()[0]
        return {
            "event_id": event_id,
            "photos": int(photos),
            "spaces": {
                r[0]: {
                    "engine": r[1],
                    "model_id": r[2],
                    "dim": int(r[3]),
                    "photos": int(r[4]),
                    "faces": int(r[5]),
                    "photos_without_faces": int(r[6]),
                    "updated_at": float(r[7]),
                }
                for r in rows
            },
        }

    # ------------------------------------------------------------------ search
    def search(
        self,
        event_id: str,
        space: Space,
        query: np.ndarray,
        *,
        min_score: float = -1.0,
        limit: int | None = None,
    ) -> list[Hit]:
        """Exact search: every face with score >= min_score (at most ``limit``), best first, ties by face_id.

        Sees every write acknowledged by any process before the call.
        """
        validate_event_id(event_id)
        validate_space(space)
        q = normalize_query(query, space.dim)
        try:
            min_score = float(min_score)
        except (TypeError, ValueError):
            raise errors.invalid_min_score() from None
        if math.isnan(min_score):
            raise errors.invalid_min_score()
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0):
            raise errors.invalid_limit()
        with self._searching(event_id, space) as (entry, c):
            assert entry.flat is not None
            ids, scores = entry.flat.search(q, min_score, None if limit is None else int(limit))
            return self._hits(c, ids, scores)

    def match(
        self,
        event_id: str,
        space: Space,
        query: np.ndarray,
        spec: ranking.RankSpec,
        *,
        limit: int,
        after: tuple[float, str] | None = None,
    ) -> ranking.MatchPage:
        """One row per photo (its best face), best first (rank desc, photo_id asc), at most
        ``limit`` rows strictly after the keyset ``after`` = (rank, photo_id); plus the total
        of qualifying photos. Costs one scan of the event whatever the number that qualify;
        above ``ann_min_faces`` faces an approximate index is used when one is built (the
        page says ``search="approximate"``). Metadata is read only for the rows returned."""
        validate_event_id(event_id)
        validate_space(space)
        q = normalize_query(query, space.dim)
        with self._searching(event_id, space) as (entry, c):
            flat = entry.flat
            assert flat is not None
            if entry.ann is None and self.ann_min_faces > 0:
                entry.ann = ann.AnnCache(ann.AnnPaths.of(self.data_dir, space.name, event_id), self.ann_sigmas)
            hits = ann.search(entry.ann, int(entry.sid or 0), flat, q, spec, self.ann_min_faces)
            if hits is None:
                ranks, kind = ranking.exact_photo_ranks(flat, q, spec), "exact"
            else:
                ranks, kind = ranking.sparse_photo_ranks(flat, hits[0], hits[1], spec), "approximate"
            return ranking.page(c, flat, ranks, spec, limit=int(limit), after=after, search=kind)

    @contextlib.contextmanager
    def _searching(self, event_id: str, space: Space) -> Iterator[tuple[_Entry, sqlite3.Connection]]:
        """The synced cache entry (locked) and the read transaction a search runs in; then upkeep."""
        get_faiss(self.faiss_threads)
        key = (event_id, space.name)
        with self._locked_entry(key) as entry:
            with self._db.read() as c:
                row = self._space_row(c, event_id, space.name)
                if row is None:
                    entry.reset()
                    self._drop_entry(key)
                    raise self._missing(c, event_id, space.name)
                recorded = Space(space.name, row["engine"], row["model_id"], row["dim"])
                if recorded != Space(space.name, space.engine, space.model_id, int(space.dim)):
                    raise errors.space_mismatch(event_id, recorded, space)
                applied = self._sync(entry, c, row)
                yield entry, c
            entry.last_used = time.monotonic()
            self._count("searches")
            self._maintain(entry, applied)
        self._enforce_budget(key)

    @contextlib.contextmanager
    def _locked_entry(self, key: tuple[str, str]) -> Iterator[_Entry]:
        """This process's cache entry for ``key``, locked (taken again if evicted meanwhile)."""
        while True:
            entry = self._entry(key)
            entry.lock.acquire()
            if not entry.evicted:
                break
            entry.lock.release()
        try:
            yield entry
        finally:
            entry.lock.release()

    @staticmethod
    def _space_row(c: sqlite3.Connection, event_id: str, name: str) -> dict[str, Any] | None:
        row = c.execute(
            "SELECT sid, engine, model_id, dim, seq, tomb_floor, n_faces FROM spaces WHERE event_id=? AND name=?",
            (event_id, name),
        ).fetchone()
        if row is None:
            return None
        keys = ("sid", "engine", "model_id", "dim", "seq", "tomb_floor", "n_faces")
        return dict(zip(keys, row, strict=True))

    @staticmethod
    def _missing(c: sqlite3.Connection, event_id: str, name: str) -> ApiError:
        if c.execute("SELECT 1 FROM spaces WHERE event_id=? LIMIT 1", (event_id,)).fetchone() is None:
            return errors.unknown_event(event_id)
        return errors.not_indexed(event_id, name)

    def _hits(self, c: sqlite3.Connection, ids: np.ndarray, scores: np.ndarray) -> list[Hit]:
        if len(ids) == 0:
            return []
        rows = c.execute(
            "SELECT f.face_id, p.photo_id, f.x1, f.y1, f.x2, f.y2, f.det_score, f.norm "
            "FROM faces f JOIN photos p ON p.pid = f.pid WHERE f.face_id IN (SELECT value FROM json_each(?))",
            (_json_ints(ids.tolist()),),
        ).fetchall()
        meta = {r[0]: r for r in rows}
        hits = []
        for face_id, score in zip(ids.tolist(), scores.tolist(), strict=True):
            r = meta.get(face_id)
            if r is None:  # cannot happen inside one read transaction; never invent data
                continue
            hits.append(Hit(face_id, r[1], float(score), (r[2], r[3], r[4], r[5]), r[6], r[7]))
        return hits

    # ------------------------------------------------------------ cache sync
    def _sync(self, entry: _Entry, c: sqlite3.Connection, row: dict[str, Any]) -> int:
        """Bring the cache to the DB state ``row`` was read in; returns faces added + removed."""
        sid, seq = row["sid"], row["seq"]
        if entry.flat is None or entry.sid != sid or entry.seq < row["tomb_floor"] or entry.seq > seq:
            entry.reset()
            self._load(entry, c, row)
        assert entry.flat is not None
        applied = 0
        if entry.seq < seq:
            applied = self._apply_changes(entry.flat, c, sid, entry.seq)
            entry.seq = seq
            entry.changes += applied
            self._count("syncs")
        entry.flat.maybe_compact()
        return applied

    def _apply_changes(self, flat: FlatIndex, c: sqlite3.Connection, sid: int, since: int) -> int:
        gone = [r[0] for r in c.execute("SELECT face_id FROM tombstones WHERE sid=? AND seq>?", (sid, since))]
        n = flat.remove(np.asarray(gone, dtype=np.int64)) if gone else 0
        cur = c.execute(
            "SELECT face_id, pid, norm, embedding FROM faces WHERE sid=? AND seq>? ORDER BY seq, face_id", (sid, since)
        )
        return n + self._add_rows(flat, cur)

    @staticmethod
    def _add_rows(flat: FlatIndex, cur: sqlite3.Cursor) -> int:
        added = 0
        while True:
            chunk = cur.fetchmany(_FETCH_CHUNK)
            if not chunk:
                return added
            ids = np.fromiter((r[0] for r in chunk), dtype=np.int64, count=len(chunk))
            pids = np.fromiter((r[1] for r in chunk), dtype=np.int64, count=len(chunk))
            norms = np.fromiter((r[2] for r in chunk), dtype=np.float64, count=len(chunk))
            vecs = np.frombuffer(b"".join(r[3] for r in chunk), dtype="<f4").reshape(len(chunk), flat.dim)
            added += flat.add(ids, vecs, pids, norms)

    def _load(self, entry: _Entry, c: sqlite3.Connection, row: dict[str, Any]) -> None:
        """Fill an empty cache: from the snapshot if it is usable, else from SQLite."""
        event_id, name = entry.key
        sid, seq, dim = row["sid"], row["seq"], row["dim"]
        entry.sid = sid
        paths = snapshot.SnapshotPaths.of(self.data_dir, name, event_id)
        flat = None
        meta = None
        if row["n_faces"] >= self.snapshot_min_faces or paths.meta.exists():
            with self._locks.hold(name, event_id, exclusive=False):
                meta = snapshot.read_meta(paths)
                if meta and meta["sid"] == sid and row["tomb_floor"] <= meta["seq"] <= seq and meta["dim"] == dim:
                    flat = snapshot.load(paths, meta)
            if flat is not None and not self._spot_check(c, sid, flat):
                flat = None
                self._count("snapshot_rejected")
        if flat is not None and meta is not None:
            _fill_face_meta(c, sid, flat)
            entry.flat, entry.seq, entry.snap_seq, entry.changes = flat, meta["seq"], meta["seq"], 0
            entry.purge = self._deleted_since(c, sid, meta["seq"])
            self._count("snapshot_loads")
            return
        entry.purge = meta is not None or paths.faiss.exists()  # unusable leftovers: remove them
        flat = FlatIndex(dim)
        cur = c.execute("SELECT face_id, pid, norm, embedding FROM faces WHERE sid=? ORDER BY seq, face_id", (sid,))
        self._add_rows(flat, cur)
        entry.flat, entry.seq, entry.snap_seq, entry.changes = flat, seq, None, flat.n_total
        self._count("db_loads")

    @staticmethod
    def _spot_check(c: sqlite3.Connection, sid: int, flat: FlatIndex, samples: int = 32) -> bool:
        """Compare a few snapshot rows with SQLite, byte for byte (faces deleted since are skipped).

        The file's structure and id list are verified on load; this catches vectors that do
        not belong to their ids (e.g. a file restored from elsewhere) at the cost of one query.
        """
        if flat.n_total == 0:
            return True
        pos = np.unique(np.random.default_rng().integers(0, flat.n_total, size=min(samples, flat.n_total)))
        rows = c.execute(
            "SELECT face_id, embedding FROM faces WHERE face_id IN (SELECT value FROM json_each(?)) AND sid=?",
            (_json_ints(flat.ids[pos].tolist()), sid),
        ).fetchall()
        found = dict(rows)
        for p in pos.tolist():
            blob = found.get(int(flat.ids[p]))
            if blob is not None and bytes(blob) != flat.matrix[p].astype("<f4").tobytes():
                return False
        return True

    # ------------------------------------------------------------- snapshots
    def _maintain(self, entry: _Entry, applied: int) -> None:
        """After a search (entry lock held): keep the snapshot file fresh and clean."""
        flat = entry.flat
        if flat is None:
            return
        event_id, name = entry.key
        if entry.purge:
            with self._locks.hold(name, event_id):
                snapshot.remove(snapshot.SnapshotPaths.of(self.data_dir, name, event_id))
            entry.purge, entry.snap_seq = False, None
        if flat.n_alive < self.snapshot_min_faces:
            return
        paths = snapshot.SnapshotPaths.of(self.data_dir, name, event_id) if applied else None
        if paths is not None and entry.snap_seq is not None and not paths.meta.exists():
            entry.snap_seq = None  # someone removed it (a delete): ours is the fresh copy now
        due = max(self.snapshot_min_faces, int(self.snapshot_refresh_fraction * flat.n_alive))
        if entry.snap_seq is None or entry.changes >= due:
            try:
                self._write_snapshot(entry, due)
            except OSError:  # a cache only: a full disk must not fail the search
                self._count("snapshot_errors")

    def write_snapshot(self, event_id: str, space_name: str, *, only_if_due: bool = False) -> bool:
        """Write this (event, space)'s snapshot now (e.g. at the end of a bulk ingest). False if unknown.

        ``only_if_due``: apply the rule searches use (big enough, and enough changes since the
        last snapshot), so writers can keep snapshots fresh without rewriting them per photo.
        """
        validate_event_id(event_id)
        validate_space_name(space_name)
        key = (event_id, space_name)
        with self._locked_entry(key) as entry:
            with self._db.read() as c:
                row = self._space_row(c, event_id, space_name)
                if row is None:
                    self._drop_entry(key)
                    return False
                self._sync(entry, c, row)
            written = True
            if only_if_due:
                self._maintain(entry, 1)
            else:
                if entry.purge:
                    self._maintain(entry, 0)
                written = self._write_snapshot(entry, 0)
        if self.ann_min_faces > 0:
            self.build_ann(event_id, space_name, only_if_due=True)
        return True if only_if_due else written

    def build_ann(self, event_id: str, space_name: str, *, only_if_due: bool = False) -> bool:
        """(Re)build the event's approximate index (writers only: seconds for a big event).

        Nothing happens below ``ann_min_faces`` faces; ``only_if_due``: only when there is no
        index yet or its unindexed tail grew past ann.REFRESH_FRACTION. The vectors are copied
        under the cache lock and the index is trained without it, so searches carry on.
        """
        validate_event_id(event_id)
        validate_space_name(space_name)
        if self.ann_min_faces <= 0:
            return False
        paths = ann.AnnPaths.of(self.data_dir, space_name, event_id)
        with self._locked_entry((event_id, space_name)) as entry:
            with self._db.read() as c:
                row = self._space_row(c, event_id, space_name)
                if row is None:
                    return False
                self._sync(entry, c, row)
            flat = entry.flat
            assert flat is not None and entry.sid is not None
            if flat.n_alive < self.ann_min_faces or (only_if_due and not ann.due(paths, entry.sid, flat)):
                return False
            sid, seq, ids, vectors = entry.sid, entry.seq, flat.live_ids(), flat.vectors()
        get_faiss(self.faiss_threads)
        index = ann.build(vectors, ids)
        del vectors
        with self._locks.hold(space_name, event_id):
            with self._db.read() as c:
                row = self._space_row(c, event_id, space_name)
                if row is None or row["sid"] != sid or self._deleted_since(c, sid, seq):
                    return False  # a delete came in: the copy may hold deleted vectors; next time
            ann.write(paths, index, {"event_id": event_id, "space": space_name, "sid": sid, "seq": seq,
                                     "max_id": int(ids[-1]) if len(ids) else -1})
        self._count("ann_builds")
        return True

    def _write_snapshot(self, entry: _Entry, due: int) -> bool:
        event_id, name = entry.key
        flat = entry.flat
        assert flat is not None
        paths = snapshot.SnapshotPaths.of(self.data_dir, name, event_id)
        with self._locks.hold(name, event_id):
            on_disk = snapshot.read_meta(paths)
            with self._db.read() as c:
                row = self._space_row(c, event_id, name)
                if row is None or row["sid"] != entry.sid or entry.seq < row["tomb_floor"]:
                    return False  # gone, or too far behind to catch up here: the next search reloads
                # Catch up under the lock: any delete committed before this point is then not in
                # the file; one committed later removes the file after we release the lock.
                if entry.seq != row["seq"]:
                    entry.changes += self._apply_changes(flat, c, entry.sid, entry.seq)
                    entry.seq = row["seq"]
                if (
                    due > 0
                    and on_disk
                    and on_disk["sid"] == entry.sid
                    and row["tomb_floor"] <= on_disk["seq"] <= entry.seq
                    and (entry.snap_seq is None or on_disk["seq"] > entry.snap_seq)
                    and paths.faiss.exists()
                    and not self._deleted_since(c, entry.sid, on_disk["seq"])
                ):
                    # Another process wrote a newer one: adopt it unless it is already too old too.
                    behind = self._changes_since(c, entry.sid, on_disk["seq"])
                    if behind < due:
                        entry.snap_seq, entry.changes = on_disk["seq"], behind
                        return True
            flat.compact()
            snapshot.write(
                paths,
                flat,
                {"event_id": event_id, "space": name, "sid": entry.sid, "seq": entry.seq},
            )
            entry.snap_seq, entry.changes = entry.seq, 0
            self._count("snapshot_writes")
        with contextlib.suppress(sqlite3.OperationalError, StorageError), self._db.write() as c:
            c.execute("UPDATE spaces SET snap_seq=MAX(snap_seq, ?) WHERE sid=?", (entry.seq, entry.sid))
        return True

    @staticmethod
    def _deleted_since(c: sqlite3.Connection, sid: int, seq: int) -> bool:
        """True if a face was deleted (not just replaced) after ``seq``: a snapshot that old must go."""
        sql = "SELECT 1 FROM tombstones WHERE sid=? AND seq>? AND kind=? LIMIT 1"
        return c.execute(sql, (sid, seq, TOMB_DELETED)).fetchone() is not None

    @staticmethod
    def _changes_since(c: sqlite3.Connection, sid: int, seq: int) -> int:
        added = c.execute("SELECT COUNT(*) FROM faces WHERE sid=? AND seq>?", (sid, seq)).fetchone()[0]
        removed = c.execute("SELECT COUNT(*) FROM tombstones WHERE sid=? AND seq>?", (sid, seq)).fetchone()[0]
        return int(added) + int(removed)

    def sweep_snapshots(self) -> int:
        """Remove snapshot files the database no longer vouches for; returns how many sets went.

        Catches what a crash can leave behind: temp files, a snapshot of a dropped space or
        deleted event, or one that still holds faces deleted after it was written.
        """
        removed = 0
        for name in SPACE_NAMES:
            directory = self.data_dir / name
            if not directory.is_dir():
                continue
            removed += self._sweep_ann(name)
            events = set()
            for p in directory.iterdir():
                stem = p.name
                for suffix in (".faiss.tmp", ".json.tmp", ".faiss", ".json"):
                    if stem.endswith(suffix):
                        events.add(stem[: -len(suffix)])
                        break
            for event_id in sorted(events):
                try:
                    validate_event_id(event_id)
                except ApiError:
                    continue
                paths = snapshot.SnapshotPaths.of(self.data_dir, name, event_id)
                with self._locks.hold(name, event_id):
                    meta = snapshot.read_meta(paths)
                    keep = False
                    if meta is not None and paths.faiss.exists():
                        with self._db.read() as c:
                            row = self._space_row(c, event_id, name)
                            keep = (
                                row is not None
                                and meta["sid"] == row["sid"]
                                and row["tomb_floor"] <= meta["seq"] <= row["seq"]
                                and not self._deleted_since(c, row["sid"], meta["seq"])
                            )
                    if keep:
                        snapshot.remove_temp(paths)
                    elif snapshot.remove(paths):
                        removed += 1
        return removed

    def _sweep_ann(self, name: str) -> int:
        """Approximate indexes of dropped spaces, or older than a delete, go (they hold codes of the vectors)."""
        directory = self.data_dir / name / "ann"
        if not directory.is_dir():
            return 0
        removed = 0
        stems = {p.name.removesuffix(".tmp") for p in directory.iterdir()}
        for event_id in sorted({s.removesuffix(".npz").removesuffix(".json") for s in stems}):
            try:
                validate_event_id(event_id)
            except ApiError:
                continue
            paths = ann.AnnPaths.of(self.data_dir, name, event_id)
            with self._locks.hold(name, event_id):
                meta = ann.read_meta(paths)
                with self._db.read() as c:
                    row = self._space_row(c, event_id, name)
                    keep = (
                        meta is not None
                        and row is not None
                        and meta["sid"] == row["sid"]
                        and row["tomb_floor"] <= meta["seq"]
                        and not self._deleted_since(c, row["sid"], meta["seq"])
                    )
                if not keep and ann.remove(paths):
                    removed += 1
        return removed

    # ------------------------------------------------------------ cache admin
    def _check_fork(self) -> None:
        pid = os.getpid()
        if pid != self._pid:
            # Caches (and faiss objects) built by a parent are not used in a forked child.
            self._guard = threading.Lock()
            self._entries = OrderedDict()
            self._counters = {}
            self._pid = pid

    def _entry(self, key: tuple[str, str]) -> _Entry:
        self._check_fork()
        with self._guard:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(key)
            self._entries.move_to_end(key)
            return entry

    def _drop_entry(self, key: tuple[str, str]) -> None:
        self._check_fork()
        with self._guard:
            entry = self._entries.pop(key, None)
        if entry is not None:
            entry.evicted = True

    def _enforce_budget(self, keep: tuple[str, str]) -> None:
        if self.cache_max_bytes is None:
            return
        with self._guard:
            total = sum(e.flat.nbytes for e in self._entries.values() if e.flat is not None)
            for key in list(self._entries):
                if total <= self.cache_max_bytes:
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
        """Drop cached indexes (all, or one event's) from this process's memory."""
        self._check_fork()
        with self._guard:
            keys = [k for k in self._entries if event_id is None or k[0] == event_id]
            entries = [self._entries.pop(k) for k in keys]
        for e in entries:
            with e.lock:
                e.evicted = True
                e.reset()
        return len(entries)

    def _count(self, name: str, n: int = 1) -> None:
        with self._guard:
            self._count_unlocked(name, n)

    def _count_unlocked(self, name: str, n: int = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + n

    def stats(self) -> dict:
        """This process's view, for /metrics: cached indexes and counters. No I/O."""
        self._check_fork()
        with self._guard:
            entries = list(self._entries.values())
            counters = dict(self._counters)
        cached = []
        for e in entries:
            flat = e.flat
            if flat is None:
                continue
            cached.append(
                {
                    "event_id": e.key[0],
                    "space": e.key[1],
                    "faces": flat.n_alive,
                    "masked": flat.n_dead,
                    "seq": e.seq,
                    "snapshot_seq": e.snap_seq,
                    "bytes": flat.nbytes,
                }
            )
        return {
            "pid": os.getpid(),
            "cached_indexes": len(cached),
            "cached_faces": sum(c["faces"] for c in cached),
            "cached_bytes": sum(c["bytes"] for c in cached),
            "cache": cached,
            "counters": counters,
        }

    @property
    def db(self) -> Database:
        """The database, for the tables kept next to the faces (access_db.py, thumbnails_db.py)."""
        return self._db

    def close(self) -> None:
        """Close this process's database connections and drop its caches."""
        self._closing.set()
        eraser = self._eraser
        if eraser is not None and eraser.is_alive() and self._eraser_pid == os.getpid():
            eraser.join(timeout=5)
        self.evict()
        self._db.close()


def _fill_face_meta(c: sqlite3.Connection, sid: int, flat: FlatIndex) -> None:
    """A snapshot holds vectors and ids only: each face's photo and norm come from SQLite
    (one scan of the covering index faces_sid_meta, not of the embeddings)."""
    rows = c.execute("SELECT face_id, pid, norm FROM faces INDEXED BY faces_sid_meta WHERE sid=?", (sid,)).fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    pids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    norms = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
    gone = flat.set_face_meta(ids, pids, norms)
    if len(gone):  # deleted since the snapshot: the change log removes them too, this is just sooner
        flat.remove(gone)


def _json_ints(values: Iterable[int]) -> str:
    return "[" + ",".join(str(int(v)) for v in values) + "]"
