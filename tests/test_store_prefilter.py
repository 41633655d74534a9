"""The 8-bit first pass (store/prefilter.py) answers exactly what a scan answers, on an event
above its size floor as shipped: same rows, ranks, best faces, order, totals and cursors;
it proves both kinds of answer and falls back otherwise; removed rows' codes are erased with
the rows and faces added later are coded and found."""

from __future__ import annotations

import numpy as np
import pytest

from flask_backend.store import FaceRecord, FaceStore, Space, prefilter, ranking
from flask_backend.store.index import FlatIndex, get_faiss
from flask_backend.store.ranking import RankSpec

SHAPES = [(32_000, 128), (8_000, 512)]  # faces x dim: the test pack's and buffalo_l's, above MIN_BYTES as shipped


def _event(rng: np.random.Generator, faces: int, dim: int) -> tuple[list[tuple[str, list[FaceRecord], str]], np.ndarray]:
    """Photos of 1-4 faces: random strangers, and 40 people who share a fifth of the faces (more
    rows near a selfie than the first pass keeps), every face with its own bbox."""
    people = rng.standard_normal((40, dim))
    vecs = rng.standard_normal((faces, dim))
    who = rng.integers(0, 40, faces)
    crowd = rng.random(faces) < 0.2
    vecs[crowd] = people[who[crowd]] + 0.35 * rng.standard_normal((int(crowd.sum()), dim))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    photos, i, n = [], 0, 0
    while i < faces:
        k = min(int(rng.integers(1, 5)), faces - i)
        photos.append((f"p{n:06d}", [FaceRecord(vecs[j], (float(j), 0.0, float(j) + 5, 5.0), 0.9) for j in range(i, i + k)],
                       f"https://example.com/{n}.jpg"))
        i, n = i + k, n + 1
    return photos, people / np.linalg.norm(people, axis=1, keepdims=True)


