"""Search over this process's cache: bring the entry up to the database, then score.

Mixed into FaceStore (store/face_store.py). Before every search the space's change ``seq``
is read inside the same read transaction the search runs in and, if it moved, only what
changed since is applied (tombstoned faces masked, new faces appended), so a photo
acknowledged by any process on any host is visible to the very next search anywhere.
An empty entry is filled from the snapshot when usable, else from the database.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .. import errors
from . import ann, prefilter, ranking, result_rows, snapshot, sql
from .cache import Entry
from .ids import validate_event_id
from .index import FlatIndex, get_faiss
from .models import Hit, Space
from .vectors import normalize_query, validate_space


class _NeedsRead(Exception):
    """The one-statement match path met a query it cannot fold into its statement."""


class _NoReads:
    """Stands in for a connection where none may be used (PostgreSQL's one-statement match):
    any query raises _NeedsRead, and the full read path is taken instead."""

    dialect = "postgres"

    def execute(self, *_args: Any, **_kwargs: Any) -> Any:
        raise _NeedsRead


_NO_READS = _NoReads()
_STALE_BACKOFF_S = 1.0


class Searching:
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
        thumbnails: bool = False,
        with_total: bool = True,
    ) -> ranking.MatchPage:
        """One row per photo (its best face), best first (rank desc, photo_id asc), at most
        ``limit`` rows strictly after the keyset ``after`` = (rank, photo_id); plus the total
        of qualifying photos. Costs at most one scan of the event whatever the number that qualify;
        above ``ann_min_faces`` faces an approximate index is used when one is built (the
        page says ``search="approximate"``). Metadata is read only for the rows returned
        (with ``thumbnails``, their thumbnail infos too: ``MatchPage.thumbs``). ``with_total``
        False (a top_k): the total may be left uncounted (None), which lets a large event's
        8-bit first pass answer more queries (store/prefilter.py)."""
        validate_event_id(event_id)
        validate_space(space)
        q = normalize_query(query, space.dim)
        thumbs_of = event_id if thumbnails else None
        if self._db.dialect == "postgres":
            found = self._match_at_once(event_id, space, q, spec, int(limit), after, thumbs_of, with_total)
            if found is not None:
                return found
        with self._searching(event_id, space) as (entry, c):
            assert entry.flat is not None
            ranks, kind = self._ranks(entry, space, q, spec, int(limit), with_total or after is not None)
            return ranking.page(c, entry.flat, ranks, spec, limit=int(limit), after=after, search=kind,
                                thumbs_of=thumbs_of)

    def _ranks(self, entry: Entry, space: Space, q: np.ndarray, spec: ranking.RankSpec, limit: int,
               with_total: bool) -> tuple[ranking.PhotoRanks, str]:
        """The photos that qualify, from the entry's cache: approximate when the event has an
        index that may answer this query, else exact (from the 8-bit first pass when it proves
        its answer, else a scan)."""
        flat = entry.flat
        assert flat is not None
        if entry.ann is None and self.ann_min_faces > 0:
            entry.ann = ann.AnnCache(ann.AnnPaths.of(self.data_dir, space.name, entry.key[0]), self.ann_sigmas)
        hits = ann.search(entry.ann, int(entry.sid or 0), flat, q, spec, self.ann_min_faces)
        if hits is None:
            ranks = prefilter.photo_ranks(flat, q, spec, limit=limit, with_total=with_total)
            self._cache.count("scans" if ranks is None else "prefiltered")
            return (ranking.exact_photo_ranks(flat, q, spec) if ranks is None else ranks), "exact"
        return ranking.sparse_photo_ranks(flat, hits[0], hits[1], spec), "approximate"

    def _match_at_once(self, event_id: str, space: Space, q: np.ndarray, spec: ranking.RankSpec, limit: int,
                       after: tuple[float, str] | None, thumbs_of: str | None,
                       with_total: bool) -> ranking.MatchPage | None:
        """PostgreSQL, the usual case (this host's cache is loaded and nothing changed since):
        rank on the cache first, then ONE statement reads the space row and the page's rows,
        in one snapshot; one round trip where the read transaction takes four. If that row
        says the space moved on (a write anywhere, a delete, another model) the cache is not
        what the database holds: None, and the full path catches up and ranks again. None
        too when the page needs a query of its own first (photos tied at the cut). After a miss
        (writes landing, as while organizers upload) this path rests for _STALE_BACKOFF_S, so a
        busy event does not pay two scans per match."""
        get_faiss(self.faiss_threads)
        key = (event_id, space.name)
        if time.monotonic() - self._stale_at.get(key, -_STALE_BACKOFF_S) < _STALE_BACKOFF_S:
            return None  # writes are landing: a first scan would mostly be wasted, for a while
        with self._cache.locked(key) as entry:
            if entry.flat is None or entry.sid is None or entry.purge:
                return None
            ranks, kind = self._ranks(entry, space, q, spec, limit, with_total or after is not None)
            try:
                chosen = ranking.choose(_NO_READS, entry.flat, ranks, limit, after)
            except _NeedsRead:
                return None
            got = self._db.once(lambda c: result_rows.space_and_page_rows(c, event_id, space.name, chosen.face_ids, thumbs_of))
            row, meta = got if got is not None else (None, {})
            if row is None or (row["sid"], row["seq"]) != (entry.sid, entry.seq) or row["tomb_floor"] > entry.seq:
                self._stale_at[key] = time.monotonic()
                return None
            if Space(space.name, row["engine"], row["model_id"], row["dim"]) != \
                    Space(space.name, space.engine, space.model_id, int(space.dim)):
                return None
            found = ranking.build(ranks, spec, chosen, meta, kind)
            entry.last_used = time.monotonic()
            self._cache.count("searches")
            self._cache.count("one_statement_matches")
            self._maintain(entry, 0)
        self._cache.enforce_budget(key)
        return found

    @contextlib.contextmanager
    def _searching(self, event_id: str, space: Space) -> Iterator[tuple[Entry, Any]]:
        """The synced cache entry (locked) and the read transaction a search runs in; then upkeep."""
        get_faiss(self.faiss_threads)
        key = (event_id, space.name)
        with self._cache.locked(key) as entry:
            with self._db.read() as c:
                row = sql.space_row(c, event_id, space.name)
                if row is None:
                    entry.reset()
                    self._cache.drop(key)
                    self._forget_files(event_id, space.name)  # deleted on another host: our copies go too
                    raise sql.missing(c, event_id, space.name)
                recorded = Space(space.name, row["engine"], row["model_id"], row["dim"])
                if recorded != Space(space.name, space.engine, space.model_id, int(space.dim)):
                    raise errors.space_mismatch(event_id, recorded, space)
                applied = self._sync(entry, c, row)
                yield entry, c
            entry.last_used = time.monotonic()
            self._cache.count("searches")
            self._maintain(entry, applied)
        self._cache.enforce_budget(key)

    def _forget_files(self, event_id: str, name: str) -> None:
        paths, apaths = snapshot.SnapshotPaths.of(self.data_dir, name, event_id), ann.AnnPaths.of(self.data_dir, name, event_id)
        if any(p.exists() for p in (paths.meta, paths.faiss, apaths.index, apaths.meta)):
            with self._locks.hold(name, event_id):
                snapshot.remove(paths)
                ann.remove(apaths)

    def _hits(self, c: Any, ids: np.ndarray, scores: np.ndarray) -> list[Hit]:
        if len(ids) == 0:
            return []
        meta = result_rows.hit_rows(c, ids.tolist())
        hits = []
        for face_id, score in zip(ids.tolist(), scores.tolist(), strict=True):
            r = meta.get(face_id)
            if r is None:  # cannot happen inside one read transaction; never invent data
                continue
            hits.append(Hit(face_id, r[1], float(score), (r[2], r[3], r[4], r[5]), r[6], r[7]))
        return hits

    # ------------------------------------------------------------ cache sync
    def _sync(self, entry: Entry, c: Any, row: dict[str, Any]) -> int:
        """Bring the cache to the DB state ``row`` was read in; returns faces added + removed.

        Only changes up to ``row``'s seq are read (sql.face_chunks / tombstoned_since): the
        cache then holds exactly what the database vouched for at that seq, whatever else
        ``c`` may see."""
        sid, seq = row["sid"], row["seq"]
        if entry.flat is None or entry.sid != sid or entry.seq < row["tomb_floor"] or entry.seq > seq:
            entry.reset()
            self._load(entry, c, row)
        assert entry.flat is not None
        applied = 0
        if entry.seq < seq:
            applied = self._apply_changes(entry.flat, c, sid, entry.seq, seq, entry)
            entry.seq = seq
            entry.changes += applied
            self._cache.count("syncs")
        entry.flat.maybe_compact()
        return applied

    def _apply_changes(self, flat: FlatIndex, c: Any, sid: int, since: int, upto: int,
                       entry: Entry | None = None) -> int:
        gone, deleted = sql.tombstoned_since(c, sid, since, upto=upto)
        if deleted and entry is not None:
            # deleted elsewhere (another process or host): this host's snapshot and approximate
            # index hold those vectors; _maintain removes them after the search
            entry.purge = True
        n = flat.remove(np.asarray(gone, dtype=np.int64)) if gone else 0
        return n + _add(flat, sql.face_chunks(c, sid, since, flat.dim, upto=upto))

    def _load(self, entry: Entry, c: Any, row: dict[str, Any]) -> None:
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
                self._cache.count("snapshot_rejected")
        if flat is not None and meta is not None:
            _fill_face_meta(c, sid, flat)
            entry.flat, entry.seq, entry.snap_seq, entry.changes = flat, meta["seq"], meta["seq"], 0
            entry.purge = sql.deleted_since(c, sid, meta["seq"])
            self._cache.count("snapshot_loads")
            return
        entry.purge = meta is not None or paths.faiss.exists()  # unusable leftovers: remove them
        flat = FlatIndex(dim)
        _add(flat, sql.face_chunks(c, sid, -1, dim, upto=seq))
        entry.flat, entry.seq, entry.snap_seq, entry.changes = flat, seq, None, flat.n_total
        self._cache.count("db_loads")

    @staticmethod
    def _spot_check(c: Any, sid: int, flat: FlatIndex, samples: int = 32) -> bool:
        """Compare a few snapshot rows with SQLite, byte for byte (faces deleted since are skipped).

        The file's structure and id list are verified on load; this catches vectors that do
        not belong to their ids (e.g. a file restored from elsewhere) at the cost of one query.
        """
        if flat.n_total == 0:
            return True
        pos = np.unique(np.random.default_rng().integers(0, flat.n_total, size=min(samples, flat.n_total)))
        found = sql.embeddings(c, sid, flat.ids[pos].tolist())
        for p in pos.tolist():
            blob = found.get(int(flat.ids[p]))
            if blob is not None and bytes(blob) != flat.matrix[p].astype("<f4").tobytes():
                return False
        return True


def _add(flat: FlatIndex, chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> int:
    return sum(flat.add(ids, vecs, pids, norms) for ids, pids, norms, vecs in chunks)


def _fill_face_meta(c: Any, sid: int, flat: FlatIndex) -> None:
    """A snapshot holds vectors and ids only: each face's photo and norm come from the database
    (one scan of a covering index, not of the embeddings)."""
    ids, pids, norms = sql.face_meta(c, sid)
    gone = flat.set_face_meta(ids, pids, norms)
    if len(gone):  # deleted since the snapshot: the change log removes them too, this is just sooner
        flat.remove(gone)
