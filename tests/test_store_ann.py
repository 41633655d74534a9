"""The approximate index of large events: recall floor against exact search on a fixed seed,
no row exact search would not return, freshness (faces added after the build), deletes."""

from __future__ import annotations

import numpy as np
import pytest

from flask_backend.store import FaceRecord, FaceStore, Space
from flask_backend.store.ann import AnnPaths
from flask_backend.store.ranking import RankSpec
from scripts.bench_match import clustered

DIM = 128
SPACE = Space("v2", "insightface", "test", DIM)
N = 30_000
THRESHOLD = 0.35


def _put(store: FaceStore, x: np.ndarray, prefix: str = "p") -> None:
    box = (1.0, 1.0, 9.0, 9.0)
    store.put_photos("big", SPACE, [(f"{prefix}{i // 3:06d}", [FaceRecord(v, box, 0.9) for v in x[i : i + 3]], None)
                                    for i in range(0, len(x), 3)])


def _photos(store: FaceStore, q: np.ndarray) -> tuple[list[tuple[str, float]], set[str]]:
    rows, kinds, after = [], set(), None
    while True:
        page = store.match("big", SPACE, q, RankSpec(THRESHOLD), limit=500, after=after)
        rows.extend((r.photo_id, r.score) for r in page.rows)
        kinds.add(page.search)
        if not page.more:
            return rows, kinds
        after = (page.rows[-1].rank, page.rows[-1].photo_id)


@pytest.fixture(scope="module")
def event(tmp_path_factory):
    rng = np.random.default_rng(2026)
    x, centers, _ = clustered(N, DIM, rng)
    q = centers[:60] + rng.standard_normal((60, DIM)).astype(np.float32) * (0.72 / np.sqrt(DIM))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    store = FaceStore(tmp_path_factory.mktemp("ann"), ann_min_faces=10_000, snapshot_min_faces=10**9)
    _put(store, x)
    assert store.build_ann("big", "v2")
    yield store, x, q.astype(np.float32)
    store.close()


def test_recall_floor_against_exact_search(event):
    store, _x, queries = event
    hit = want = 0
    for q in queries:
        store.ann_min_faces = 0
        exact, kinds = _photos(store, q)
        assert kinds == {"exact"}
        store.ann_min_faces = 10_000
        approx, kinds = _photos(store, q)
        assert kinds == {"approximate"}
        truth = dict(exact)
        # only rows exact search returns, with its scores (exact rescoring; kernels may differ in the last bit)
        assert all(p in truth and abs(s - truth[p]) < 1e-5 for p, s in approx)
        assert [p for p, _ in approx] == [p for p, _ in exact if p in dict(approx)], "same order"
        hit += len(approx)
        want += len(exact)
    assert want > 200
    assert hit / want >= 0.995, hit / want


def test_faces_added_after_the_build_are_found_and_deletes_remove_the_index(event):
    store, _x, queries = event
    q = queries[0]
    _put(store, np.stack([q, q, q]), prefix="late")  # newer than the index: the exact tail scan
    rows, kinds = _photos(store, q)
    assert kinds == {"approximate"} and rows[0][0] == "late000000"
    paths = AnnPaths.of(store.data_dir, "v2", "big")
    assert paths.index.exists() and paths.meta.exists()
    store.delete_photo("big", "late000000")
    assert not paths.index.exists() and not paths.meta.exists()  # codes derive from the vectors
    rows, kinds = _photos(store, q)
    assert kinds == {"exact"} and "late000000" not in dict(rows)
    assert store.build_ann("big", "v2")
    assert _photos(store, q)[1] == {"approximate"}


def test_small_events_stay_exact(tmp_path):
    store = FaceStore(tmp_path, ann_min_faces=10_000)
    try:
        x, _, _ = clustered(3_000, DIM, np.random.default_rng(1))
        _put(store, x)
        assert not store.build_ann("big", "v2")
        assert _photos(store, x[0])[1] == {"exact"}
    finally:
        store.close()
