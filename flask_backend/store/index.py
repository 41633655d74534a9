"""The in-memory index of one (event, space): exact inner-product search over unit vectors.

Vectors live in a numpy float32 matrix with spare capacity (untouched capacity costs no
RAM), so appending the faces of a new photo never copies the matrix, and a snapshot can be
read straight into it. Scoring uses faiss's exhaustive kernels (``knn_inner_product`` /
``range_search_inner_product``): exact, and with one thread faster here than numpy's
``X @ q`` + argpartition for single queries (see scripts/bench_store.py).

Positions map to face ids through a sorted ``ids`` array. Removing a face does not shift
memory: its row is zeroed and masked out with an ``IDSelectorBitmap`` until enough rows are
dead to make one compaction pass worth it.

faiss is imported lazily (``get_faiss``), never at module import time: a gunicorn master
must not initialise it (its OpenMP state does not survive ``fork``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

_faiss: Any = None
_faiss_pid: int | None = None
_faiss_lock = threading.Lock()

# A stale-row share above which one compaction pass (O(n·dim)) pays for itself.
COMPACT_MIN_DEAD = 1024
COMPACT_FRACTION = 0.05
GROWTH = 1.5
KNN_MAX = 1024
_COMPACT_CHUNK = 65536


_pinned = threading.local()  # the OpenMP thread count this thread has set


def _after_fork_in_child() -> None:
    global _faiss_lock, _pinned
    _faiss_lock = threading.Lock()
    _pinned = threading.local()


os.register_at_fork(after_in_child=_after_fork_in_child)


def get_faiss(threads: int | None = None) -> Any:
    """Import faiss on first use in this process; with ``threads``, pin the OpenMP thread count
    of the calling thread. OpenMP keeps that count per thread: a request thread that never set
    it would get a team as large as the machine for every parallel kernel, on top of the other
    request threads. Pinned in the first thread to import it: 1 unless told otherwise."""
    global _faiss, _faiss_pid
    pid = os.getpid()
    if _faiss is None or _faiss_pid != pid:
        with _faiss_lock:
            if _faiss is None or _faiss_pid != pid:
                import faiss  # lazy on purpose: see the module docstring

                faiss.omp_set_num_threads(max(1, int(threads or 1)))
                _pinned.n = max(1, int(threads or 1))
                _faiss, _faiss_pid = faiss, pid
    if threads is not None and getattr(_pinned, "n", None) != max(1, int(threads)):
        _faiss.omp_set_num_threads(max(1, int(threads)))
        _pinned.n = max(1, int(threads))
    return _faiss


def _clamp(scores: np.ndarray) -> np.ndarray:
    # Cosines of unit vectors lie in [-1, 1]; float32 rounding can step just outside.
    return np.clip(scores, -1.0, 1.0, out=scores)


def allocate(rows: int, dim: int) -> np.ndarray:
    """A (capacity, dim) float32 matrix with room to grow; pages are only paid for when written."""
    capacity = max(int(rows * 1.25), rows + 1024)
    return np.empty((capacity, dim), dtype=np.float32)


class FlatIndex:
    """Unit vectors of one (event, space) with their face ids (ascending), searchable exactly."""

    def __init__(self, dim: int, buf: np.ndarray | None = None, ids: np.ndarray | None = None) -> None:
        """``buf[:len(ids)]`` holds the vectors of ``ids`` (rows beyond are spare capacity)."""
        self.dim = int(dim)
        self.ids = np.asarray(ids if ids is not None else np.zeros(0, np.int64), dtype=np.int64)
        self._buf = buf if buf is not None else allocate(0, self.dim)
        if self._buf.dtype != np.float32 or self._buf.shape[1] != self.dim or len(self._buf) < len(self.ids):
            raise ValueError("buffer does not fit the ids")
        if not self._buf.flags.c_contiguous:
            raise ValueError("buffer must be C-contiguous")
        self.alive = np.ones(len(self.ids), dtype=bool)
        self.n_dead = 0
        self._sel: Any = None
        # Per-face photo (``photos.pid``) and raw norm, aligned with ``ids``: the ranking
        # (store/ranking.py) groups faces by photo and v1 needs the norm, without SQL per face.
        # A snapshot does not carry them: -1 / NaN until the store fills them from SQLite.
        self.pids = np.full(len(self.ids), -1, dtype=np.int64)
        self.norms = np.full(len(self.ids), np.nan, dtype=np.float64)
        self.version = 0  # bumped by every change: caches derived from the rows key on it
        self.derived: dict[str, Any] = {}  # such caches (ranking.py), dropped on every change
        # The rows' 8-bit copy (store/prefilter.py), built by its first search: appended rows
        # are coded there, removed rows erased here at once, a compaction drops it.
        self.quantized: Any = None

    # -- size ---------------------------------------------------------------
    @property
    def n_total(self) -> int:
        return len(self.ids)

    @property
    def n_alive(self) -> int:
        return len(self.ids) - self.n_dead

    @property
    def max_id(self) -> int:
        return int(self.ids[-1]) if len(self.ids) else -1

    @property
    def nbytes(self) -> int:
        """Resident estimate: rows in use (spare capacity is not touched)."""
        return self.n_total * (self.dim * 4 + 25) + (self.quantized.nbytes if self.quantized is not None else 0)

    @property
    def matrix(self) -> np.ndarray:
        """The (n_total, dim) rows in use, dead ones zeroed (a view: do not keep it across changes)."""
        return self._buf[: self.n_total]

    def vectors(self) -> np.ndarray:
        """Copy of the live vectors, in id order."""
        return self.matrix[self.alive].copy()

    def live_ids(self) -> np.ndarray:
        return self.ids[self.alive]

    # -- changes ------------------------------------------------------------
    def _changed(self) -> None:
        self._sel = None
        self.version += 1
        self.derived = {}

    def add(
        self, ids: np.ndarray, vectors: np.ndarray, pids: np.ndarray | None = None, norms: np.ndarray | None = None
    ) -> int:
        """Append faces; ids must be ascending and above every id held. Ids at or below ``max_id``
        are skipped, which makes replaying a change log idempotent."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        pids = np.full(len(ids), -1, np.int64) if pids is None else np.asarray(pids, dtype=np.int64)
        norms = np.full(len(ids), np.nan, np.float64) if norms is None else np.asarray(norms, dtype=np.float64)
        keep = ids > self.max_id
        if not keep.all():
            ids, vectors, pids, norms = ids[keep], vectors[keep], pids[keep], norms[keep]
            if len(ids) == 0:
                return 0
        if len(ids) > 1 and not (np.diff(ids) > 0).all():
            raise ValueError("face ids must be ascending")
        n, k = self.n_total, len(ids)
        if n + k > len(self._buf):
            grown = np.empty((max(n + k, int(len(self._buf) * GROWTH), 1024), self.dim), dtype=np.float32)
            grown[:n] = self._buf[:n]
            self._buf = grown
        self._buf[n : n + k] = vectors
        self.ids = np.concatenate([self.ids, ids])
        self.alive = np.concatenate([self.alive, np.ones(k, bool)])
        self.pids = np.concatenate([self.pids, pids])
        self.norms = np.concatenate([self.norms, norms])
        self._changed()
        return k

    def set_face_meta(self, ids: np.ndarray, pids: np.ndarray, norms: np.ndarray) -> np.ndarray:
        """Fill photo/norm of the given faces (e.g. after a snapshot load); returns the ids held
        here that were not given (faces the database no longer has)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.n_total == 0:
            return self.ids
        pos = np.minimum(np.searchsorted(self.ids, ids), self.n_total - 1)
        ok = self.ids[pos] == ids
        self.pids[pos[ok]] = np.asarray(pids, dtype=np.int64)[ok]
        self.norms[pos[ok]] = np.asarray(norms, dtype=np.float64)[ok]
        self._changed()
        return self.ids[(self.pids < 0) & self.alive]

    def remove(self, face_ids: np.ndarray) -> int:
        """Mask faces out (and zero their vectors); unknown or already removed ids are ignored."""
        face_ids = np.unique(np.asarray(face_ids, dtype=np.int64))
        if len(face_ids) == 0 or self.n_total == 0:
            return 0
        pos = np.searchsorted(self.ids, face_ids)
        pos = pos[pos < self.n_total]
        pos = pos[np.isin(self.ids[pos], face_ids)]
        pos = pos[self.alive[pos]]
        if len(pos) == 0:
            return 0
        self._buf[pos] = 0.0  # biometric data: do not keep it in memory longer than needed
        if self.quantized is not None:
            self.quantized.erase(pos)
        self.alive[pos] = False
        self.n_dead += len(pos)
        self._changed()
        return len(pos)

    def maybe_compact(self) -> bool:
        if self.n_dead and self.n_dead >= max(COMPACT_MIN_DEAD, int(self.n_total * COMPACT_FRACTION)):
            self.compact()
            return True
        return False

    def compact(self) -> None:
        """Drop masked rows for good: one in-place pass, no second copy of the matrix."""
        if not self.n_dead:
            return
        keep = np.flatnonzero(self.alive)
        # keep[i] >= i, so copying chunks left to right never overwrites a row still to be read.
        for start in range(0, len(keep), _COMPACT_CHUNK):
            src = keep[start : start + _COMPACT_CHUNK]
            self._buf[start : start + len(src)] = self._buf[src]
        self._buf[len(keep) : self.n_total] = 0.0
        self.ids = self.ids[keep]
        self.pids = self.pids[keep]
        self.norms = self.norms[keep]
        self.alive = np.ones(len(self.ids), dtype=bool)
        self.n_dead = 0
        self.quantized = None  # rows moved
        self._changed()

    # -- search -------------------------------------------------------------
    def scores(self, query: np.ndarray, start: int = 0) -> np.ndarray:
        """Inner product of the (dim,) float32 query with every row from ``start`` on (dead rows: 0).

        faiss's single-threaded SIMD kernel, not ``matrix @ q``: numpy's BLAS may run a matrix-
        vector product on every core, which on a busy box costs 10-50x more than one thread."""
        n = self.n_total - start
        out = np.empty(max(n, 0), dtype=np.float32)
        if n > 0:
            faiss = get_faiss()
            q = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dim)
            sp = faiss.swig_ptr
            faiss.fvec_inner_products_ny(sp(out), sp(q), sp(self._buf[start:]), self.dim, n)
        return out

    def scores_at(self, query: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Inner products of the (dim,) float32 query with the rows ``pos``, read in place (no
        gathered copy); the same per-row kernel as ``scores``."""
        out = np.empty(len(pos), np.float32)
        if len(pos):
            faiss = get_faiss()
            sp = faiss.swig_ptr
            q = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dim)
            ids = np.ascontiguousarray(pos, dtype=np.int64)
            faiss.fvec_inner_products_by_idx(sp(out), sp(q), sp(self._buf), sp(ids), self.dim, 1, len(ids))
        return out

    def _selector(self) -> Any:
        if not self.n_dead:
            return None
        if self._sel is None:
            faiss = get_faiss()
            bitmap = np.packbits(self.alive, bitorder="little")
            self._sel = (faiss.IDSelectorBitmap(self.n_total, faiss.swig_ptr(bitmap)), bitmap)
        return self._sel[0]

    def search(
        self, query: np.ndarray, min_score: float = -1.0, limit: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact: every live face with score >= min_score, best first (ties by face id), at most ``limit``.

        ``query`` is a (1, dim) float32 unit row. Returns (face_ids int64, scores float32).
        """
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        n_alive = self.n_alive
        if n_alive == 0 or (limit is not None and limit <= 0):
            return empty
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        sel = self._selector()
        threshold = float(min_score)
        # Top-N by heap when N is small or there is no threshold; otherwise the exact range
        # (typically few faces pass a match threshold) sorted and cut, which avoids a huge heap.
        if limit is not None and limit < n_alive and (limit <= KNN_MAX or threshold <= -1.0):
            pos, scores = self._knn(query, limit + 1, sel)
            if len(scores) > limit and scores[limit] == scores[limit - 1]:
                # A tie straddles the cut: gather the whole tied group so the face-id
                # tie-break (not the heap's order) decides who is in. The 1e-5 slack absorbs
                # any rounding difference between faiss's two kernels.
                threshold = max(threshold, float(scores[limit - 1]) - 1e-5)
                pos, scores = self._range(query, threshold, sel)
            else:
                pos, scores = pos[:limit], scores[:limit]
                keep = scores >= threshold
                pos, scores = pos[keep], scores[keep]
        else:
            pos, scores = self._range(query, threshold, sel)
        ids = self.ids[pos]
        order = np.lexsort((ids, -scores))
        if limit is not None:
            order = order[:limit]
        return ids[order], scores[order]

    def _knn(self, query: np.ndarray, k: int, sel: Any) -> tuple[np.ndarray, np.ndarray]:
        faiss = get_faiss()
        k = min(k, self.n_total)
        scores = np.empty((1, k), dtype=np.float32)
        pos = np.empty((1, k), dtype=np.int64)
        sp = faiss.swig_ptr
        faiss.knn_inner_product(sp(query), sp(self._buf), self.dim, 1, self.n_total, k, sp(scores), sp(pos), sel)
        ok = pos[0] >= 0
        return pos[0][ok], _clamp(scores[0][ok])

    def _range(self, query: np.ndarray, threshold: float, sel: Any) -> tuple[np.ndarray, np.ndarray]:
        faiss = get_faiss()
        # faiss keeps score > radius; the exact >= threshold cut is made below.
        radius = -2.0 if threshold <= -1.0 else threshold - 1e-5
        res = faiss.RangeSearchResult(1)
        sp = faiss.swig_ptr
        faiss.range_search_inner_product(sp(query), sp(self._buf), self.dim, 1, self.n_total, radius, res, sel)
        count = int(faiss.rev_swig_ptr(res.lims, 2)[1])
        if count == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = _clamp(faiss.rev_swig_ptr(res.distances, count).copy())
        pos = faiss.rev_swig_ptr(res.labels, count).copy().astype(np.int64, copy=False)
        keep = scores >= threshold
        return pos[keep], scores[keep]
