"""Approximate search for large events: sign codes (SimHash) scanned in Hamming space, exact scores on top.

Exact search stays the default. An event with at least ``ann_min_faces`` faces may have an
approximate index, ``<data>/<space>/ann/<event>.npz`` (+ ``.json``): one 1024-bit code per face,
the signs of its projections on 1024 random Gaussian directions (from a seed kept in the meta).
The Hamming distance of two codes estimates the angle between the vectors: P(bit differs) =
angle / pi, so the spread of the estimate depends on the bits only, not on the dimension.

A search (``search``), in three cuts, each cheaper per face than the next:

1. scan the first 512 bits of every code (faiss's SIMD Hamming kernel over blocks; 64 bytes a
   face instead of 2 KB at 512-d: memory traffic, what an exact scan is bound by, drops 32x) and
   keep the faces within ``radius(bound, 512, sigmas)``;
2. for those, add the distance on the other 512 bits (64 bytes each, gathered) and keep the
   faces within ``radius(bound, 1024, sigmas)``: this drops most of the unrelated faces that
   strayed inside the first radius, before any 2 KB row is read;
3. rescore the rest exactly against the cache's own float32 rows (in place, no copy).

Scores, ranking and the threshold test stay exact; only recall is approximate. ``radius`` is
the distance expected at the threshold's angle plus ``sigmas`` standard deviations; at the
default 2.8 a face *exactly* at the threshold is missed with probability <= 0.5% (both cuts
together, measured by tests/test_store_ann.py and bench_store --ann), so recall >= 0.995 holds
whatever the data, and a typical match, far above the threshold, is practically never missed.

Why not IVF or HNSW: on the benchmark's face-like data (identities of ~10 faces, same-person
cosine ~0.65, 512-d), IVF-SQ8 reached recall 0.94 at nprobe 24 and HNSW-SQ 0.92 at efSearch
128. Nor bucketing / multi-probe LSH: at a 0.35 threshold a matching face differs from the
query in ~39% of its bits (an unrelated one in 50%), so no short prefix of the code can be
trusted to agree and every bucket would have to be probed.

Built and refreshed by writers (``FaceStore.build_ann``: the worker / bulk CLI after their
writes, ``write_snapshot``), never on a request. Faces added after the build (ids above the
file's ``max_id``) are scanned exactly; faces deleted since are dropped by the cache's mask,
and deletes remove the files (codes are derived from the vectors). When the unindexed tail
outgrows ``MAX_TAIL_FRACTION`` the search is exact again until a rebuild, and so is one whose
scan passes more than ``MAX_CANDIDATE_FRACTION`` of the event (a low threshold). The match body
says which one ran: ``search: "exact" | "approximate"``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .index import FlatIndex, get_faiss
from .ranking import RankSpec

MAX_TAIL_FRACTION = 0.10
MAX_CANDIDATE_FRACTION = 0.125  # the scan passed more of the event than this: search exactly instead
REFRESH_FRACTION = 0.05  # writers rebuild once the tail reaches this share of the faces
DEFAULT_SIGMAS = 2.8  # a face exactly at the threshold is missed with probability <= 0.5% (both radii)
SCAN_BITS = REFINE_BITS = 512
SEED = 20261201
_CHUNK = 65536


@dataclass(frozen=True)
class AnnPaths:
    index: Path
    meta: Path

    @classmethod
    def of(cls, data_dir: Path, space_name: str, event_id: str) -> AnnPaths:
        base = data_dir / space_name / "ann"
        return cls(base / f"{event_id}.npz", base / f"{event_id}.json")


def n_bits(dim: int) -> int:
    """Bits per face: 1024, whatever the dimension (the spread of a sign-code estimate depends
    on its bits only). 512 are scanned: fewer let too many unrelated faces through (at 128-d and a
    0.35 threshold, 256 bits pass ~12% of an event, 512 bits ~2.5%), more cost scan time; the
    other 512 refine the scan's candidates."""
    return SCAN_BITS + REFINE_BITS


