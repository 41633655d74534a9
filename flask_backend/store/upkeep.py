"""Snapshot and approximate-index upkeep: written by searching processes and writers, never
by ``put_photo``, so a write costs the same whatever the event's size.

Mixed into FaceStore (store/face_store.py). Snapshots (``<data>/<space>/<event>.faiss`` +
``.json``) are a per-host cache for cold starts: load, then apply the database's changes
since the snapshot's seq. Anything the database does not vouch for is swept.
"""

from __future__ import annotations

import contextlib
import sqlite3

from ..errors import ApiError
from . import ann, snapshot, sql
from .cache import Entry
from .errors import StorageError
from .ids import validate_event_id
from .index import get_faiss
from .models import SPACE_NAMES
from .vectors import validate_space_name


class SnapshotUpkeep:
    def _maintain(self, entry: Entry, applied: int) -> None:
        """After a search (entry lock held): keep the snapshot file fresh and clean."""
        flat = entry.flat
        if flat is None:
            return
        event_id, name = entry.key
        if entry.purge:
            with self._locks.hold(name, event_id):
                snapshot.remove(snapshot.SnapshotPaths.of(self.data_dir, name, event_id))
                ann.remove(ann.AnnPaths.of(self.data_dir, name, event_id))
            entry.purge, entry.snap_seq, entry.ann = False, None, None
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
                self._cache.count("snapshot_errors")

    def write_snapshot(self, event_id: str, space_name: str, *, only_if_due: bool = False) -> bool:
        """Write this (event, space)'s snapshot now (e.g. at the end of a bulk ingest). False if unknown.

        ``only_if_due``: apply the rule searches use (big enough, and enough changes since the
        last snapshot), so writers can keep snapshots fresh without rewriting them per photo.
        """
        validate_event_id(event_id)
        validate_space_name(space_name)
        key = (event_id, space_name)
        with self._cache.locked(key) as entry:
            with self._db.read() as c:
                row = sql.space_row(c, event_id, space_name)
                if row is None:
                    self._cache.drop(key)
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
        with self._cache.locked((event_id, space_name)) as entry:
            with self._db.read() as c:
                row = sql.space_row(c, event_id, space_name)
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
                row = sql.space_row(c, event_id, space_name)
                if row is None or row["sid"] != sid or sql.deleted_since(c, sid, seq):
                    return False  # a delete came in: the copy may hold deleted vectors; next time
            ann.write(paths, index, {"event_id": event_id, "space": space_name, "sid": sid, "seq": seq,
                                     "max_id": int(ids[-1]) if len(ids) else -1})
        self._cache.count("ann_builds")
        return True

    def _write_snapshot(self, entry: Entry, due: int) -> bool:
        event_id, name = entry.key
        flat = entry.flat
        assert flat is not None
        paths = snapshot.SnapshotPaths.of(self.data_dir, name, event_id)
        with self._locks.hold(name, event_id):
            on_disk = snapshot.read_meta(paths)
            with self._db.read() as c:
                row = sql.space_row(c, event_id, name)
                if row is None or row["sid"] != entry.sid or entry.seq < row["tomb_floor"]:
                    return False  # gone, or too far behind to catch up here: the next search reloads
                # Catch up under the lock: any delete committed before this point is then not in
                # the file; one committed later removes the file after we release the lock.
                if entry.seq != row["seq"]:
                    entry.changes += self._apply_changes(flat, c, entry.sid, entry.seq, row["seq"])
                    entry.seq = row["seq"]
                if (
                    due > 0
                    and on_disk
                    and on_disk["sid"] == entry.sid
                    and row["tomb_floor"] <= on_disk["seq"] <= entry.seq
                    and (entry.snap_seq is None or on_disk["seq"] > entry.snap_seq)
                    and paths.faiss.exists()
                    and not sql.deleted_since(c, entry.sid, on_disk["seq"])
                ):
                    # Another process wrote a newer one: adopt it unless it is already too old too.
                    behind = sql.changes_since(c, entry.sid, on_disk["seq"])
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
            self._cache.count("snapshot_writes")
        with contextlib.suppress(StorageError, sqlite3.OperationalError), self._db.write() as c:
            sql.note_snapshot(c, entry.sid, entry.seq)
        return True

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
                            row = sql.space_row(c, event_id, name)
                            keep = (
                                row is not None
                                and meta["sid"] == row["sid"]
                                and row["tomb_floor"] <= meta["seq"] <= row["seq"]
                                and not sql.deleted_since(c, row["sid"], meta["seq"])
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
                    row = sql.space_row(c, event_id, name)
                    keep = (
                        meta is not None
                        and row is not None
                        and meta["sid"] == row["sid"]
                        and row["tomb_floor"] <= meta["seq"]
                        and not sql.deleted_since(c, row["sid"], meta["seq"])
                    )
                if not keep and ann.remove(paths):
                    removed += 1
        return removed

