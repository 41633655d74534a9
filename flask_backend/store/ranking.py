"""Photo ranking from arrays: one row per photo (its best face), best first, in O(faces) numpy.

A match must cost what its score computation costs, however many faces pass the threshold.
So nothing here makes a Python object per qualifying face:

- scores of every face of the event come from one pass over the cached matrix
  (``FlatIndex.scores``, single-threaded SIMD); masked (deleted) rows get -inf;
- each face knows its photo (``FlatIndex.pids``, aligned with the rows). Faces of one photo
  are written in one transaction, so their ids, and therefore their rows, are contiguous:
  ``np.maximum.reduceat`` over the photo runs gives every photo's best face in one pass
  (a layout where a photo's rows are not contiguous is handled by a stable argsort, cached);
- ``top_k`` and a page of "all my photos" are an ``argpartition``-style cut on the per-photo
  array; only photos tied at the cut (or at the cursor) need their ``photo_id`` (the
  tie-break), and only the rows returned are read from SQLite (photo_id, URL, bbox), in the
  caller's read transaction.

Order: rank descending, then photo_id ascending; rank is the cosine (v2) or minus the raw
Euclidean distance (v1). Paging is keyset: a cursor is the (rank, photo_id) of the last row
returned, and the next page holds the rows strictly after it, so photos added between pages
never shift or repeat rows that were already served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import sql
from .index import FlatIndex

_NO_MATCH = -np.inf


@dataclass(frozen=True)
class RankSpec:
    """How faces are ranked: v2 by cosine >= ``min_rank``; v1 (``query_norm`` set) by
    ``-distance >= min_rank`` (i.e. distance <= tolerance) on raw descriptors."""

    min_rank: float
    query_norm: float | None = None


@dataclass(frozen=True)
class PhotoRow:
    photo_id: str
    rank: float
    score: float  # cosine (v2) or 1 - distance (v1)
    distance: float | None
    face_id: int
    bbox: tuple[float, float, float, float]
    source_url: str | None


@dataclass(frozen=True)
class MatchPage:
    rows: list[PhotoRow]
    total: int  # photos that qualify (all pages)
    more: bool  # rows remain after the last one returned
    search: str  # "exact" | "approximate"


class PhotoRanks:
    """Qualifying photos: their pid, rank and a way to find the best face's row of any of them."""

    def __init__(self, pids: np.ndarray, rank: np.ndarray, best_pos: Callable[[np.ndarray], np.ndarray]) -> None:
        self.pids = pids
        self.rank = rank.astype(np.float64, copy=False)
        self.best_pos = best_pos


def face_ranks(flat: FlatIndex, scores: np.ndarray, spec: RankSpec, pos: np.ndarray | None = None) -> np.ndarray:
    """Rank of each face from its cosine: the cosine (v2), or minus the raw distance (v1)."""
    np.clip(scores, -1.0, 1.0, out=scores)
    if spec.query_norm is None:
        return scores
    qn = float(spec.query_norm)
    n = (flat.norms if pos is None else flat.norms[pos]).astype(np.float64)
    d2 = qn * qn + n * n - 2.0 * qn * n * scores.astype(np.float64)
    return -np.sqrt(np.maximum(d2, 0.0))


def _groups(flat: FlatIndex) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """(order or None, run starts, run ends, run pid) over the rows, cached until the rows change."""
    cached = flat.derived.get("groups")
    if cached is not None:
        return cached
    pids = flat.pids
    order = None
    if len(pids):
        starts = np.flatnonzero(np.concatenate(([True], pids[1:] != pids[:-1])))
        if len(np.unique(pids[starts])) != len(starts):  # a photo's rows are not contiguous
            order = np.argsort(pids, kind="stable")
            sp = pids[order]
            starts = np.flatnonzero(np.concatenate(([True], sp[1:] != sp[:-1])))
            run_pid = sp[starts]
        else:
            run_pid = pids[starts]
    else:
        starts, run_pid = np.zeros(0, np.int64), np.zeros(0, np.int64)
    ends = np.append(starts[1:], len(pids)).astype(np.int64)
    flat.derived["groups"] = out = (order, starts, ends, run_pid)
    return out


