"""FaceStore behaviour in one process: writes, exact search, deletes, validation, threads, fork."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from flask_backend.errors import ApiError
from flask_backend.store import FaceRecord, FaceStore, Hit, PhotoState, Space, validate_event_id, validate_photo_id
from flask_backend.store.index import FlatIndex, get_faiss

REPO = Path(__file__).resolve().parent.parent
V2 = Space("v2", "insightface", "det500m_mbf128", 16)
V1 = Space("v1", "dlib", "dlib_resnet_v1", 8)


def unit(seed: int, dim: int = 16) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def face(seed: int, dim: int = 16, **kw) -> FaceRecord:
    return FaceRecord(embedding=unit(seed, dim), bbox=kw.get("bbox", (1.0, 2.0, 30.0, 40.0)),
                      det_score=kw.get("det_score", 0.9), norm=kw.get("norm", 1.0))


@pytest.fixture()
def store(tmp_path: Path, store_backend):
    """Every test taking ``store`` runs on SQLite and on PostgreSQL (tests/pg_fixtures.py)."""
    s = store_backend.open(tmp_path / "data")
    yield s
    s.close()


def api_error(fn, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    return info.value


def brute(vectors: dict[int, np.ndarray], q: np.ndarray) -> list[tuple[int, float]]:
    ids = np.array(sorted(vectors))
    mat = np.stack([vectors[i] for i in ids])
    s = mat @ (q / np.linalg.norm(q)).astype(np.float32)
    order = np.lexsort((ids, -s))
    return [(int(ids[i]), float(s[i])) for i in order]


# --------------------------------------------------------------------------- basics
def test_put_search_roundtrip(store: FaceStore):
    n = store.put_photo("ev1", "p1", V2, [face(1, bbox=(5, 6, 7, 8), det_score=0.75, norm=3.5), face(2)],
                        source_url="https://example.com/p1.jpg")
    assert n == 2
    hits = store.search("ev1", V2, unit(1), limit=1)
    assert len(hits) == 1 and isinstance(hits[0], Hit)
    h = hits[0]
    assert h.photo_id == "p1" and h.score == pytest.approx(1.0, abs=1e-6)
    assert h.bbox == (5.0, 6.0, 7.0, 8.0) and h.det_score == pytest.approx(0.75) and h.norm == pytest.approx(3.5)
    state = store.photo_state("ev1", "p1", "v2")
    assert isinstance(state, PhotoState)
    assert (state.photo_id, state.source_url, state.faces, state.model_id) == (
        "p1", "https://example.com/p1.jpg", 2, "det500m_mbf128")
    assert state.ingested_at > 1e9
    assert store.photo_state("ev1", "p1", "v1") is None
    assert store.photo_state("ev1", "nope", "v2") is None


def test_store_normalises_embeddings(store: FaceStore):
    raw = unit(5) * 7.0
    store.put_photo("ev", "p", V2, [FaceRecord(raw, (0, 0, 1, 1), 0.9, norm=7.0)])
    (h,) = store.search("ev", V2, unit(5) * 0.01)
    assert h.score == pytest.approx(1.0, abs=1e-6) and h.norm == pytest.approx(7.0)


def test_search_is_exact_top_n_and_range(store: FaceStore):
    vectors: dict[str, list[np.ndarray]] = {}
    for p in range(60):
        fs = [face(1000 + p * 10 + j) for j in range(p % 4)]
        store.put_photo("ev", f"p{p:02d}", V2, fs)
        vectors[f"p{p:02d}"] = [f.embedding for f in fs]
    hits_all = store.search("ev", V2, unit(7))
    assert len(hits_all) == sum(len(v) for v in vectors.values())
    assert len({h.face_id for h in hits_all}) == len(hits_all)
    # which face id holds which vector: each stored vector finds itself first
    id_to_vec = {}
    for photo_id, vs in vectors.items():
        for v in vs:
            (best,) = store.search("ev", V2, v, limit=1)
            assert best.photo_id == photo_id and best.score == pytest.approx(1.0, abs=1e-6)
            id_to_vec[best.face_id] = v
    truth = brute(id_to_vec, unit(7))
    assert [i for i, _ in truth] == [h.face_id for h in hits_all]
    assert np.allclose([s for _, s in truth], [h.score for h in hits_all], atol=1e-6)
    for limit in (1, 5, 17):
        top = store.search("ev", V2, unit(7), limit=limit)
        assert [h.face_id for h in top] == [i for i, _ in truth[:limit]]
    for min_score in (-0.2, 0.0, 0.3):
        got = store.search("ev", V2, unit(7), min_score=min_score)
        assert [h.face_id for h in got] == [i for i, s in truth if s >= min_score]
        got = store.search("ev", V2, unit(7), min_score=min_score, limit=3)
        assert [h.face_id for h in got] == [i for i, s in truth if s >= min_score][:3]
    assert store.search("ev", V2, unit(7), limit=0) == []
    assert store.search("ev", V2, unit(7), min_score=1.01) == []


def test_large_limits_and_thresholds_agree_with_brute_force(tmp_path: Path, store_backend):
    store = store_backend.open(tmp_path / "data")
    rng = np.random.default_rng(11)
    vecs = rng.standard_normal((3000, 16))
    store.put_photos("ev", V2, [(f"p{i}", [FaceRecord(vecs[i], (0, 0, 1, 1), 0.9)], None) for i in range(3000)])
    q = rng.standard_normal(16)
    hits = store.search("ev", V2, q)
    ids = np.array([h.face_id for h in hits])
    scores = np.array([h.score for h in hits])
    assert len(ids) == 3000 and (np.diff(scores) <= 0).all()
    for min_score, limit in [(0.1, 2000), (0.1, 50), (-1.0, 2500), (0.5, 2999), (-0.3, 1500)]:
        got = store.search("ev", V2, q, min_score=min_score, limit=limit)
        want = ids[scores >= min_score][:limit]
        assert [h.face_id for h in got] == want.tolist(), (min_score, limit)
    store.close()


def test_cache_budget_evicts_least_recently_used(tmp_path: Path, store_backend):
    store = store_backend.open(tmp_path / "data", cache_max_bytes=50 * (16 * 4 + 9))
    for ev in ("a", "b", "c"):
        store.put_photos(ev, V2, [(f"{ev}{i}", [face(i)], None) for i in range(40)])
    for ev in ("a", "b", "c", "a"):
        assert len(store.search(ev, V2, unit(1))) == 40
    cached = {(c["event_id"], c["space"]) for c in store.stats()["cache"]}
    assert cached == {("a", "v2")}
    assert store.stats()["counters"]["evictions"] >= 2
    store.close()


def test_ties_are_broken_by_face_id(store: FaceStore):
    same = face(42)
    for p in range(10):
        store.put_photo("ev", f"dup{p}", V2, [same])
    store.put_photo("ev", "other", V2, [face(43)])
    all_hits = store.search("ev", V2, unit(42))
    dup_ids = [h.face_id for h in all_hits if h.photo_id.startswith("dup")]
    assert dup_ids == sorted(dup_ids) and len(dup_ids) == 10
    top = store.search("ev", V2, unit(42), limit=4)
    assert [h.face_id for h in top] == dup_ids[:4]


def test_replace_is_idempotent(store: FaceStore):
    store.put_photo("ev", "p", V2, [face(1), face(2), face(3)])
    store.search("ev", V2, unit(1))  # warm cache: the replace must be applied incrementally
    assert store.put_photo("ev", "p", V2, [face(4)]) == 1
    hits = store.search("ev", V2, unit(4))
    assert [h.photo_id for h in hits] == ["p"] and hits[0].score == pytest.approx(1.0, abs=1e-6)
    assert store.put_photo("ev", "p", V2, [face(4)]) == 1
    assert len(store.search("ev", V2, unit(4))) == 1
    summary = store.event_summary("ev")
    assert summary["spaces"]["v2"]["faces"] == 1 and summary["spaces"]["v2"]["photos"] == 1


def test_zero_face_photos_are_recorded(store: FaceStore):
    assert store.put_photo("ev", "empty", V2, []) == 0
    state = store.photo_state("ev", "empty", "v2")
    assert state is not None and state.faces == 0
    assert store.event_exists("ev")
    assert store.search("ev", V2, unit(1)) == []
    store.put_photo("ev", "full", V2, [face(1)])
    store.put_photo("ev", "full", V2, [])  # a re-ingest that now finds no face
    assert store.search("ev", V2, unit(1)) == []
    s = store.event_summary("ev")["spaces"]["v2"]
    assert (s["photos"], s["faces"], s["photos_without_faces"]) == (2, 0, 2)


def test_event_summary_and_listing(store: FaceStore):
    assert store.event_summary("nope") is None
    assert store.list_events() == []
    store.put_photo("ev", "a", V2, [face(1), face(2)], source_url="u-a")
    store.put_photo("ev", "b", V2, [])
    store.put_photo("ev", "a", V1, [face(3, dim=8)])
    store.put_photo("ev", "c", V1, [face(4, dim=8)])
    store.put_photo("zz", "a", V2, [face(5)])
    s = store.event_summary("ev")
    assert s["event_id"] == "ev" and s["photos"] == 3
    assert s["spaces"]["v2"] == {**s["spaces"]["v2"], "engine": "insightface", "model_id": "det500m_mbf128", "dim": 16,
                                 "photos": 2, "faces": 2, "photos_without_faces": 1}
    assert s["spaces"]["v1"]["photos"] == 2 and s["spaces"]["v1"]["faces"] == 2
    assert s["spaces"]["v1"]["updated_at"] > 1e9
    assert [p.photo_id for p in store.list_photos("ev", "v2")] == ["a", "b"]
    assert [(p.photo_id, p.model_id) for p in store.list_photos("ev")] == [
        ("a", "dlib_resnet_v1"), ("a", "det500m_mbf128"), ("b", "det500m_mbf128"), ("c", "dlib_resnet_v1")]
    assert store.list_photos("unknown") == []
    assert store.list_events() == ["ev", "zz"]
    assert store.space_of("ev", "v1") == V1 and store.space_of("zz", "v1") is None


# --------------------------------------------------------------------------- spaces
def test_space_mismatch_and_dimension_errors(store: FaceStore):
    store.put_photo("ev", "p", V2, [face(1)])
    other_model = Space("v2", "insightface", "buffalo_l", 16)
    e = api_error(store.put_photo, "ev", "q", other_model, [face(2)])
    assert (e.status, e.code) == (409, "space_mismatch")
    e = api_error(store.search, "ev", other_model, unit(1))
    assert (e.status, e.code) == (409, "space_mismatch")
    e = api_error(store.search, "ev", Space("v2", "dlib", "det500m_mbf128", 16), unit(1))
    assert (e.status, e.code) == (409, "space_mismatch")
    wider = Space("v2", "insightface", "det500m_mbf128", 32)
    e = api_error(store.put_photo, "ev", "q", wider, [face(2, dim=32)])
    assert (e.status, e.code) == (409, "space_mismatch")
    e = api_error(store.search, "ev", wider, unit(1, 32))
    assert (e.status, e.code) == (409, "space_mismatch")
    # a vector that does not fit the space it claims
    e = api_error(store.put_photo, "ev", "q", V2, [face(2, dim=32)])
    assert (e.status, e.code) == (400, "dimension_mismatch")
    e = api_error(store.search, "ev", V2, unit(1, 32))
    assert (e.status, e.code) == (400, "dimension_mismatch")
    # nothing was mixed in
    assert store.event_summary("ev")["spaces"]["v2"]["faces"] == 1


def test_unknown_event_and_not_indexed(store: FaceStore):
    e = api_error(store.search, "ghost", V2, unit(1))
    assert (e.status, e.code) == (404, "unknown_event")
    store.put_photo("ev", "p", V1, [face(1, dim=8)])
    e = api_error(store.search, "ev", V2, unit(1))
    assert (e.status, e.code) == (404, "not_indexed")
    assert store.event_exists("ev") and not store.event_exists("ghost")


def test_drop_space_then_reindex_with_new_model(store: FaceStore):
    store.put_photo("ev", "p1", V2, [face(1), face(2)])
    store.put_photo("ev", "p1", V1, [face(3, dim=8)])
    store.search("ev", V2, unit(1))
    assert store.drop_space("ev", "v2") == 2
    assert store.drop_space("ev", "v2") == 0
    assert store.space_of("ev", "v2") is None
    e = api_error(store.search, "ev", V2, unit(1))
    assert e.code == "not_indexed"
    new = Space("v2", "insightface", "buffalo_l", 24)
    store.put_photo("ev", "p1", new, [face(9, dim=24)])
    (h,) = store.search("ev", new, unit(9, 24))
    assert h.photo_id == "p1" and h.score == pytest.approx(1.0, abs=1e-6)
    assert store.space_of("ev", "v1") == V1  # the other space is untouched


# --------------------------------------------------------------------------- deletes
def test_delete_photo_everywhere(store: FaceStore):
    store.put_photo("ev", "p1", V2, [face(1)])
    store.put_photo("ev", "p1", V1, [face(2, dim=8), face(3, dim=8)])
    store.put_photo("ev", "p2", V2, [face(4)])
    store.search("ev", V2, unit(1))
    assert store.delete_photo("ev", "p1") == {"v2": 1, "v1": 2}
    assert [h.photo_id for h in store.search("ev", V2, unit(1))] == ["p2"]
    assert store.search("ev", V1, unit(2, 8)) == []
    e = api_error(store.delete_photo, "ev", "p1")
    assert (e.status, e.code) == (404, "unknown_photo")
    e = api_error(store.delete_photo, "ghost", "p1")
    assert e.status == 404
    assert store.photo_state("ev", "p1", "v2") is None


def test_delete_event(store: FaceStore):
    store.put_photo("ev", "p1", V2, [face(1), face(2)])
    store.put_photo("ev", "p2", V1, [face(3, dim=8)])
    store.put_photo("keep", "p1", V2, [face(1)])
    store.search("ev", V2, unit(1))
    assert store.delete_event("ev") == {"v2": 2, "v1": 1}
    assert not store.event_exists("ev") and store.event_summary("ev") is None
    e = api_error(store.search, "ev", V2, unit(1))
    assert e.code == "unknown_event"
    e = api_error(store.delete_event, "ev")
    assert (e.status, e.code) == (404, "unknown_event")
    assert [h.photo_id for h in store.search("keep", V2, unit(1))] == ["p1"]
    # the event can start again from scratch
    store.put_photo("ev", "new", V2, [face(7)])
    assert [h.photo_id for h in store.search("ev", V2, unit(1))] == ["new"]


def test_delete_faces_for_forget_me(store: FaceStore):
    store.put_photo("ev", "group", V2, [face(1), face(2), face(3)])
    store.put_photo("ev", "solo", V2, [face(1)])
    hits = store.search("ev", V2, unit(1), min_score=0.99)
    assert sorted(h.photo_id for h in hits) == ["group", "solo"]
    assert store.delete_faces("ev", "v2", [h.face_id for h in hits] + [999999]) == 2
    assert store.search("ev", V2, unit(1), min_score=0.99) == []
    assert store.photo_state("ev", "group", "v2").faces == 2
    assert store.photo_state("ev", "solo", "v2").faces == 0
    s = store.event_summary("ev")["spaces"]["v2"]
    assert (s["faces"], s["photos"], s["photos_without_faces"]) == (2, 2, 1)
    assert store.delete_faces("ev", "v2", []) == 0
    assert store.delete_faces("ev", "v2", [hits[0].face_id]) == 0  # already gone
    e = api_error(store.delete_faces, "ev", "v1", [1])
    assert (e.status, e.code) == (404, "not_indexed")
    e = api_error(store.delete_faces, "ev", "v2", ["1"])
    assert e.status == 400


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad", ["", ".hidden", "..", "a/b", "a b", "é", "x" * 129, None, 5, "a\x00", "../etc"])
def test_invalid_event_ids(store: FaceStore, bad):
    e = api_error(validate_event_id, bad)
    assert (e.status, e.code) == (400, "invalid_event_id")
    e = api_error(store.put_photo, bad, "p", V2, [face(1)])
    assert e.code == "invalid_event_id"
    e = api_error(store.search, bad, V2, unit(1))
    assert e.code == "invalid_event_id"


@pytest.mark.parametrize("good", ["a", "A-b_c.d", "x" * 128, "2024.06.01-wedding", "a.."])
def test_valid_event_ids(good):
    assert validate_event_id(good) == good


@pytest.mark.parametrize("bad", ["", "   ", "\t\n", "a\x00b", "a\nb", "a\x7f", "x" * 513, None, 3, "\ud800"])
def test_invalid_photo_ids(store: FaceStore, bad):
    e = api_error(validate_photo_id, bad)
    assert (e.status, e.code) == (400, "invalid_photo_id")
    e = api_error(store.put_photo, "ev", bad, V2, [face(1)])
    assert e.code == "invalid_photo_id"


@pytest.mark.parametrize("good", ["p", "IMG_0001.JPG", "folder/photo 1.jpg", "фото", "x" * 512, " lead space"])
def test_valid_photo_ids(store: FaceStore, good):
    assert validate_photo_id(good) == good
    store.put_photo("ev", good, V2, [face(1)])
    assert store.photo_state("ev", good, "v2").photo_id == good


@pytest.mark.parametrize(
    "embedding, code",
    [
        (np.zeros(16), "invalid_embedding"),
        (np.full(16, np.nan), "invalid_embedding"),
        (np.r_[np.ones(15), np.inf], "invalid_embedding"),
        (np.array([]), "invalid_embedding"),
        (np.ones((2, 8)), "invalid_embedding"),
        (np.ones(15), "dimension_mismatch"),
        ("not a vector", "invalid_embedding"),
    ],
)
def test_invalid_vectors(store: FaceStore, embedding, code):
    e = api_error(store.put_photo, "ev", "p", V2, [FaceRecord(embedding, (0, 0, 1, 1), 0.9)])
    assert (e.status, e.code) == (400, code)
    store.put_photo("ev", "ok", V2, [face(1)])
    e = api_error(store.search, "ev", V2, embedding)
    assert (e.status, e.code) == (400, code)
    assert store.photo_state("ev", "p", "v2") is None


def test_invalid_faces_space_and_arguments(store: FaceStore):
    bad_faces = [
        FaceRecord(unit(1), (0, 0, 1), 0.9),
        FaceRecord(unit(1), (0, 0, 1, float("nan")), 0.9),
        FaceRecord(unit(1), (0, 0, 1, 1), float("inf")),
        FaceRecord(unit(1), (0, 0, 1, 1), 0.9, norm=0.0),
    ]
    for f in bad_faces:
        e = api_error(store.put_photo, "ev", "p", V2, [face(2), f])
        assert e.status == 400 and e.code == "invalid_face"
    assert store.event_exists("ev") is False  # nothing half-written
    e = api_error(store.put_photo, "ev", "p", Space("v3", "x", "y", 16), [face(1)])
    assert (e.status, e.code) == (400, "unknown_space")
    for space in (Space("v2", "", "y", 16), Space("v2", "x", "y", 0)):
        e = api_error(store.put_photo, "ev", "p", space, [face(1)])
        assert (e.status, e.code) == (400, "invalid_space")
    store.put_photo("ev", "p", V2, [face(1)])
    assert api_error(store.search, "ev", V2, unit(1), limit=-1).code == "invalid_limit"
    assert api_error(store.search, "ev", V2, unit(1), min_score=float("nan")).code == "invalid_min_score"
    assert api_error(store.photo_state, "ev", "p", "v9").code == "unknown_space"


# --------------------------------------------------------------------------- index internals
def test_flat_index_masking_and_compaction():
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((3000, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(10, 3010, dtype=np.int64)
    flat = FlatIndex(8)
    for start in range(0, 3000, 700):
        flat.add(ids[start : start + 700], vecs[start : start + 700])
    assert flat.add(ids[:5], vecs[:5]) == 0  # replayed ids are skipped
    gone = ids[::3]
    assert flat.remove(gone) == len(gone) and flat.remove(gone) == 0
    q = vecs[1:2]
    keep = np.ones(3000, bool)
    keep[::3] = False
    truth = vecs[keep] @ q[0]
    order = np.argsort(-truth, kind="stable")
    got_ids, got_scores = flat.search(q, limit=25)
    assert got_ids.tolist() == ids[keep][order[:25]].tolist()
    assert np.allclose(got_scores, truth[order[:25]], atol=1e-6)
    all_ids, _ = flat.search(q)
    assert sorted(all_ids.tolist()) == ids[keep].tolist()
    flat.compact()
    assert flat.n_dead == 0 and flat.n_total == keep.sum()
    assert np.array_equal(flat.vectors(), vecs[keep])
    again, _ = flat.search(q, limit=25)
    assert again.tolist() == got_ids.tolist()


# --------------------------------------------------------------------------- threads and fork
def test_many_threads_share_one_store(store: FaceStore):
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(40):
                store.put_photo("ev", f"t{t}-{i}", V2, [face(t * 1000 + i)])
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(60):
                hits = store.search("ev", V2, unit(1))
                assert len({h.face_id for h in hits}) == len(hits)
        except ApiError as exc:
            if exc.code != "unknown_event":
                errors.append(exc)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store.search("ev", V2, unit(1))) == 120


def test_importing_the_store_does_not_import_faiss():
    code = "import sys, flask_backend.store as s; s.FaceStore; print('faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_store_opened_before_fork_works_in_child(tmp_path: Path, store_backend):
    store = store_backend.open(tmp_path / "data")  # like a gunicorn master with preload_app
    store.put_photo("ev", "parent", V2, [face(1)])
    pid = os.fork()
    if pid == 0:  # child: must open its own database connections and faiss state
        code = 1
        try:
            store.put_photo("ev", "child", V2, [face(2)])
            got = {h.photo_id for h in store.search("ev", V2, unit(1))}
            code = 0 if got == {"parent", "child"} else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert {h.photo_id for h in store.search("ev", V2, unit(2))} == {"parent", "child"}
    store.close()


def test_database_settings(tmp_path: Path):
    store = FaceStore(tmp_path / "data")
    store.put_photo("ev", "p", V2, [face(1)])
    conn = store._db.conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    store.close()
    check = sqlite3.connect(tmp_path / "data" / "facestore.sqlite3")
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()


def test_photo_states_in_one_query(store: FaceStore):
    store.put_photo("ev", "a", V2, [face(1)], source_url="https://cdn.example.com/a.jpg")
    store.put_photo("ev", "b 'quoted\"", V2, [], source_url=None)
    states = store.photo_states("ev", "v2", ["a", "b 'quoted\"", "missing"])
    assert set(states) == {"a", "b 'quoted\""}
    assert states["a"] == store.photo_state("ev", "a", "v2")
    assert states["a"].source_url == "https://cdn.example.com/a.jpg" and states["b 'quoted\""].faces == 0
    assert store.photo_states("ev", "v2", []) == {}


def test_totals_agree_with_event_summaries(store: FaceStore):
    store.put_photo("e1", "a", V2, [face(1), face(2)])
    store.put_photo("e1", "b", V2, [])
    store.put_photo("e2", "c", V2, [face(3)])
    store.delete_photo("e1", "a")
    totals = store.totals()
    assert totals == {"v2": {"events": 2, "photos": 2, "faces": 1}}
    summed = {"events": 0, "photos": 0, "faces": 0}
    for ev in store.list_events():
        info = store.event_summary(ev)["spaces"]["v2"]
        summed["events"] += 1
        summed["photos"] += info["photos"]
        summed["faces"] += info["faces"]
    assert summed == totals["v2"]


def test_postgres_schema_is_versioned_and_migrated_once_by_many_hosts(postgres_cluster, tmp_path: Path):
    """Eight stores (hosts) starting at once on an empty database: the advisory lock lets one
    create the schema, the others find it; every one can write and all see the same truth."""
    import psycopg

    from flask_backend.store.postgres import SCHEMA_VERSION

    url = postgres_cluster.new_database()
    stores: list[FaceStore] = []
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            s = FaceStore(tmp_path / f"host{i}", store_url=url)
            s.put_photo("ev", f"p{i}", V2, [face(i)])
            stores.append(s)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(len(s.search("ev", V2, unit(0))) == 8 for s in stores)
    with psycopg.connect(url) as c:
        assert c.execute("SELECT version FROM facematch_schema").fetchall() == [(SCHEMA_VERSION,)]
    for s in stores:
        s.close()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every OpenMP team has one thread anyway")
def test_every_search_thread_runs_faiss_with_the_store_thread_count(store: FaceStore):
    """OpenMP keeps its thread count per thread: a gunicorn request thread that never pinned it
    would run every parallel faiss kernel on all cores, beside the other request threads."""
    rng = np.random.default_rng(3)
    store.put_photo("ev", "p1", V2, [FaceRecord(rng.standard_normal(V2.dim), (0, 0, 10, 10), 0.9)])
    seen = []

    def search() -> None:
        store.search("ev", V2, rng.standard_normal(V2.dim), min_score=-1.0)
        seen.append(get_faiss().omp_get_max_threads())

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [store.faiss_threads] * 3 == [1] * 3
