"""An exact match that reads a quarter of the bytes: a first pass over an 8-bit copy of the
rows finds the candidates, and a bound on the copy's error proves they hold every row the
answer needs; those rows are then scored exactly. Otherwise the caller scans, as before.

Why: a large event's exact scan is bound by memory bandwidth. At 100k x 128 it reads 51 MB per
query (4.3 ms a core, the same with both cores busy); the top K of an 8-bit copy (faiss
``IndexScalarQuantizer``, QT_8bit_uniform) reads 12.8 MB (1.8 ms). A matrix below
``MIN_BYTES`` stays in cache and the 8-bit pass is no cheaper (10k x 128, 5 MB: 0.17 vs 0.19 ms;
the gain starts near 10 MB: 30k x 128 0.66 vs 0.44 ms, 10k x 512 1.34 vs 0.49), so small events
are scanned.

Why it is exact. Every component is coded on a uniform grid over [-r, r] (r: the largest
component when the copy was built), so it is off by at most r/255, more only where a later row
exceeds r (then by the excess too). A row's copy is within ``bound`` (L2) of the row, so its
approximate cosine with a unit query is within ``bound`` of the exact one, and a row outside
the top K by approximate cosine has an exact cosine <= D_K + bound (D_K: the K-th approximate
cosine). The K candidates are rescored exactly from the float32 rows, as a scan scores them.

- D_K + bound ranks below the threshold: every qualifying row is a candidate. The photo ranks
  are those of a full scan: any page, any cursor, the total.
- A top ``limit`` without a total (mode top_k): more than ``limit`` candidate photos qualify
  and the limit-th of them ranks above anything outside. Every photo at or above it has its
  best face among the candidates, so the top ``limit`` (ties by photo_id included) is exact.
- Neither: None, and the caller scans. A page that needs the total sizes K from a sample of
  the rows, and is not tried when that asks for more than K_MAX (a threshold near 0).
"""

from __future__ import annotations

import math

import numpy as np

from . import ranking
from .index import FlatIndex, get_faiss

MIN_BYTES = 15_000_000  # float32 rows below this: the scan is as cheap (29k faces at 128-d, 7k at 512-d)
K_MIN = 256  # candidates at least; a top k: K = max(K_MIN, K_PER_ROW * limit); with the total:
K_PER_ROW = 8  # K = max(K_MIN, 4 x the rows a sample says qualify)
K_MAX = 2048  # above: scan; the top K's heap costs what it saves (100k x 128: K 2048 2.9 ms, 4096 4.2 = a scan)
_SAMPLE = 1024  # rows scored exactly to guess how many qualify
_SLACK = 1e-4  # float32 summation order of the two kernels, far above its real size (~1e-6)
_ERASED = 127  # the code of 0.0 on the symmetric grid: what a removed row's copy becomes


def _largest(x: np.ndarray) -> float:
    """max |x| without an |x| temporary (the matrix may be gigabytes)."""
    return float(max(x.max(), -x.min())) if x.size else 0.0