def exact_photo_ranks(flat: FlatIndex, query: np.ndarray, spec: RankSpec) -> PhotoRanks:
    """Every photo's best face from one scan of the event's matrix."""
    if flat.n_total == 0 or flat.n_alive == 0:
        return PhotoRanks(np.zeros(0, np.int64), np.zeros(0), lambda sel: np.zeros(0, np.int64))
    scores = flat.scores(query)
    rank = face_ranks(flat, scores, spec)
    if flat.n_dead:
        rank[~flat.alive] = _NO_MATCH
    order, starts, ends, run_pid = _groups(flat)
    grouped = rank if order is None else rank[order]
    run_best = np.maximum.reduceat(grouped, starts)
    ok = np.flatnonzero((run_best >= spec.min_rank) & (run_pid >= 0))

    def best_pos(sel: np.ndarray) -> np.ndarray:
        out = np.empty(len(sel), np.int64)
        for i, run in enumerate(ok[sel].tolist()):
            s = int(starts[run])
            out[i] = s + int(np.argmax(grouped[s : int(ends[run])]))  # first max: the lowest face id
        return out if order is None else order[out]

    return PhotoRanks(run_pid[ok], run_best[ok], best_pos)


def sparse_photo_ranks(flat: FlatIndex, pos: np.ndarray, scores: np.ndarray, spec: RankSpec) -> PhotoRanks:
    """Best face per photo among candidate rows (an approximate search's hits)."""
    rank = face_ranks(flat, scores.astype(np.float32, copy=True), spec, pos)
    keep = rank >= spec.min_rank
    pos, rank = pos[keep], rank[keep]
    pids = flat.pids[pos]
    keep = pids >= 0
    pos, rank, pids = pos[keep], rank[keep], pids[keep]
    order = np.lexsort((pos, -rank, pids))
    pos, rank, pids = pos[order], rank[order], pids[order]
    first = np.flatnonzero(np.concatenate(([True], pids[1:] != pids[:-1]))) if len(pids) else np.zeros(0, np.int64)
    best = pos[first]
    return PhotoRanks(pids[first], rank[first], lambda sel: best[sel])


def _photo_names(c: Any, pids: np.ndarray, into: dict[int, tuple[str, str | None]]) -> None:
    missing = [p for p in pids.tolist() if p not in into]
    if not missing:
        return
    for pid, photo_id, url in sql.photo_names(c, missing):
        into[int(pid)] = (photo_id, url)


def select(
    c: Any, ranks: PhotoRanks, limit: int, after: tuple[float, str] | None
) -> tuple[np.ndarray, bool]:
    """Indices into ``ranks`` of the rows to return (unordered) and whether more follow.

    Names (photo_id, the tie-break) are read only for photos tied with the cursor or at the cut.
    """
    names: dict[int, tuple[str, str | None]] = {}
    rank, pids = ranks.rank, ranks.pids

    def name(i: int) -> str:
        return names[int(pids[i])][0] if int(pids[i]) in names else "\uffff"  # gone: sorts last

    if after is not None:
        r0, p0 = after
        eq = np.flatnonzero(rank == r0)
        _photo_names(c, pids[eq], names)
        keep_eq = np.asarray([i for i in eq.tolist() if name(i) > p0], dtype=np.int64)
        cand = np.concatenate((np.flatnonzero(rank < r0), keep_eq))
    else:
        cand = np.arange(len(rank))
    more = len(cand) > limit
    if more:
        vals = rank[cand]
        kth = np.partition(vals, len(vals) - limit)[len(vals) - limit]  # the limit-th largest
        better = cand[vals > kth]
        tied = cand[vals == kth]
        if len(better) + len(tied) > limit:
            _photo_names(c, pids[tied], names)
            tied = np.asarray(sorted(tied.tolist(), key=name)[: limit - len(better)], dtype=np.int64)
        cand = np.concatenate((better, tied))
    return cand, more


def page(
    c: Any,
    flat: FlatIndex,
    ranks: PhotoRanks,
    spec: RankSpec,
    *,
    limit: int,
    after: tuple[float, str] | None,
    search: str,
) -> MatchPage:
    """One page (or the top ``limit``), best first, with metadata read for those rows only
    (one query: photo_id, URL and the best face's bbox)."""
    chosen, more = select(c, ranks, limit, after)
    pos = ranks.best_pos(chosen) if len(chosen) else np.zeros(0, np.int64)
    face_ids = flat.ids[pos].tolist()
    meta: dict[int, Any] = {}
    if face_ids:
        for r in sql.page_rows(c, face_ids):
            meta[int(r[0])] = (r[1], r[2], (float(r[3]), float(r[4]), float(r[5]), float(r[6])))
    rows = []
    for i, face_id in zip(chosen.tolist(), face_ids, strict=True):
        m = meta.get(face_id)
        if m is None:  # cannot happen inside one read transaction; never invent data
            continue
        r = float(ranks.rank[i])
        if spec.query_norm is None:
            rows.append(PhotoRow(m[0], r, r, None, face_id, m[2], m[1]))
        else:
            rows.append(PhotoRow(m[0], r, 1.0 + r, -r, face_id, m[2], m[1]))
    rows.sort(key=lambda row: (-row.rank, row.photo_id))
    return MatchPage(rows, len(ranks.rank), more, search)