def directions(dim: int, bits: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((dim, bits)).astype(np.float32)


def encode(vectors: np.ndarray, proj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scanned half, refining half) of the sign codes of ``vectors`` on ``proj``'s directions."""
    half = SCAN_BITS // 8
    scan = np.empty((len(vectors), half), dtype=np.uint8)
    refine = np.empty((len(vectors), proj.shape[1] // 8 - half), dtype=np.uint8)
    step = _CHUNK // 4  # a block's projections are (step, 1024) float32: 64 MB
    for s in range(0, len(vectors), step):
        code = np.packbits(vectors[s : s + step] @ proj > 0, axis=1)
        scan[s : s + step], refine[s : s + step] = code[:, :half], code[:, half:]
    return scan, refine


@dataclass
class AnnIndex:
    codes: np.ndarray  # (n, SCAN_BITS/8) uint8, the scanned half of each face's code, C-contiguous
    refine: np.ndarray  # (n, REFINE_BITS/8) uint8, the other half: read only for the scan's candidates
    ids: np.ndarray  # (n,) int64 face ids, ascending
    proj: np.ndarray  # (dim, bits) float32
    seed: int
    proj_t: np.ndarray | None = None  # (bits, dim) contiguous copy: the query's code in one SIMD pass
    where: np.ndarray | None = None  # (n,) each face's row in the searching process's cache (positions())

    @property
    def bits(self) -> int:
        return int(self.proj.shape[1])

    def query_code(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (dim,) float32 query's code halves; faiss's single-threaded kernel (no BLAS threads)."""
        if self.proj_t is None:
            self.proj_t = np.ascontiguousarray(self.proj.T)
        q = np.ascontiguousarray(q, dtype=np.float32)
        faiss = get_faiss()
        out = np.empty(self.bits, np.float32)
        faiss.fvec_inner_products_ny(faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(self.proj_t),
                                     len(q), self.bits)
        code = np.packbits(out > 0)
        half = SCAN_BITS // 8
        return code[None, :half].copy(), code[None, half:].copy()

    def candidates(
        self, q: np.ndarray, bound: float, sigmas: float, max_fraction: float = MAX_CANDIDATE_FRACTION
    ) -> np.ndarray | None:
        """Index rows (ascending) whose codes are within both radii at the cosine ``bound``:
        the scanned half within its own, then the whole code, halves summed, within the radius
        of twice the bits (read for the scan's candidates only: 64 bytes each, not a 2 KB row).

        None when the scan passes more than ``max_fraction`` of the faces (a low
        threshold, e.g. 0.0, or a query close to a large share of the event): exact search is
        then the cheaper one."""
        code, code_refine = self.query_code(q)
        rows, dist = self.scan(code, radius(bound, SCAN_BITS, sigmas))
        if len(rows) > max_fraction * max(1, len(self.codes)):
            return None
        if len(rows) == 0:
            return rows
        faiss = get_faiss()
        sp = faiss.swig_ptr
        picked = np.take(self.refine, rows, axis=0)  # 3x faster than fancy indexing for rows
        more = np.empty(len(rows), np.int32)
        faiss.hammings(sp(code_refine), sp(picked), 1, len(rows), picked.shape[1], sp(more))
        return rows[dist + more <= radius(bound, self.bits, sigmas)]

    def scan(self, code: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, Hamming distances) of the scanned half's codes within ``radius`` (inclusive), ascending.

        faiss's ``hammings`` (its SIMD Hamming kernel, ~20% faster here than ``match_hamming_thres``
        and than IndexBinaryFlat's range search, which also builds result objects) over blocks of
        ``_CHUNK`` codes, so each block's distances are cut while still in cache."""
        n = len(self.codes)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        faiss = get_faiss()
        sp = faiss.swig_ptr
        step = min(n, _CHUNK)
        dist = np.empty(step, np.int32)
        rows, dists = [], []
        for s in range(0, n, step):
            k = min(step, n - s)
            faiss.hammings(sp(code), sp(self.codes[s : s + k]), 1, k, self.codes.shape[1], sp(dist))
            hit = np.flatnonzero(dist[:k] <= radius)
            if len(hit):
                rows.append(hit + s)
                dists.append(dist[hit])
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        return np.concatenate(rows), np.concatenate(dists)


def build(vectors: np.ndarray, ids: np.ndarray, *, seed: int = SEED) -> AnnIndex:
    """Codes of unit ``vectors`` (n, dim) with their face ids (ascending)."""
    proj = directions(vectors.shape[1], n_bits(vectors.shape[1]), seed)
    scan, refine = encode(vectors, proj)
    return AnnIndex(scan, refine, np.ascontiguousarray(ids, dtype=np.int64), proj, seed)


def write(paths: AnnPaths, index: AnnIndex, meta: dict[str, Any]) -> None:
    """Atomically replace the files (codes first, meta second); caller holds the snapshot lock."""
    paths.index.parent.mkdir(parents=True, exist_ok=True)
    tmp_index, tmp_meta = paths.index.with_suffix(".npz.tmp"), paths.meta.with_suffix(".json.tmp")
    try:
        with open(tmp_index, "wb") as fh:
            np.savez(fh, codes=index.codes, refine=index.refine, ids=index.ids)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_index, paths.index)
        full = dict(meta, ntotal=len(index.ids), bits=index.bits, seed=index.seed, written_at=time.time())
        tmp_meta.write_text(json.dumps(full))
        _fsync(tmp_meta)
        os.replace(tmp_meta, paths.meta)
        _fsync(paths.index.parent)
    except BaseException:
        for p in (tmp_index, tmp_meta):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        raise


def read(paths: AnnPaths, meta: dict[str, Any], dim: int) -> AnnIndex | None:
    try:
        with np.load(paths.index) as z:
            codes, refine, ids = z["codes"], z["refine"], z["ids"]
    except (OSError, ValueError, KeyError):
        return None
    bits, n = meta.get("bits"), meta["ntotal"]
    if bits != n_bits(dim) or codes.shape != (n, SCAN_BITS // 8) or refine.shape != (n, REFINE_BITS // 8) or len(ids) != n:
        return None
    return AnnIndex(np.ascontiguousarray(codes), np.ascontiguousarray(refine), ids.astype(np.int64),
                    directions(dim, bits, int(meta["seed"])), int(meta["seed"]))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_meta(paths: AnnPaths) -> dict[str, Any] | None:
    try:
        meta = json.loads(paths.meta.read_text())
    except (OSError, ValueError):
        return None
    keys = ("sid", "seq", "max_id", "ntotal", "bits", "seed")
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) for k in keys):
        return None
    return meta


def remove(paths: AnnPaths) -> bool:
    """Delete the files (meta first: codes without their meta are never used); caller holds the lock."""
    removed = False
    for p in (paths.meta, paths.index, paths.index.with_suffix(".npz.tmp"), paths.meta.with_suffix(".json.tmp")):
        try:
            p.unlink()
            removed = True
        except FileNotFoundError:
            pass
    return removed


def due(paths: AnnPaths, sid: int, flat: FlatIndex) -> bool:
    """A writer should (re)build: no usable file, or its unindexed tail reached REFRESH_FRACTION."""
    meta = read_meta(paths)
    if meta is None or meta["sid"] != sid or meta["bits"] != n_bits(flat.dim) or not paths.index.exists():
        return True  # (an index of another code length is never used: rebuild it)
    tail = flat.n_total - int(np.searchsorted(flat.ids, meta["max_id"], side="right"))
    return tail >= REFRESH_FRACTION * max(1, flat.n_alive)


class AnnCache:
    """One process's loaded copy of an event's approximate index; reloaded when the file changes."""

    def __init__(self, paths: AnnPaths, sigmas: float = DEFAULT_SIGMAS) -> None:
        self.paths = paths
        self.sigmas = float(sigmas)
        self.index: AnnIndex | None = None
        self.meta: dict[str, Any] | None = None
        self._stamp: tuple[int, int] | None = None

    def current(self, sid: int, dim: int) -> tuple[AnnIndex, dict[str, Any]] | None:
        try:
            st = os.stat(self.paths.meta)
        except OSError:
            self.index = self.meta = self._stamp = None  # removed (e.g. a delete): drop our copy too
            return None
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            self.index = self.meta = None
            self._stamp = stamp
            meta = read_meta(self.paths)
            index = read(self.paths, meta, dim) if meta is not None else None  # torn or missing: exact
            if index is not None:
                self.index, self.meta = index, meta
        if self.index is None or self.meta is None or self.meta["sid"] != sid:
            return None
        return self.index, self.meta


def cosine_bound(spec: RankSpec) -> float:
    """Lowest cosine a face can have and still qualify (v1: necessary condition on the raw distance)."""
    if spec.query_norm is None:
        return float(spec.min_rank)
    t, qn = -float(spec.min_rank), float(spec.query_norm)
    return math.sqrt(max(0.0, 1.0 - (t / qn) ** 2)) if qn > 0 else -1.0


def radius(bound: float, bits: int, sigmas: float) -> int:
    """Hamming radius: the distance expected at the bound's angle plus ``sigmas`` deviations."""
    p = math.acos(max(-1.0, min(1.0, bound))) / math.pi
    return int(min(bits, math.ceil(bits * p + sigmas * math.sqrt(bits * p * (1.0 - p)))))


def search(
    cache: AnnCache | None, sid: int, flat: FlatIndex, query: np.ndarray, spec: RankSpec, min_faces: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, exact cosines) of the live faces that may qualify, or None: the caller runs the exact scan.

    Every face returned has its exact cosine >= the cosine bound (minus a rounding slack), so
    the caller's ranking sees a handful of rows, not the candidates."""
    if cache is None or min_faces <= 0 or flat.n_alive < min_faces:
        return None
    loaded = cache.current(sid, flat.dim)
    if loaded is None:
        return None
    index, meta = loaded
    tail_start = int(np.searchsorted(flat.ids, meta["max_id"], side="right"))
    if flat.n_total - tail_start > MAX_TAIL_FRACTION * max(1, flat.n_alive):
        return None
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(flat.dim)
    bound = cosine_bound(spec)
    keep_from = bound - 1e-6  # the exact test is the caller's; this only drops what cannot qualify
    with one_thread():
        rows = index.candidates(q, bound, cache.sigmas)
        if rows is None:
            return None
        pos = positions(index, flat, rows, tail_start)
        scores = flat.scores_at(q, pos)
    keep = scores >= keep_from
    pos, scores = pos[keep], scores[keep]
    if tail_start < flat.n_total:  # faces newer than the index: exact scan (a view, no copy)
        tail_scores = flat.scores(q, tail_start)
        tail = np.flatnonzero((tail_scores >= keep_from) & flat.alive[tail_start:])
        pos = np.concatenate((pos, tail + tail_start))
        scores = np.concatenate((scores, tail_scores[tail]))
    return pos.astype(np.int64, copy=False), scores.astype(np.float32, copy=False)


def positions(index: AnnIndex, flat: FlatIndex, rows: np.ndarray, tail_start: int) -> np.ndarray:
    """Cache rows (live only) of the index rows ``rows``, ascending.

    ``index.where`` guesses each face's row in the cache: its own row at first (right when the
    cache had no masked rows at build time), then whatever a lookup found. A guess is checked
    against the face id; only wrong ones are looked up (a binary search), and remembered, so
    after a compaction or a build over masked rows the map heals itself in a few searches."""
    if len(rows) == 0 or tail_start == 0:
        return np.zeros(0, np.int64)
    if index.where is None:
        index.where = np.arange(len(index.ids), dtype=np.int64)
    labels = index.ids[rows]
    pos = np.minimum(index.where[rows], tail_start - 1)
    wrong = np.flatnonzero(flat.ids[pos] != labels)
    if len(wrong):
        found = np.minimum(np.searchsorted(flat.ids[:tail_start], labels[wrong]), tail_start - 1)
        pos[wrong] = found
        index.where[rows[wrong]] = found
        ok = flat.ids[pos] == labels  # faces compacted away since the build are not in the cache
        pos = pos[ok]
    return pos[flat.alive[pos]]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """OpenMP team of one for this thread while a single query runs.

    faiss's kernels open an OpenMP region per call, sized by the calling thread's own setting:
    ``get_faiss`` pins it in the thread that imported faiss, but every other thread (each
    gunicorn request thread) starts at the number of cores. One query has nothing to share
    out, so a bigger team only spins, against the other requests."""
    faiss = get_faiss()
    before = faiss.omp_get_max_threads()
    if before != 1:
        faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            faiss.omp_set_num_threads(before)