@pytest.fixture(scope="module", params=SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
def loaded(request, tmp_path_factory):
    faces, dim = request.param
    assert faces * dim * 4 >= prefilter.MIN_BYTES
    rng = np.random.default_rng(7)
    photos, people = _event(rng, faces, dim)
    space = Space("v2", "insightface", "test", dim)
    store = FaceStore(tmp_path_factory.mktemp("prefilter") / "data")
    for start in range(0, len(photos), 4000):
        store.put_photos("big", space, photos[start:start + 4000])
    yield store, space, people, rng
    store.close()


def _scanned(store: FaceStore, monkeypatch, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(prefilter, "MIN_BYTES", 2**62)
        return store.match(*args, **kwargs)


def _rows(page):
    return [(r.photo_id, r.rank, r.face_id, r.bbox, r.source_url) for r in page.rows]


def _counters(store: FaceStore) -> dict[str, int]:
    return dict(store.stats()["counters"])


def test_first_pass_answers_exactly_like_a_scan(loaded, monkeypatch):
    store, V2, people, rng = loaded
    dim = V2.dim
    selfies = [p + 0.3 * rng.standard_normal(dim) / np.sqrt(dim) for p in people[:6]]
    queries = [s / np.linalg.norm(s) for s in selfies] + [rng.standard_normal(dim) for _ in range(3)]
    proofs = {"every qualifying row": 0, "the top k": 0}
    for q in queries:
        for threshold in (0.5, 0.35, 0.0):
            spec = RankSpec(threshold)
            for limit in (1, 20, 100):
                before = _counters(store).get("prefiltered", 0)
                top = store.match("big", V2, q, spec, limit=limit, with_total=False)
                ref = _scanned(store, monkeypatch, "big", V2, q, spec, limit=limit)
                assert _rows(top) == _rows(ref), (threshold, limit)
                if _counters(store).get("prefiltered", 0) > before:
                    proofs["every qualifying row" if top.total is not None else "the top k"] += 1
                if top.total is not None:
                    assert (top.total, top.more) == (ref.total, ref.more)
            # every page of "all my photos", with the total, through the cursors
            after, pages = None, 0
            while pages < 4:
                page = store.match("big", V2, q, spec, limit=25, after=after)
                ref = _scanned(store, monkeypatch, "big", V2, q, spec, limit=25, after=after)
                assert _rows(page) == _rows(ref) and (page.total, page.more) == (ref.total, ref.more)
                if not page.more:
                    break
                after, pages = (page.rows[-1].rank, page.rows[-1].photo_id), pages + 1
    # both kinds of proof answered some queries, and the rest were scanned
    assert proofs["every qualifying row"] > 0 and proofs["the top k"] > 0, proofs
    assert _counters(store).get("scans", 0) > 0


def test_removed_rows_codes_are_erased_at_once_and_a_compaction_drops_the_copy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 128)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flat = FlatIndex(128)
    flat.add(np.arange(1, 2001), x, np.arange(2000) // 2)
    quant = prefilter.synced(flat)
    assert flat.quantized is quant and quant.rows == 2000
    flat.remove(np.array([11, 12, 500]))
    codes = get_faiss().rev_swig_ptr(quant.index.codes.data(), quant.rows * quant.dim).reshape(quant.rows, quant.dim)
    pos = np.array([10, 11, 499])
    assert (codes[pos] == 127).all() and not flat.matrix[pos].any()  # biometric data: gone from both
    assert (codes[[0, 13, 498]] != 127).any(axis=1).all()  # the others are intact
    flat.compact()
    assert flat.quantized is None and prefilter.synced(flat).rows == flat.n_total == 1997


def test_deletes_and_faces_added_later_are_answered_like_a_scan(loaded, monkeypatch):
    store, V2, people, rng = loaded
    dim = V2.dim
    q = people[7]
    spec = RankSpec(0.3)
    first = store.match("big", V2, q, spec, limit=5, with_total=False)
    gone = first.rows[0].photo_id
    store.delete_photo("big", gone)
    after = store.match("big", V2, q, spec, limit=5, with_total=False)
    assert gone not in [r.photo_id for r in after.rows]
    assert _rows(after) == _rows(_scanned(store, monkeypatch, "big", V2, q, spec, limit=5))
    flat = store._cache._entries[("big", "v2")].flat  # the cache entry this process matches on
    store.match("big", V2, q, spec, limit=5, with_total=False)
    quant = flat.quantized
    assert quant is not None and quant.rows == flat.n_total
    # faces added after the copy was built: coded at the next search, and found; one of them
    # lies beyond the copy's grid (a component above every one it was built from)
    bound = quant.bound
    beyond = np.zeros(dim)
    beyond[0] = 1.0
    near = people[8] + 0.05 * rng.standard_normal(dim) / np.sqrt(dim)
    store.put_photo("big", "new-near", V2, [FaceRecord(near / np.linalg.norm(near), (1.0, 2.0, 3.0, 4.0), 0.9)])
    store.put_photo("big", "new-beyond", V2, [FaceRecord(beyond, (5.0, 6.0, 7.0, 8.0), 0.9)])
    got = store.match("big", V2, people[8], RankSpec(0.3), limit=3, with_total=False)
    assert got.rows[0].photo_id == "new-near" and flat.quantized is quant and quant.rows == flat.n_total
    assert quant.bound > bound
    e0 = store.match("big", V2, beyond, RankSpec(0.9), limit=3)
    assert [(r.photo_id, r.bbox) for r in e0.rows] == [("new-beyond", (5.0, 6.0, 7.0, 8.0))] and e0.total == 1
    for q2, thr in ((people[8], 0.3), (beyond, 0.2)):
        assert _rows(store.match("big", V2, q2, RankSpec(thr), limit=20, with_total=False)) == \
            _rows(_scanned(store, monkeypatch, "big", V2, q2, RankSpec(thr), limit=20))


def test_the_proof_holds_where_the_8_bit_copy_misorders_rows():
    """Rows whose first component falls in one bin of the copy's grid all get the same
    approximate cosine with the query e0 (the center's), whatever their exact order. Put 400
    such rows above the center but below a target row that is added last (so the top K keeps the others): the first pass
    must not answer without it, neither as "every qualifying row" (threshold between them)
    nor as "the top k". A bound smaller than the grid's error answers both wrongly."""
    dim, h = 128, 1.0 / 255  # grid over [-1, 1] (a row holds a component 1.0): half a step is 1/255
    center = -1.0 + (200 + 0.5) * 2 * h  # bin 200's center
    rng = np.random.default_rng(5)

    def row(first: float) -> np.ndarray:
        rest = rng.standard_normal(dim - 1)
        rest *= np.sqrt(1 - first * first) / np.linalg.norm(rest)
        return np.concatenate(([first], rest))

    rows = [np.eye(dim)[1]] + [row(center + 0.5 * h) for _ in range(400)] + [row(center + 0.9 * h)]
    x = np.asarray(rows, np.float32)
    flat = FlatIndex(dim)
    flat.add(np.arange(1, len(x) + 1), x, np.arange(len(x)))
    target = flat.pids[-1]
    q = np.eye(dim, dtype=np.float32)[0]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(prefilter, "MIN_BYTES", 0)
        quant = prefilter.synced(flat)
        approx, pos = quant.top(q, prefilter.K_MIN)
        assert len(x) - 1 not in pos.tolist() and np.ptp(approx) == 0  # one bin: the target left out
        for spec, limit, with_total in ((RankSpec(float(center + 0.7 * h)), 20, True), (RankSpec(-1.0), 1, False)):
            exact = ranking.exact_photo_ranks(flat, q, spec)
            assert target in exact.pids[exact.rank == exact.rank.max()].tolist()
            got = prefilter.photo_ranks(flat, q, spec, limit=limit, with_total=with_total)
            assert got is None or target in got.pids.tolist()  # no answer, or one that has it
