"""Match ranking and paging equal a brute-force reference on random events: ties, many faces
per photo, photos added between pages; v2, v1 (raw distances) and several selfies, over HTTP;
plus the store-level details (best face's bbox, deletes, snapshot loads)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from flask_backend import create_app
from flask_backend.store import FaceRecord, FaceStore, Space, prefilter
from flask_backend.store.ranking import RankSpec
from tests.conftest import make_settings
from tests.ranking_fixtures import Event, after, pool, random_event, reference, stored_first

DIM = 128  # both spaces of the real engines (test pack v2 and dlib v1)


@pytest.fixture(autouse=True, params=["scan", "8-bit first pass"])
def first_pass(request, monkeypatch):
    """Every test twice: these small events scanned, as shipped, and with the 8-bit first pass
    (store/prefilter.py) forced on with few candidates, so that each of its proofs (every
    qualifying row among the candidates; the top k alone) and its fall-back to a scan run."""
    if request.param != "scan":
        monkeypatch.setattr(prefilter, "MIN_BYTES", 0)
        monkeypatch.setattr(prefilter, "K_MIN", 64)  # of some 500 faces: the proofs are real
        monkeypatch.setattr(prefilter, "K_PER_ROW", 4)
        monkeypatch.setattr(prefilter, "K_MAX", 160)
    return request.param


def _first_pass_ran(client, first_pass: str) -> None:
    """The ranks came from the branch the test is for: both 8-bit outcomes, or scans only."""
    counters = client.application.extensions["facematch"].store.stats()["counters"]
    if first_pass == "scan":
        assert counters.get("prefiltered", 0) == 0 and counters.get("scans", 0) > 0, counters
    else:
        assert counters.get("prefiltered", 0) > 0 and counters.get("scans", 0) > 0, counters


@pytest.fixture
def app(tmp_path, pack_dir):
    """A fresh app (data dir) per test: each test runs once per first pass on the same event ids."""
    return create_app(make_settings(tmp_path / "appdata", pack_dir))


def _unit_list(v: np.ndarray) -> list[float]:
    return [float(x) for x in v]


def _ingest(client, space: str, event_id: str, ev: Event, vectors: list[np.ndarray], only=None) -> None:
    field = "embeddings" if space == "v2" else "descriptors"
    for pid, faces in ev.photos.items():
        if only is not None and pid not in only:
            continue
        vecs = [_unit_list(vectors[b] * n) for b, n in faces]
        resp = client.post(f"/api/{space}/ingest", json={"event_id": event_id, "photo_id": pid, field: vecs})
        assert resp.status_code == 200, resp.get_json()


def _pages(client, space: str, body: dict, size: int, between=None) -> list[dict]:
    """Every page of mode=all; ``between(page_no, last_row)`` runs after each page."""
    pages, cursor = [], None
    while True:
        req = dict(body, mode="all", page_size=size)
        if cursor:
            req["cursor"] = cursor
        resp = client.post(f"/api/{space}/match", json=req)
        assert resp.status_code == 200, resp.get_json()
        page = resp.get_json()
        pages.append(page)
        cursor = page["next_cursor"]
        if not cursor:
            return pages
        if between is not None:
            between(len(pages), page)


def _v2_rank(vectors):
    return lambda b, n: stored_first(vectors[b])


def _v1_rank(vectors, qn):
    # d = sqrt(qn² + n² - 2·qn·n·cos), cos = the stored first component (query = qn·e0)
    def rank(b, n):
        cos = stored_first(vectors[b])
        return -math.sqrt(max(0.0, qn * qn + n * n - 2.0 * qn * n * cos))
    return rank


def _separated_pool(vectors, norms, qn, gap=1e-4):
    """Pool indices whose v1 distances (for each norm) are all far apart: no accidental near-ties."""
    taken: list[float] = []
    keep = []
    for b in range(len(vectors)):
        ds = [_v1_rank(vectors, qn)(b, n) for n in norms]
        if all(abs(d - t) > gap for d in ds for t in taken) and all(
            abs(a - c) > gap for i, a in enumerate(ds) for c in ds[i + 1:]
        ):
            taken.extend(ds)
            keep.append(vectors[b])
    return keep


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_v2_top_k_and_pages_equal_reference(client, seed, first_pass):
    rng = random.Random(seed)
    vectors = pool(DIM, 40, seed)
    ev = random_event(rng, 120, len(vectors))
    event_id = f"rank-v2-{seed}"
    _ingest(client, "v2", event_id, ev, vectors)
    q = _unit_list(np.eye(DIM)[0])
    for threshold in (0.3, -0.5):
        ref = reference(ev, _v2_rank(vectors), threshold)
        assert len(ref) > 20
        for k in (1, 3, 10, 17, len(ref) + 5):
            body = client.post("/api/v2/match", json={"event_id": event_id, "user_embedding": q,
                                                       "threshold": threshold, "top_k": k}).get_json()
            assert [m["photo_id"] for m in body["matches"]] == [r[1] for r in ref[:k]], (threshold, k)
            assert [m["score"] for m in body["matches"]] == [round(r[0], 4) for r in ref[:k]]
            assert body["search"] == "exact" and body["total"] is None
        for size in (1, 7, 50):
            pages = _pages(client, "v2", {"event_id": event_id, "user_embedding": q, "threshold": threshold}, size)
            got = [m["photo_id"] for p in pages for m in p["matches"]]
            assert got == [r[1] for r in ref], (threshold, size)
            assert all(p["total"] == len(ref) for p in pages)
            assert all(len(p["matches"]) == size for p in pages[:-1])
    _first_pass_ran(client, first_pass)


def test_v2_paging_stays_stable_while_photos_are_added(client):
    rng = random.Random(11)
    vectors = pool(DIM, 30, 11)
    ev = random_event(rng, 80, len(vectors))
    later = random_event(rng, 60, len(vectors))
    later.photos = {p: f for p, f in later.photos.items() if p not in ev.photos}
    event_id = "rank-v2-adds"
    _ingest(client, "v2", event_id, ev, vectors)
    q = _unit_list(np.eye(DIM)[0])
    served: list[str] = []
    state = Event(dict(ev.photos))
    batches = [list(later.photos)[i::4] for i in range(4)]

    def between(page_no, page):
        served.extend(m["photo_id"] for m in page["matches"])
        if page_no <= len(batches):  # new photos, some better and some worse than the cursor
            batch = batches[page_no - 1]
            _ingest(client, "v2", event_id, later, vectors, only=set(batch))
            state.photos.update({p: later.photos[p] for p in batch})
        last = page["matches"][-1]
        expected_next = after(reference(state, _v2_rank(vectors), 0.0), (last_rank(last), last["photo_id"]))
        check.append((page_no, [r[1] for r in expected_next]))

    def last_rank(row):
        ref = {r[1]: r[0] for r in reference(state, _v2_rank(vectors), 0.0)}
        return ref[row["photo_id"]]

    check: list[tuple[int, list[str]]] = []
    pages = _pages(client, "v2", {"event_id": event_id, "user_embedding": q, "threshold": 0.0}, 9, between)
    got_pages = [[m["photo_id"] for m in p["matches"]] for p in pages]
    for page_no, expected in check:  # each page continues exactly after the previous one's last row
        assert got_pages[page_no] == expected[:9], page_no
    flat = [p for page in got_pages for p in page]
    assert len(flat) == len(set(flat)), "no photo is served twice"
    assert any(p in later.photos for p in flat), "photos added below the cursor show up"
    assert pages[-1]["total"] == len(reference(state, _v2_rank(vectors), 0.0))


@pytest.mark.parametrize("seed", [4, 5])
def test_v1_raw_distance_ranking_equals_reference(client, seed, first_pass):
    rng = random.Random(seed)
    qn, norms = 0.9, (0.8, 1.0, 1.25)
    vectors = _separated_pool(pool(DIM, 40, seed, lo=0.2, hi=0.99), norms, qn)
    assert len(vectors) >= 15
    ev = random_event(rng, 90, len(vectors), norms=norms)
    event_id = f"rank-v1-{seed}"
    _ingest(client, "v1", event_id, ev, vectors)
    descriptor = _unit_list(np.eye(DIM)[0] * qn)
    for tolerance in (0.6, 1.1):
        ref = reference(ev, _v1_rank(vectors, qn), -tolerance)
        assert ref
        body = client.post("/api/v1/match", json={"event_id": event_id, "descriptor": descriptor,
                                                   "tolerance": tolerance, "top_k": 12}).get_json()
        assert [m["photo_id"] for m in body["matches"]] == [r[1] for r in ref[:12]]
        assert [m["distance"] for m in body["matches"]] == [round(-r[0], 4) for r in ref[:12]]
        pages = _pages(client, "v1", {"event_id": event_id, "descriptor": descriptor, "tolerance": tolerance}, 5)
        assert [m["photo_id"] for p in pages for m in p["matches"]] == [r[1] for r in ref]
        assert pages[0]["total"] == len(ref)
    _first_pass_ran(client, first_pass)


def test_several_selfies_rank_like_their_mean(client):
    rng = random.Random(8)
    vectors = pool(DIM, 30, 8)
    ev = random_event(rng, 70, len(vectors))
    _ingest(client, "v2", "rank-multi", ev, vectors)
    eps = 0.05
    a, b = np.eye(DIM)[0].copy(), np.eye(DIM)[0].copy()
    a[1], b[1] = eps, -eps  # their mean points exactly along e0
    ref = reference(ev, _v2_rank(vectors), 0.2)
    body = {"event_id": "rank-multi", "embeddings": [_unit_list(a), _unit_list(b)], "threshold": 0.2}
    pages = _pages(client, "v2", body, 6)
    assert [m["photo_id"] for p in pages for m in p["matches"]] == [r[1] for r in ref]
    assert pages[0]["combine"] == "mean" and pages[0]["queries"] == 2

    rng = random.Random(9)
    qn, norms = 0.9, (0.8, 1.2)
    v1_vectors = _separated_pool(pool(DIM, 30, 9, lo=0.3, hi=0.99), norms, qn)
    ev1 = random_event(rng, 50, len(v1_vectors), norms=norms)
    _ingest(client, "v1", "rank-multi", ev1, v1_vectors)
    c, d = np.eye(DIM)[0] * qn, np.eye(DIM)[0] * qn
    c[2], d[2] = 0.1, -0.1
    ref1 = reference(ev1, _v1_rank(v1_vectors, qn), -0.8)
    body1 = {"event_id": "rank-multi", "descriptors": [_unit_list(c), _unit_list(d)], "tolerance": 0.8}
    pages1 = _pages(client, "v1", body1, 4)
    assert [m["photo_id"] for p in pages1 for m in p["matches"]] == [r[1] for r in ref1]


# --------------------------------------------------------------------------- store level
V2 = Space("v2", "insightface", "test", 32)


def _put(store: FaceStore, event_id: str, ev: Event, vectors) -> None:
    store.put_photos(event_id, V2, [
        (pid, [FaceRecord(vectors[b] * n, (float(i), 1.0, float(i) + 10, 11.0), 0.9, n) for i, (b, n) in enumerate(faces)],
         f"https://example.com/{pid}.jpg")
        for pid, faces in ev.photos.items()
    ])


def _all(store: FaceStore, event_id: str, min_rank: float, size: int):
    rows, key = [], None
    while True:
        page = store.match(event_id, V2, np.eye(32)[0], RankSpec(min_rank), limit=size, after=key)
        rows.extend(page.rows)
        if not page.more:
            return rows, page
        key = (page.rows[-1].rank, page.rows[-1].photo_id)


def test_store_best_face_bbox_url_and_deletes_follow_the_reference(tmp_path):
    rng = random.Random(21)
    vectors = pool(32, 25, 21)
    ev = random_event(rng, 150, len(vectors), max_faces=12)
    store = FaceStore(tmp_path / "data", snapshot_min_faces=50)
    try:
        _put(store, "ev", ev, vectors)
        rows, page = _all(store, "ev", 0.1, 11)
        ref = reference(ev, _v2_rank(vectors), 0.1)
        assert [(r.photo_id, r.bbox[0], r.source_url) for r in rows] == [
            (pid, float(i), f"https://example.com/{pid}.jpg") for _, pid, i in ref]
        assert page.total == len(ref) and page.search == "exact"
        # deletes and re-puts between queries, then a fresh process view from the snapshot
        gone = [r[1] for r in ref[::3]]
        for pid in gone:
            store.delete_photo("ev", pid)
            del ev.photos[pid]
        moved = list(ev.photos)[:10]
        for pid in moved:
            ev.photos[pid] = list(reversed(ev.photos[pid]))
        _put(store, "ev", Event({p: ev.photos[p] for p in moved}), vectors)
        rows, _ = _all(store, "ev", 0.1, 11)
        ref = reference(ev, _v2_rank(vectors), 0.1)
        assert [(r.photo_id, r.bbox[0]) for r in rows] == [(pid, float(i)) for _, pid, i in ref]
        store.write_snapshot("ev", "v2")
        reopened = FaceStore(tmp_path / "data", snapshot_min_faces=50)
        try:
            rows2, _ = _all(reopened, "ev", 0.1, 11)
            assert reopened.stats()["counters"].get("snapshot_loads") == 1
            assert [(r.photo_id, r.bbox[0]) for r in rows2] == [(pid, float(i)) for _, pid, i in ref]
        finally:
            reopened.close()
    finally:
        store.close()


def test_store_ranks_a_few_qualifying_faces_like_the_reference(tmp_path):
    """At a selfie's real threshold only a few faces pass: the store ranks those alone (no pass
    over every photo). Same rows, order, best faces, ties and total as the brute force,
    before and after deletes."""
    rng = random.Random(33)
    vectors = pool(32, 60, 33)
    ev = random_event(rng, 300, len(vectors), max_faces=10)
    store = FaceStore(tmp_path / "data")
    try:
        _put(store, "ev", ev, vectors)
        n_faces = sum(len(f) for f in ev.photos.values())
        threshold = 0.85
        passing = sum(1 for faces in ev.photos.values() for b, _ in faces if stored_first(vectors[b]) >= threshold)
        assert 0 < passing * 8 < n_faces  # the few-faces branch, and something to rank
        for _round in range(2):
            ref = reference(ev, _v2_rank(vectors), threshold)
            assert len(ref) >= 10
            rows, page = _all(store, "ev", threshold, 4)
            assert [(r.photo_id, r.bbox[0], round(r.rank, 6)) for r in rows] == [
                (pid, float(i), round(rank, 6)) for rank, pid, i in ref]
            assert page.total == len(ref)
            top = store.match("ev", V2, np.eye(32)[0], RankSpec(threshold), limit=7)
            assert [r.photo_id for r in top.rows] == [r[1] for r in ref[:7]]
            for pid in [r[1] for r in ref[::2]]:  # then delete every other matching photo
                store.delete_photo("ev", pid)
                del ev.photos[pid]
    finally:
        store.close()
