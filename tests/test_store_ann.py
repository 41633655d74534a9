"""The approximate index of large events: recall floor against exact search on a fixed seed,
no row exact search would not return, freshness (faces added after the build), deletes."""

from __future__ import annotations

import numpy as np
import pytest

from flask_backend.store import FaceRecord, FaceStore, Space, ann
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


def test_a_face_exactly_at_the_threshold_is_missed_at_most_half_a_percent_at_the_default_radius():
    """The default radius is what makes recall >= 0.995 hold whatever the data: the worst case is a
    face exactly at the threshold (a typical match is far above it and practically never missed)."""
    rng = np.random.default_rng(7)
    missed = total = 0
    for _ in range(6):
        q = rng.standard_normal(DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        u = rng.standard_normal((20_000, DIM)).astype(np.float32)
        u -= np.outer(u @ q, q)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        x = (THRESHOLD * q + np.sqrt(1 - THRESHOLD**2) * u).astype(np.float32)
        index = ann.build(x, np.arange(len(x)))
        found = index.candidates(q, THRESHOLD, ann.DEFAULT_SIGMAS, max_fraction=1.0)  # all of them are at it
        missed += len(x) - len(found)
        total += len(x)
    assert missed / total <= 0.005, missed / total
    # and the radius is not so wide that the scan stops filtering: unrelated faces mostly stay out
    far = rng.standard_normal((20_000, DIM)).astype(np.float32)
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    assert len(ann.build(far, np.arange(len(far))).candidates(q, THRESHOLD, ann.DEFAULT_SIGMAS)) < 0.02 * len(far)


def test_a_cache_with_masked_rows_rescores_each_candidate_against_its_own_vector(tmp_path):
    """Another process deleted faces and built the index over what is left: in this process the
    deleted faces are masked rows, not gone, so every later face sits at a different row than in
    the index. Each candidate must still be rescored against its own vector."""
    x = np.random.default_rng(3).standard_normal((6_000, DIM)).astype(np.float32)  # neighbours unrelated
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    writer = FaceStore(tmp_path, ann_min_faces=1_000, snapshot_min_faces=10**9)
    searcher = FaceStore(tmp_path, ann_min_faces=1_000, snapshot_min_faces=10**9)
    try:
        _put(writer, x)
        gone: set[str] = set()
        for face, deletes in ((5_999, (0, 7, 1234)), (4_321, (500, 1000)), (2_000, (1, 600))):  # photos before it
            searcher.ann_min_faces = 0
            exact, _ = _photos(searcher, x[face])  # this process's cache: every face still there
            for i in deletes:
                writer.delete_photo("big", f"p{i:06d}")
                gone.add(f"p{i:06d}")
            assert writer.build_ann("big", "v2")
            searcher.ann_min_faces = 1_000
            approx, kinds = _photos(searcher, x[face])
            flat = searcher._cache._entries[("big", "v2")].flat
            assert kinds == {"approximate"} and flat.n_dead > 0  # masked here, absent from the index
            assert approx[0] == (f"p{face // 3:06d}", pytest.approx(1.0, abs=1e-5))
            assert [p for p, _ in approx] == [p for p, _ in exact if p not in gone]
    finally:
        writer.close()
        searcher.close()


def test_an_index_of_another_code_length_is_not_used_and_is_due_for_a_rebuild(tmp_path):
    """Files written by an earlier version (256/512-bit codes, no refining half) stay unused
    (exact search) until a writer rebuilds them, which it does on its next pass."""
    import json

    store = FaceStore(tmp_path, ann_min_faces=1_000, snapshot_min_faces=10**9)
    try:
        x, _, _ = clustered(3_000, DIM, np.random.default_rng(5))
        _put(store, x)
        assert store.build_ann("big", "v2")
        paths = AnnPaths.of(store.data_dir, "v2", "big")
        meta = json.loads(paths.meta.read_text())
        with np.load(paths.index) as z:
            ids = z["ids"]
        with open(paths.index, "wb") as fh:
            np.savez(fh, codes=np.zeros((len(ids), 32), np.uint8), ids=ids)  # the old 256-bit layout
        paths.meta.write_text(json.dumps(dict(meta, bits=256)))
        assert _photos(store, x[10])[1] == {"exact"}
        assert store.build_ann("big", "v2", only_if_due=True), "an index of another code length is due"
        assert _photos(store, x[10])[1] == {"approximate"}
    finally:
        store.close()


def test_a_threshold_that_lets_much_of_the_event_through_is_searched_exactly(event):
    """At threshold 0.0 half of all faces qualify: the approximate path would rescore most of
    the event, so the search runs exactly and says so, with exact search's rows."""
    store, _x, queries = event
    spec = RankSpec(0.0)
    page = store.match("big", SPACE, queries[1], spec, limit=50)
    assert page.search == "exact" and page.total > N // 10
    store.ann_min_faces = 0
    exact = store.match("big", SPACE, queries[1], spec, limit=50)
    store.ann_min_faces = 10_000
    assert [(r.photo_id, r.score) for r in page.rows] == [(r.photo_id, r.score) for r in exact.rows]