class Quantized:
    """The 8-bit copy of a FlatIndex's rows [0, rows), kept in step with it: rows appended are
    coded at the next search, a removed row's code is erased at once (FlatIndex.remove calls
    ``erase``), a compaction drops the copy (rebuilt at the next search)."""

    def __init__(self, flat: FlatIndex) -> None:
        faiss = get_faiss()
        self.dim = flat.dim
        self.r = max(_largest(flat.matrix), 1e-6)
        self.index = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit_uniform,
                                                faiss.METRIC_INNER_PRODUCT)
        self.index.sq.trained.resize(2)
        faiss.copy_array_to_vector(np.array([-self.r, 2.0 * self.r], np.float32), self.index.sq.trained)
        self.index.is_trained = True
        self.step = self.r / 255.0  # the largest error of a component inside [-r, r]
        self.bound = 0.0
        self.rows = 0
        self.append(flat.matrix)

    @property
    def nbytes(self) -> int:
        return self.rows * self.dim

    def append(self, vectors: np.ndarray) -> None:
        if not len(vectors):
            return
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        excess = _largest(x) - self.r
        if excess <= 0:
            row_bound = math.sqrt(self.dim) * self.step
        else:  # a later row beyond the grid: bound each row by its own clipped components
            over = np.maximum(np.abs(x) - self.r, 0.0) + self.step
            row_bound = float(np.sqrt(np.einsum("ij,ij->i", over, over)).max())
        self.bound = max(self.bound, row_bound)
        self.index.add(x)
        self.rows += len(x)

    def erase(self, pos: np.ndarray) -> None:
        """Removed rows: their codes say nothing of the face any more (biometric data)."""
        pos = np.asarray(pos, dtype=np.int64)
        pos = pos[pos < self.rows]
        if len(pos):
            faiss = get_faiss()
            codes = faiss.rev_swig_ptr(self.index.codes.data(), self.rows * self.dim).reshape(self.rows, self.dim)
            codes[pos] = _ERASED

    def top(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k rows of highest approximate cosine: (approximate cosines, positions)."""
        d, i = self.index.search(q.reshape(1, self.dim), k)
        return d[0], i[0]


def synced(flat: FlatIndex) -> Quantized:
    """The flat's 8-bit copy, built or brought up to its rows."""
    quant = flat.quantized
    if quant is None:
        flat.quantized = quant = Quantized(flat)
    elif quant.rows < flat.n_total:
        quant.append(flat.matrix[quant.rows:])
    return quant


def _norm_range(flat: FlatIndex) -> tuple[float, float] | None:
    cached = flat.derived.get("norm_range")
    if cached is None:
        norms = flat.norms[flat.alive & np.isfinite(flat.norms)]
        cached = (float(norms.min()), float(norms.max())) if len(norms) else ()
        flat.derived["norm_range"] = cached
    return cached or None


def outside_rank(flat: FlatIndex, spec: ranking.RankSpec, cos: float) -> float:
    """The highest rank a face with cosine <= ``cos`` can have: the cosine (v2); v1 ranks by
    minus the raw distance sqrt(qn² + n² - 2·qn·n·cos), highest at the norm n nearest qn·cos
    among the event's norms."""
    cos = min(cos, 1.0)
    if spec.query_norm is None:
        return cos
    span = _norm_range(flat)
    if span is None:
        return math.inf  # no norms known: nothing can be proved
    qn = float(spec.query_norm)
    n = min(max(qn * cos, span[0]), span[1])
    return -math.sqrt(max(qn * qn + n * n - 2.0 * qn * n * cos, 0.0))


def _qualifying_guess(flat: FlatIndex, q: np.ndarray, spec: ranking.RankSpec) -> int:
    """How many rows qualify, from ~_SAMPLE evenly spread rows scored exactly."""
    step = max(1, flat.n_total // _SAMPLE)
    pos = np.arange(0, flat.n_total, step, dtype=np.int64)
    rank = ranking.face_ranks(flat, flat.scores_at(q, pos), spec, pos)
    return int(np.count_nonzero(rank >= spec.min_rank)) * step


def photo_ranks(flat: FlatIndex, q: np.ndarray, spec: ranking.RankSpec, *, limit: int,
                with_total: bool) -> ranking.PhotoRanks | None:
    """Exact photo ranks from the 8-bit first pass, or None when it proves nothing (scan).

    ``with_total`` False (a top ``limit`` whose total and "more" nobody reads) also accepts a
    proof of the top ``limit`` alone: the ranks then hold the candidate photos only
    (``complete`` False)."""
    if flat.n_total * flat.dim * 4 < MIN_BYTES or flat.n_alive == 0:
        return None
    if with_total:  # every qualifying row must be a candidate: K from how many there are
        guess = _qualifying_guess(flat, q, spec)
        k = max(K_MIN, 4 * guess)
    else:  # the top ``limit`` photos' best faces must be
        k = max(K_MIN, K_PER_ROW * max(int(limit), 1))
    if k > K_MAX:
        return None  # so many candidates cost about what a scan costs
    k = min(k, flat.n_total)
    quant = synced(flat)
    approx, pos = quant.top(q, k)
    pos = pos[pos >= 0]
    if len(pos) < flat.n_total:
        cut = float(approx[len(pos) - 1]) + quant.bound * float(np.linalg.norm(q)) + _SLACK
        outside = outside_rank(flat, spec, cut)
    else:
        outside = -math.inf
    pos = pos[flat.alive[pos]]  # removed rows' erased codes may still rank among the top K
    ranks = ranking.sparse_photo_ranks(flat, pos, flat.scores_at(q, pos), spec)
    if outside < spec.min_rank:
        return ranks
    if with_total or limit < 1 or len(ranks.rank) <= limit:
        return None
    kth = float(np.partition(ranks.rank, len(ranks.rank) - limit)[len(ranks.rank) - limit])
    if kth > outside:
        ranks.complete = False
        return ranks
    return None
