"""Approximate search for large events: an IVF index over 8-bit codes, exact scores on top.

Exact search stays the default. An event with at least ``ann_min_faces`` faces may have an
approximate index, ``<data>/<space>/ann/<event>.ivf`` (+ ``.json``): a faiss
``IndexIVFScalarQuantizer`` (QT_8bit, inner product) holding the face ids. It is built and
refreshed by writers (``FaceStore.build_ann``, called by the worker / bulk CLI after their
writes and by ``write_snapshot``), never on a request: training and adding a million
vectors takes seconds.

A search probes ``nprobe`` lists with a range slightly below the bound (8-bit codes move a
score by well under ``MARGIN``), then rescores every candidate exactly from the cache's own
float32 matrix, so scores, ranking and the threshold test are exact; only recall is
approximate (a true match in a list that was not probed is missed). Faces added after the
build (ids above the file's ``max_id``) are scanned exactly; faces deleted since are dropped
by the cache's mask, and deletes remove the files (they hold codes of the vectors). When the
unindexed tail outgrows ``MAX_TAIL_FRACTION`` the search is exact again until a rebuild.
The match body says which one ran: ``search: "exact" | "approximate"``.
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

MARGIN = 0.05
MAX_TAIL_FRACTION = 0.10
REFRESH_FRACTION = 0.05  # writers rebuild once the tail reaches this share of the faces
DEFAULT_NPROBE = 24
TRAIN_PER_LIST = 40


@dataclass(frozen=True)
class AnnPaths:
    index: Path
    meta: Path

    @classmethod
    def of(cls, data_dir: Path, space_name: str, event_id: str) -> AnnPaths:
        base = data_dir / space_name / "ann"
        return cls(base / f"{event_id}.ivf", base / f"{event_id}.json")


def n_lists(n: int) -> int:
    """About sqrt(n) lists: probing ``nprobe`` of them scans ~nprobe·sqrt(n) codes."""
    return int(min(4096, max(16, round(math.sqrt(n)))))


def build(vectors: np.ndarray, ids: np.ndarray, *, seed: int = 1234) -> Any:
    """Train and fill an IVF-SQ8 index over unit ``vectors`` (n, dim) with their face ids."""
    faiss = get_faiss()
    n, dim = vectors.shape
    nlist = n_lists(n)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.seed = seed
    sample = min(n, nlist * TRAIN_PER_LIST)
    pick = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    index.train(np.ascontiguousarray(vectors[pick]))
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    return index


def write(paths: AnnPaths, index: Any, meta: dict[str, Any]) -> None:
    """Atomically replace the files (index first, meta second); caller holds the snapshot lock."""
    faiss = get_faiss()
    paths.index.parent.mkdir(parents=True, exist_ok=True)
    tmp_index, tmp_meta = paths.index.with_suffix(".ivf.tmp"), paths.meta.with_suffix(".json.tmp")
    try:
        faiss.write_index(index, str(tmp_index))
        _fsync(tmp_index)
        os.replace(tmp_index, paths.index)
        full = dict(meta, ntotal=int(index.ntotal), nlist=int(index.nlist), written_at=time.time())
        tmp_meta.write_text(json.dumps(full))
        _fsync(tmp_meta)
        os.replace(tmp_meta, paths.meta)
        _fsync(paths.index.parent)
    except BaseException:
        for p in (tmp_index, tmp_meta):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        raise


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
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) for k in ("sid", "seq", "max_id", "ntotal")):
        return None
    return meta


def remove(paths: AnnPaths) -> bool:
    """Delete the files (meta first: an index without its meta is never used); caller holds the lock."""
    removed = False
    for p in (paths.meta, paths.index, paths.index.with_suffix(".ivf.tmp"), paths.meta.with_suffix(".json.tmp")):
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

    def __init__(self, paths: AnnPaths, nprobe: int = DEFAULT_NPROBE) -> None:
        self.paths = paths
        self.nprobe = int(nprobe)
        self.index: Any = None
        self.meta: dict[str, Any] | None = None
        self._stamp: tuple[int, int] | None = None

    def current(self, sid: int) -> tuple[Any, dict[str, Any]] | None:
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
            if meta is not None:
                try:
                    index = get_faiss().read_index(str(self.paths.index))
                except RuntimeError:  # missing or torn: stay exact until the next build
                    index = None
                if index is not None and int(index.ntotal) == meta["ntotal"]:
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


def search(
    cache: AnnCache | None, sid: int, flat: FlatIndex, query: np.ndarray, spec: RankSpec, min_faces: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, exact cosines) of the candidates, or None: the caller runs the exact scan."""
    if cache is None or min_faces <= 0 or flat.n_alive < min_faces:
        return None
    loaded = cache.current(sid)
    if loaded is None:
        return None
    index, meta = loaded
    tail_start = int(np.searchsorted(flat.ids, meta["max_id"], side="right"))
    if flat.n_total - tail_start > MAX_TAIL_FRACTION * max(1, flat.n_alive):
        return None
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, flat.dim)
    bound = cosine_bound(spec)
    index.nprobe = min(cache.nprobe, int(index.nlist))
    _lims, _dist, labels = index.range_search(q, bound - MARGIN)
    pos = np.zeros(0, np.int64)
    if len(labels) and tail_start:
        pos = np.minimum(np.searchsorted(flat.ids[:tail_start], labels), tail_start - 1)
        pos = pos[flat.ids[pos] == labels]
        pos = pos[flat.alive[pos]]
    scores = flat.matrix[pos] @ q[0] if len(pos) else np.zeros(0, np.float32)
    if tail_start < flat.n_total:  # faces newer than the index: exact scan (a view, no copy)
        tail_scores = flat.matrix[tail_start:] @ q[0]
        tail = np.flatnonzero((tail_scores >= bound - MARGIN) & flat.alive[tail_start:])
        pos = np.concatenate((pos, tail + tail_start))
        scores = np.concatenate((scores, tail_scores[tail]))
    return pos.astype(np.int64, copy=False), scores.astype(np.float32, copy=False)
