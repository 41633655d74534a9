"""Photo ranking from arrays: one row per photo (its best face), best first, in O(faces) numpy.

A match must cost what its score computation costs, however many faces pass the threshold.
So nothing here makes a Python object per qualifying face:

- scores of every face of the event come from one pass over the cached matrix
  (``FlatIndex.scores``, single-threaded SIMD); masked (deleted) rows get -inf. On a large
  event, store/prefilter.py first tries to prove which rows matter from an 8-bit copy and
  scores only those (then ``best_per_photo`` ranks them);
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
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import result_rows
from .index import FlatIndex
from .thumbnails_db import ThumbInfo

_NO_MATCH = -np.inf


@dataclass(frozen=True)
class RankSpec:
    """How faces are ranked: v2 by cosine >= ``min_rank``; v1 (``query_norm`` set) by
    ``-distance >= min_rank`` (i.e. distance <= tolerance) on raw descriptors."""

    min_rank: float
    query_norm: float | None = None


class PhotoRow(NamedTuple):
    """One result row (a tuple: pages build up to hundreds per request)."""

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
    total: int | None  # photos that qualify (all pages); None when not counted (a top_k)
    more: bool  # rows remain after the last one returned
    search: str  # "exact" | "approximate"
    thumbs: dict[str, ThumbInfo] = field(default_factory=dict)  # photo_id -> its thumbnail, when asked for


class PhotoRanks:
    """Qualifying photos: their pid, rank and a way to find the best face's row of any of them.
    ``complete`` False: only the photos that can reach a top ``limit`` (store/prefilter.py), so
    no total."""

    def __init__(self, pids: np.ndarray, rank: np.ndarray, best_pos: Callable[[np.ndarray], np.ndarray],
                 complete: bool = True) -> None:
        self.pids = pids
        self.rank = rank.astype(np.float64, copy=False)
        self.best_pos = best_pos
        self.complete = complete


def face_ranks(flat: FlatIndex, scores: np.ndarray, spec: RankSpec, pos: np.ndarray | None = None) -> np.ndarray:
    """Rank of each face from its cosine: the cosine (v2), or minus the raw distance (v1)."""
    np.clip(scores, -1.0, 1.0, out=scores)
    if spec.query_norm is None:
        return scores
    qn = float(spec.query_norm)
    n = (flat.norms if pos is None else flat.norms[pos]).astype(np.float64)
    d2 = qn * qn + n * n - 2.0 * qn * n * scores.astype(np.float64)
    return -np.sqrt(np.maximum(d2, 0.0))


_SMALL_RUN = 8  # photos with at most this many faces: their best face by strided maxima
_SPARSE_FRACTION = 8  # fewer than 1 face in this many qualifies: rank the qualifying faces only


@dataclass(frozen=True)
class _Layout:
    """The rows grouped by photo (``order`` None: a photo's rows are contiguous already), as
    runs (start, end, pid), with the runs bucketed by length for ``_run_best``."""

    order: np.ndarray | None
    starts: np.ndarray
    ends: np.ndarray
    run_pid: np.ndarray
    small: tuple[tuple[int, np.ndarray, np.ndarray], ...]  # (length c, run indices, their starts)
    long_runs: np.ndarray  # runs longer than _SMALL_RUN
    long_bounds: np.ndarray  # their [start, end, start, end, ...] for one reduceat


def _layout(flat: FlatIndex) -> _Layout:
    """Cached until the rows change (FlatIndex.derived is cleared on every change)."""
    cached = flat.derived.get("layout")
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
    lengths = ends - starts
    small = tuple((int(c), runs, starts[runs])
                  for c in np.unique(lengths[lengths <= _SMALL_RUN]).tolist()
                  for runs in (np.flatnonzero(lengths == c),))
    long_runs = np.flatnonzero(lengths > _SMALL_RUN)
    bounds = np.empty(2 * len(long_runs), np.int64)
    bounds[0::2], bounds[1::2] = starts[long_runs], ends[long_runs]
    if len(bounds) and bounds[-1] == len(pids):
        bounds = bounds[:-1]  # reduceat's last index reduces to the end of the array
    flat.derived["layout"] = out = _Layout(order, starts, ends, run_pid, small, long_runs, bounds)
    return out


def _run_best(grouped: np.ndarray, lay: _Layout) -> np.ndarray:
    """Every run's maximum. ``np.maximum.reduceat`` pays a per-run overhead that dominates when
    runs are short (most photos have a few faces): runs of length c are instead c strided
    gathers and maxima over all such runs at once (4-5x faster at 2-3 faces per photo)."""
    out = np.empty(len(lay.starts), dtype=grouped.dtype)
    for c, runs, st in lay.small:
        best = grouped[st]
        for j in range(1, c):
            np.maximum(best, grouped[st + j], out=best)
        out[runs] = best
    if len(lay.long_runs):
        out[lay.long_runs] = np.maximum.reduceat(grouped, lay.long_bounds)[0::2]
    return out


def best_per_photo(pos: np.ndarray, rank: np.ndarray, pids: np.ndarray) -> PhotoRanks:
    """Best face per photo among a few rows (rank desc, then the lowest row: the lowest face id)."""
    order = np.lexsort((pos, -rank, pids))
    pos, rank, pids = pos[order], rank[order], pids[order]
    first = np.flatnonzero(np.concatenate(([True], pids[1:] != pids[:-1]))) if len(pids) else np.zeros(0, np.int64)
    best = pos[first]
    return PhotoRanks(pids[first], rank[first], lambda sel: best[sel])


def exact_photo_ranks(flat: FlatIndex, query: np.ndarray, spec: RankSpec) -> PhotoRanks:
    """Every photo's best face from one scan of the event's matrix."""
    if flat.n_total == 0 or flat.n_alive == 0:
        return PhotoRanks(np.zeros(0, np.int64), np.zeros(0), lambda sel: np.zeros(0, np.int64))
    scores = flat.scores(query)
    rank = face_ranks(flat, scores, spec)
    if flat.n_dead:
        rank[~flat.alive] = _NO_MATCH
    passing = rank >= spec.min_rank
    if int(np.count_nonzero(passing)) * _SPARSE_FRACTION < len(rank):
        # Typical of a selfie at a real threshold: a few faces pass. Ranking them alone skips
        # the per-photo pass over the whole event.
        qualifying = np.flatnonzero(passing)
        pids = flat.pids[qualifying]
        keep = pids >= 0
        return best_per_photo(qualifying[keep], rank[qualifying[keep]], pids[keep])
    lay = _layout(flat)
    grouped = rank if lay.order is None else rank[lay.order]
    run_best = _run_best(grouped, lay)
    ok = np.flatnonzero((run_best >= spec.min_rank) & (lay.run_pid >= 0))
    starts, ends, order = lay.starts, lay.ends, lay.order

    best = run_best[ok]

    def best_pos(sel: np.ndarray) -> np.ndarray:
        """Row of each selected photo's best face: the first row of its run holding the run's
        maximum (the lowest face id), for all the selected runs at once."""
        runs = ok[sel]
        s, lens = starts[runs], ends[runs] - starts[runs]
        idx = np.repeat(s - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
        run_of = np.repeat(np.arange(len(runs)), lens)
        hit = np.flatnonzero(grouped[idx] == np.repeat(best[sel], lens))
        _, first = np.unique(run_of[hit], return_index=True)
        out = idx[hit[first]]
        return out if order is None else order[out]

    return PhotoRanks(lay.run_pid[ok], best, best_pos)


def sparse_photo_ranks(flat: FlatIndex, pos: np.ndarray, scores: np.ndarray, spec: RankSpec) -> PhotoRanks:
    """Best face per photo among candidate rows (an approximate search's hits, the 8-bit first pass's candidates)."""
    rank = face_ranks(flat, scores.astype(np.float32, copy=True), spec, pos)
    keep = rank >= spec.min_rank
    pos, rank = pos[keep], rank[keep]
    pids = flat.pids[pos]
    keep = pids >= 0
    return best_per_photo(pos[keep], rank[keep], pids[keep])


def _photo_names(c: Any, pids: np.ndarray, into: dict[int, tuple[str, str | None]]) -> None:
    missing = [p for p in pids.tolist() if p not in into]
    if not missing:
        return
    for pid, photo_id, url in result_rows.photo_names(c, missing):
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
        cand: np.ndarray | None = np.concatenate((np.flatnonzero(rank < r0), keep_eq))
        vals = rank[cand]
    else:
        cand, vals = None, rank  # every row: no gathered copy of the ranks
    n = len(vals)
    more = n > limit
    if not more:
        return (np.arange(n) if cand is None else cand), False
    kth = np.partition(vals, n - limit)[n - limit]  # the limit-th largest
    better = np.flatnonzero(vals > kth)
    tied = np.flatnonzero(vals == kth)
    if cand is not None:
        better, tied = cand[better], cand[tied]
    if len(better) + len(tied) > limit:
        _photo_names(c, pids[tied], names)
        tied = np.asarray(sorted(tied.tolist(), key=name)[: limit - len(better)], dtype=np.int64)
    return np.concatenate((better, tied)), more


@dataclass(frozen=True)
class Chosen:
    """The rows a page returns, before their metadata is read: indices into the PhotoRanks,
    their best faces' ids, whether more follow."""

    index: np.ndarray
    face_ids: list[int]
    more: bool


def choose(c: Any, flat: FlatIndex, ranks: PhotoRanks, limit: int, after: tuple[float, str] | None) -> Chosen:
    """The page's rows and their best faces (``c`` is used only for photos tied at the cut)."""
    chosen, more = select(c, ranks, limit, after)
    pos = ranks.best_pos(chosen) if len(chosen) else np.zeros(0, np.int64)
    return Chosen(chosen, flat.ids[pos].tolist(), more)


def build(ranks: PhotoRanks, spec: RankSpec, chosen: Chosen, meta: dict[int, result_rows.PageRow], search: str) -> MatchPage:
    """The page from its chosen rows and their metadata (result_rows.page_rows), best first."""
    v1 = spec.query_norm is not None
    rows = []
    for r, face_id in zip(ranks.rank[chosen.index].tolist(), chosen.face_ids, strict=True):
        m = meta.get(face_id)
        if m is None:  # cannot happen when read in the snapshot the ranks come from; never invent data
            continue
        bbox = (float(m.x1), float(m.y1), float(m.x2), float(m.y2))
        rows.append(PhotoRow(m.photo_id, r, 1.0 + r if v1 else r, -r if v1 else None, face_id, bbox, m.source_url))
    rows.sort(key=lambda row: (-row.rank, row.photo_id))
    thumbs = {m.photo_id: ThumbInfo(m.etag, int(m.src_width), int(m.src_height))
              for m in meta.values() if m.etag is not None and m.src_width is not None and m.src_height is not None}
    return MatchPage(rows, len(ranks.rank) if ranks.complete else None, chosen.more, search, thumbs)


def page(
    c: Any,
    flat: FlatIndex,
    ranks: PhotoRanks,
    spec: RankSpec,
    *,
    limit: int,
    after: tuple[float, str] | None,
    search: str,
    thumbs_of: str | None = None,
) -> MatchPage:
    """One page (or the top ``limit``), best first, with metadata read for those rows only
    (one query: photo_id, URL and the best face's bbox; with ``thumbs_of``, the event, the
    photos' thumbnail infos too: ``MatchPage.thumbs``)."""
    chosen = choose(c, flat, ranks, limit, after)
    meta = result_rows.page_rows(c, chosen.face_ids, thumbs_of) if chosen.face_ids else {}
    return build(ranks, spec, chosen, meta, search)
