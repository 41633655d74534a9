"""Approximate search for large events: sign codes (SimHash) scanned in Hamming space, exact scores on top.

Exact search stays the default. An event with at least ``ann_min_faces`` faces may have an
approximate index, ``<data>/<space>/ann/<event>.npz`` (+ ``.json``): one B-bit code per face,
the signs of its projection on B random Gaussian directions (B = dim rounded up to 64, at
least 256; the directions come from a seed kept in the meta). The Hamming distance of two
codes estimates the angle between the vectors: P(bit differs) = angle / pi. A search scans
the codes with faiss's ``IndexBinaryFlat`` range search (64 bytes per 512-d face instead of
2 KB: memory traffic, what an exact scan is bound by, drops 32x), keeps the faces within
``radius`` = the Hamming distance expected at the threshold's angle plus ``sigmas`` standard
deviations, and rescores those candidates exactly from the cache's own float32 matrix, so
scores, ranking and the threshold test stay exact; only recall is approximate (a matching
face whose code strays beyond the radius is missed: at exactly the threshold that happens
with probability ~2% for 2 sigmas, and far less for the typical, clearly similar, match).

Why not IVF or HNSW: on the benchmark's face-like data (identities of ~10 faces, same-person
cosine ~0.65, 512-d), IVF-SQ8 reached recall 0.94 at nprobe 24 and HNSW-SQ 0.92 at efSearch
128; this reached 1.0 at a few ms (scripts/bench_store.py --ann prints the comparison's
current figures for this index).

Built and refreshed by writers (``FaceStore.build_ann``: the worker / bulk CLI after their
writes, ``write_snapshot``), never on a request. Faces added after the build (ids above the
file's ``max_id``) are scanned exactly; faces deleted since are dropped by the cache's mask,
and deletes remove the files (codes are derived from the vectors). When the unindexed tail
outgrows ``MAX_TAIL_FRACTION`` the search is exact again until a rebuild. The match body
says which one ran: ``search: "exact" | "approximate"``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .index import FlatIndex, get_faiss
from .ranking import RankSpec

MAX_TAIL_FRACTION = 0.10
REFRESH_FRACTION = 0.05  # writers rebuild once the tail reaches this share of the faces
DEFAULT_SIGMAS = 2.0
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
    return max(256, -(-int(dim) // 64) * 64)


def directions(dim: int, bits: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((dim, bits)).astype(np.float32)


def encode(vectors: np.ndarray, proj: np.ndarray) -> np.ndarray:
    out = np.empty((len(vectors), proj.shape[1] // 8), dtype=np.uint8)
    for s in range(0, len(vectors), _CHUNK):
        out[s : s + _CHUNK] = np.packbits(vectors[s : s + _CHUNK] @ proj > 0, axis=1)
    return out


@dataclass
class AnnIndex:
    codes: np.ndarray  # (n, bits/8) uint8
    ids: np.ndarray  # (n,) int64 face ids, ascending
    proj: np.ndarray  # (dim, bits) float32
    seed: int
    binary: Any = None  # faiss.IndexBinaryFlat over the codes (built on load)

    @property
    def bits(self) -> int:
        return int(self.proj.shape[1])

    def searcher(self) -> Any:
        if self.binary is None:
            idx = get_faiss().IndexBinaryFlat(self.bits)
            idx.add(self.codes)
            self.binary, self.codes = idx, np.zeros((0, self.bits // 8), np.uint8)  # one copy is enough
        return self.binary


def build(vectors: np.ndarray, ids: np.ndarray, *, seed: int = SEED) -> AnnIndex:
    """Codes of unit ``vectors`` (n, dim) with their face ids (ascending)."""
    proj = directions(vectors.shape[1], n_bits(vectors.shape[1]), seed)
    return AnnIndex(encode(vectors, proj), np.ascontiguousarray(ids, dtype=np.int64), proj, seed)


def write(paths: AnnPaths, index: AnnIndex, meta: dict[str, Any]) -> None:
    """Atomically replace the files (codes first, meta second); caller holds the snapshot lock."""
    paths.index.parent.mkdir(parents=True, exist_ok=True)
    tmp_index, tmp_meta = paths.index.with_suffix(".npz.tmp"), paths.meta.with_suffix(".json.tmp")
    try:
        with open(tmp_index, "wb") as fh:
            np.savez(fh, codes=index.codes, ids=index.ids)
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
            codes, ids = z["codes"], z["ids"]
    except (OSError, ValueError, KeyError):
        return None
    bits = meta.get("bits")
    if bits != n_bits(dim) or codes.shape != (meta["ntotal"], bits // 8) or len(ids) != meta["ntotal"]:
        return None
    return AnnIndex(np.ascontiguousarray(codes), ids.astype(np.int64), directions(dim, bits, int(meta["seed"])),
                    int(meta["seed"]))


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
    if meta is None or meta["sid"] != sid or not paths.index.exists():
        return True
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
    """(rows, exact cosines) of the candidates, or None: the caller runs the exact scan."""
    if cache is None or min_faces <= 0 or flat.n_alive < min_faces:
        return None
    loaded = cache.current(sid, flat.dim)
    if loaded is None:
        return None
    index, meta = loaded
    tail_start = int(np.searchsorted(flat.ids, meta["max_id"], side="right"))
    if flat.n_total - tail_start > MAX_TAIL_FRACTION * max(1, flat.n_alive):
        return None
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, flat.dim)
    bound = cosine_bound(spec)
    code = np.packbits(np.einsum("d,db->b", q[0], index.proj) > 0)[None, :]  # no BLAS threads
    _lims, _dist, found = index.searcher().range_search(code, radius(bound, index.bits, cache.sigmas) + 1)
    labels = index.ids[found] if len(found) else np.zeros(0, np.int64)  # faiss keeps distance < radius
    pos = np.zeros(0, np.int64)
    if len(labels) and tail_start:
        pos = np.minimum(np.searchsorted(flat.ids[:tail_start], labels), tail_start - 1)
        pos = pos[flat.ids[pos] == labels]
        pos = pos[flat.alive[pos]]
    scores = np.einsum("nd,d->n", flat.matrix[pos], q[0]) if len(pos) else np.zeros(0, np.float32)
    if tail_start < flat.n_total:  # faces newer than the index: exact scan (a view, no copy)
        tail_scores = flat.scores(q[0], tail_start)
        tail = np.flatnonzero((tail_scores >= bound) & flat.alive[tail_start:])
        pos = np.concatenate((pos, tail + tail_start))
        scores = np.concatenate((scores, tail_scores[tail]))
    return pos.astype(np.int64, copy=False), scores.astype(np.float32, copy=False)
