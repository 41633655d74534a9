"""Ingest / match / events over HTTP: idempotency, deletes, forget-me, space mismatch,
paging, several selfies, API keys and bad input."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from flask_backend import create_app
from tests.conftest import make_settings
from tests.erasure_fixtures import assert_gone, files_holding, stored_blobs

DIM = 128


def _unit(v) -> list[float]:
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v)).tolist()


def _upload(client, path, files, **fields):
    form = dict(fields)
    form["image"] = [(io.BytesIO(p.read_bytes()), p.name) for p in files]
    return client.post(path, data=form, content_type="multipart/form-data")


def _error(resp, status, code=None):
    assert resp.status_code == status, resp.get_data(as_text=True)[:400]
    err = resp.get_json()["error"]
    if code:
        assert err["code"] == code, err
    return err


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store-api")


@pytest.fixture(scope="module")
def app(data_dir, pack_dir):
    return create_app(make_settings(data_dir, pack_dir))


def test_ingest_by_embedding_then_match_by_embedding(client):
    rng = np.random.default_rng(1)
    me = rng.normal(size=DIM)
    other = rng.normal(size=DIM)
    for i in range(3):
        near = me + rng.normal(scale=0.2, size=DIM)
        resp = client.post("/api/v2/ingest", json={"event_id": "emb", "photo_id": f"me{i}", "embedding": _unit(near)})
        assert resp.status_code == 200 and resp.get_json()["faces_indexed"] == 1
    client.post("/api/v2/ingest", json={"event_id": "emb", "photo_id": "other", "embeddings": [_unit(other)]})
    body = client.post("/api/v2/match", json={"event_id": "emb", "user_embedding": _unit(me)}).get_json()
    scores = [m["score"] for m in body["matches"]]
    assert scores == sorted(scores, reverse=True)
    assert {m["photo_id"] for m in body["matches"]} == {"me0", "me1", "me2"}
    assert body["threshold"] == 0.40 and body["model"] == "det500m_mbf128"


def test_reingest_replaces_faces(client, faces_dir):
    two = faces_dir / "group__two_people.jpg"
    one = faces_dir / "biden__1.jpg"
    assert _upload(client, "/api/v2/ingest", [two], event_id="idem", photo_id="p").get_json()["faces_indexed"] == 2
    assert _upload(client, "/api/v2/ingest", [two], event_id="idem", photo_id="p").get_json()["faces_indexed"] == 2
    summary = client.get("/api/v2/events/idem").get_json()
    assert summary["photos"] == 1 and summary["spaces"]["v2"]["faces"] == 2
    assert _upload(client, "/api/v2/ingest", [one], event_id="idem", photo_id="p").get_json()["faces_indexed"] == 1
    summary = client.get("/api/v2/events/idem").get_json()
    assert summary["spaces"]["v2"]["faces"] == 1 and summary["spaces"]["v1"]["faces"] == 1


def test_photo_without_a_face_is_recorded(client):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (90, 160, 200)).save(buf, "PNG")
    resp = client.post(
        "/api/v2/ingest",
        data={"event_id": "noface", "photo_id": "sky", "image": (io.BytesIO(buf.getvalue()), "sky.png")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200 and resp.get_json()["faces_indexed"] == 0
    info = client.get("/api/v2/events/noface").get_json()["spaces"]["v2"]
    assert info["photos"] == 1 and info["faces"] == 0


def test_delete_photo_and_event_remove_embeddings_for_good(client, faces_dir, data_dir, app):
    photo = faces_dir / "obama__3.jpg"
    resp = _upload(client, "/api/v2/ingest", [photo], event_id="del", photo_id="o3")
    assert resp.status_code == 200
    _upload(client, "/api/v2/ingest", [faces_dir / "biden__2.jpg"], event_id="del", photo_id="b2")
    selfie = faces_dir / "obama__1.jpg"
    hits = _upload(client, "/api/v2/match", [selfie], event_id="del").get_json()["matches"]
    assert [m["photo_id"] for m in hits] == ["o3"]
    # A 2-photo event gets no snapshot by itself (snapshot_min_faces): write them, so that
    # the delete has snapshot files to clean too.
    store = app.extensions["facematch"].store
    assert store.write_snapshot("del", "v2") and store.write_snapshot("del", "v1")
    target, control = stored_blobs(data_dir, "del", "o3"), stored_blobs(data_dir, "del", "b2")
    assert len(target) == 2  # its v1 and v2 face
    for blob in target:
        assert any(f.endswith("del.faiss") for f in files_holding(data_dir, blob))
    resp = client.delete("/api/v2/events/del/photos/o3")
    assert resp.status_code == 200 and resp.get_json()["faces_removed"] == {"v1": 1, "v2": 1}
    assert_gone(data_dir, target)  # not in the database, its -wal, nor any snapshot
    for blob in control:  # what the scan can see
        assert "facestore.sqlite3" in files_holding(data_dir, blob)
    assert _upload(client, "/api/v2/match", [selfie], event_id="del").get_json()["matches"] == []
    _error(client.delete("/api/v2/events/del/photos/o3"), 404)
    assert client.delete("/api/v2/events/del").status_code == 200
    assert_gone(data_dir, control)
    _error(client.get("/api/v2/events/del"), 404, "unknown_event")
    _error(_upload(client, "/api/v2/match", [selfie], event_id="del"), 404, "unknown_event")
    assert not any(p.name.startswith("del.") for p in data_dir.rglob("*"))


def test_forget_me_erases_the_removed_faces_bytes(client, faces_dir, data_dir):
    for f in ("obama__1.jpg", "biden__1.jpg"):
        assert _upload(client, "/api/v2/ingest", [faces_dir / f], event_id="forget-bytes", photo_id=f).status_code == 200
    target, control = stored_blobs(data_dir, "forget-bytes", "obama__1.jpg"), stored_blobs(data_dir, "forget-bytes", "biden__1.jpg")
    resp = _upload(client, "/api/v2/events/forget-bytes/forget", [faces_dir / "obama__3.jpg"])
    assert resp.status_code == 200 and resp.get_json()["faces_removed"] == {"v1": 1, "v2": 1}, resp.get_json()
    assert_gone(data_dir, target)
    for blob in control:
        assert "facestore.sqlite3" in files_holding(data_dir, blob)


def test_forget_me_removes_only_that_person(client, faces_dir):
    files = ["obama__1.jpg", "obama__2.jpg", "biden__1.jpg", "group__two_people.jpg"]
    for f in files:
        assert _upload(client, "/api/v2/ingest", [faces_dir / f], event_id="forget", photo_id=f).status_code == 200
    resp = _upload(client, "/api/v2/events/forget/forget", [faces_dir / "obama__3.jpg"])
    body = resp.get_json()
    assert resp.status_code == 200, body
    removed_v2 = {r["photo_id"] for r in body["removed"]["v2"]}
    assert removed_v2 == {"obama__1.jpg", "obama__2.jpg", "group__two_people.jpg"}
    assert body["faces_removed"]["v2"] == 3 and "v1" in body["faces_removed"]
    after = _upload(client, "/api/v2/match", [faces_dir / "obama__3.jpg"], event_id="forget", top_k="null").get_json()
    assert after["matches"] == []
    biden = _upload(client, "/api/v2/match", [faces_dir / "biden__2.jpg"], event_id="forget").get_json()
    assert {m["photo_id"] for m in biden["matches"]} == {"biden__1.jpg", "group__two_people.jpg"}


def _scores(body, key="score") -> dict[str, float]:
    return {m["photo_id"]: m[key] for m in body["matches"]}


def test_several_selfies_are_combined(client, faces_dir):
    for f in ("kit_harington__1.jpeg", "kit_harington__2.jpeg", "rose_leslie__1.jpg", "group__kit_with_rose.jpg"):
        _upload(client, "/api/v2/ingest", [faces_dir / f], event_id="multi", photo_id=f)
    kit = [faces_dir / "kit_harington__3.jpg", faces_dir / "kit_harington__1.jpeg"]
    body = _upload(client, "/api/v2/match", kit, event_id="multi", threshold="0.1").get_json()
    assert body["queries"] == 2 and body["combine"] == "mean"
    assert {"kit_harington__2.jpeg", "group__kit_with_rose.jpg"} <= {m["photo_id"] for m in body["matches"]}
    # the scores are those of the normalised mean of both selfies' unit embeddings ...
    units = [np.asarray(_upload(client, "/api/v2/embed", [f]).get_json()["embedding"]) for f in kit]
    mean = _unit(sum(u / np.linalg.norm(u) for u in units))
    by_mean = client.post("/api/v2/match", json={"event_id": "multi", "user_embedding": mean, "threshold": 0.1}).get_json()
    assert _scores(body).keys() == _scores(by_mean).keys()
    for photo, score in _scores(by_mean).items():
        assert _scores(body)[photo] == pytest.approx(score, abs=2e-4), photo
    # ... not those of either selfie alone
    for unit in units:
        alone = client.post("/api/v2/match", json={"event_id": "multi", "user_embedding": _unit(unit),
                                                   "threshold": 0.1}).get_json()
        assert max(abs(_scores(alone)[p] - s) for p, s in _scores(body).items() if p in _scores(alone)) > 0.01
    at_default = _upload(client, "/api/v2/match", kit, event_id="multi").get_json()
    assert "rose_leslie__1.jpg" not in {m["photo_id"] for m in at_default["matches"]}
    mixed = [faces_dir / "kit_harington__3.jpg", faces_dir / "rose_leslie__2.jpg"]
    _error(_upload(client, "/api/v2/match", mixed, event_id="multi"), 400, "selfies_disagree")


def test_several_v1_descriptors_are_averaged_raw(client, faces_dir):
    for f in ("obama__1.jpg", "obama__2.jpg", "biden__1.jpg"):
        _upload(client, "/api/v1/ingest", [faces_dir / f], event_id="legacy-multi", photo_id=f)
    d3, d4 = (np.asarray(_upload(client, "/api/face/analyze", [faces_dir / f]).get_json()["descriptor"])
              for f in ("obama__3.jpg", "obama__4.jpg"))
    both = client.post("/api/v1/match", json={"event_id": "legacy-multi", "descriptors": [d3.tolist(), d4.tolist()],
                                              "tolerance": 0.9}).get_json()
    assert both["queries"] == 2
    mean = (d3 + d4) / 2  # the raw mean: v1 keeps Euclidean distances on raw descriptors
    by_mean = client.post("/api/v1/match", json={"event_id": "legacy-multi", "descriptor": mean.tolist(),
                                                 "tolerance": 0.9}).get_json()
    assert _scores(both, "distance").keys() == _scores(by_mean, "distance").keys() == {
        "obama__1.jpg", "obama__2.jpg", "biden__1.jpg"}
    for photo, d in _scores(by_mean, "distance").items():
        assert _scores(both, "distance")[photo] == pytest.approx(d, abs=2e-4), photo
    alone = client.post("/api/v1/match", json={"event_id": "legacy-multi", "descriptor": d3.tolist(),
                                               "tolerance": 0.9}).get_json()
    assert max(abs(_scores(alone, "distance")[p] - d) for p, d in _scores(both, "distance").items()) > 0.01
    # the same through several uploaded selfies
    uploaded = _upload(client, "/api/v1/match", [faces_dir / "obama__3.jpg", faces_dir / "obama__4.jpg"],
                       event_id="legacy-multi", tolerance="0.9").get_json()
    assert _scores(uploaded, "distance") == pytest.approx(_scores(both, "distance"), abs=2e-4)
    biden = np.asarray(_upload(client, "/api/face/analyze", [faces_dir / "biden__2.jpg"]).get_json()["descriptor"])
    _error(client.post("/api/v1/match", json={"event_id": "legacy-multi", "descriptors": [d3.tolist(), biden.tolist()]}),
           400, "selfies_disagree")
    _error(_upload(client, "/api/v1/match", [faces_dir / "obama__3.jpg", faces_dir / "biden__2.jpg"],
                   event_id="legacy-multi"), 400, "selfies_disagree")


def test_all_my_photos_paging(client):
    rng = np.random.default_rng(7)
    me = rng.normal(size=DIM)
    for i in range(25):
        vec = _unit(me + rng.normal(scale=0.3, size=DIM))
        client.post("/api/v2/ingest", json={"event_id": "paging", "photo_id": f"p{i:02d}", "embedding": vec})
    seen, scores, cursor, pages = [], [], None, 0
    while True:
        req = {"event_id": "paging", "user_embedding": _unit(me), "top_k": None, "page_size": 10}
        if cursor:
            req["cursor"] = cursor
        body = client.post("/api/v2/match", json=req).get_json()
        assert body["mode"] == "all" and body["total"] == 25
        seen += [m["photo_id"] for m in body["matches"]]
        scores += [m["score"] for m in body["matches"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert pages == 3 and len(seen) == 25 == len(set(seen))
    assert scores == sorted(scores, reverse=True)
    _error(client.post("/api/v2/match", json={"event_id": "paging", "user_embedding": _unit(me), "mode": "all",
                                               "cursor": "garbage!"}), 400, "invalid_cursor")
    top = client.post("/api/v2/match", json={"event_id": "paging", "user_embedding": _unit(me), "top_k": 5}).get_json()
    assert len(top["matches"]) == 5 and top["next_cursor"] is None


def test_paging_is_stable_while_photos_are_added(client):
    """Page 1, then photos ranked above, below and tied with the cursor arrive (and photos are
    re-put), then the rest: nothing twice, nothing that existed at page 1 skipped."""
    rng = np.random.default_rng(11)
    me = rng.normal(size=DIM)
    vecs = {f"p{i:02d}": _unit(me + rng.normal(scale=0.3, size=DIM)) for i in range(25)}

    def put(photo_id, vec):
        resp = client.post("/api/v2/ingest", json={"event_id": "paging-live", "photo_id": photo_id, "embedding": vec})
        assert resp.status_code == 200

    def page(cursor=None):
        req = {"event_id": "paging-live", "user_embedding": _unit(me), "top_k": None, "page_size": 10}
        return client.post("/api/v2/match", json={**req, **({"cursor": cursor} if cursor else {})}).get_json()

    for pid, vec in vecs.items():
        put(pid, vec)
    first = page()
    shown = [m["photo_id"] for m in first["matches"]]
    last = first["matches"][-1]
    cursor_id, cursor_score = last["photo_id"], last["score"]
    rest_before = [pid for pid in vecs if pid not in shown]
    put("new-above", _unit(me))  # ranks first
    put("zz-tied-after", vecs[cursor_id])  # same score as the cursor, sorts after it
    put("a-tied-before", vecs[cursor_id])  # same score, sorts before it: already "passed"
    below = min(rest_before, key=lambda p: float(np.dot(vecs[p], _unit(me))))
    put("new-below", vecs[below])  # ranks with the last photo
    put(shown[0], vecs[shown[0]])  # re-puts of a shown photo and of one still to come
    put(rest_before[0], vecs[rest_before[0]])
    later, cursor = [], first["next_cursor"]
    while cursor:
        body = page(cursor)
        later += body["matches"]
        cursor = body["next_cursor"]
    later_ids = [m["photo_id"] for m in later]
    assert len(later_ids) == len(set(later_ids)) and not set(later_ids) & set(shown)  # nothing twice
    assert set(rest_before) <= set(later_ids)  # nothing skipped
    assert {"zz-tied-after", "new-below"} <= set(later_ids)  # arrivals after the cursor are served
    assert "new-above" not in later_ids and "a-tied-before" not in later_ids
    assert all(m["score"] <= cursor_score for m in later)
    assert [m["score"] for m in later] == sorted((m["score"] for m in later), reverse=True)


def test_v1_match_keeps_face_recognition_semantics(client, faces_dir, app):
    for f in ("obama__1.jpg", "obama__2.jpg", "biden__1.jpg"):
        _upload(client, "/api/v1/ingest", [faces_dir / f], event_id="legacy", photo_id=f)
    descriptor = _upload(client, "/api/face/analyze", [faces_dir / "obama__3.jpg"]).get_json()["descriptor"]
    body = client.post("/api/v1/match", json={"event_id": "legacy", "descriptor": descriptor}).get_json()
    assert {m["photo_id"] for m in body["matches"]} == {"obama__1.jpg", "obama__2.jpg"}
    assert body["tolerance"] == 0.6
    # distances are the raw Euclidean ones a face_recognition client would compute itself
    engine = app.extensions["facematch"].engines.get("v1")
    from flask_backend.imaging import decode_image

    raw = engine.detect(decode_image((faces_dir / "obama__1.jpg").read_bytes()), "ingest")[0].raw
    want = float(np.linalg.norm(np.asarray(descriptor) - raw))
    got = next(m["distance"] for m in body["matches"] if m["photo_id"] == "obama__1.jpg")
    assert abs(got - want) < 0.02
    tight = client.post("/api/v1/match", json={"event_id": "legacy", "descriptor": descriptor, "tolerance": 0.2})
    assert tight.get_json()["matches"] == []
    _error(client.post("/api/v1/ingest", json={"event_id": "legacy", "photo_id": "x", "descriptor": [0.1] * 127}),
           400, "dimension_mismatch")


def test_not_indexed_and_unknown_event(client):
    client.post("/api/v1/ingest", json={"event_id": "onlyv1", "photo_id": "a", "descriptor": _unit(np.ones(128))})
    _error(client.post("/api/v2/match", json={"event_id": "onlyv1", "user_embedding": _unit(np.ones(DIM))}),
           404, "not_indexed")
    _error(client.post("/api/v2/match", json={"event_id": "never-seen", "user_embedding": _unit(np.ones(DIM))}),
           404, "unknown_event")


def test_space_mismatch_after_pack_change(data_dir, pack_dir, tmp_path, client, faces_dir):
    client.post("/api/v2/ingest", json={"event_id": "stale", "photo_id": "a", "embedding": _unit(np.ones(DIM))})
    other = tmp_path / "other_pack"
    other.mkdir()
    for f in pack_dir.glob("*.onnx"):
        os.symlink(f, other / f.name)
    changed = create_app(make_settings(data_dir, other)).test_client()
    info = changed.get("/api/v2/events/stale").get_json()["spaces"]["v2"]
    assert info["stale"] is True and info["model"] == "det500m_mbf128"
    _error(changed.post("/api/v2/match", json={"event_id": "stale", "user_embedding": _unit(np.ones(DIM))}),
           409, "space_mismatch")
    _error(changed.post("/api/v2/ingest", json={"event_id": "stale", "photo_id": "b", "embedding": _unit(np.ones(DIM))}),
           409, "space_mismatch")
    # a photo goes to all its spaces or to none: the refused image left nothing in v1 either
    _error(_upload(changed, "/api/v2/ingest", [faces_dir / "biden__1.jpg"], event_id="stale", photo_id="c"),
           409, "space_mismatch")
    assert set(changed.get("/api/v2/events/stale").get_json()["spaces"]) == {"v2"}


@pytest.mark.parametrize(
    "body, code",
    [
        ({"event_id": "emb", "user_embedding": [0.1] * 64}, "dimension_mismatch"),
        ({"event_id": "emb", "user_embedding": []}, "invalid_embedding"),
        ({"event_id": "emb", "user_embedding": ["a"] * DIM}, "invalid_embedding"),
        ({"event_id": "emb", "user_embedding": [0.0] * DIM}, "invalid_embedding"),
        ({"event_id": "emb", "user_embedding": [0.1] * DIM, "top_k": 0}, "invalid_top_k"),
        ({"event_id": "emb", "user_embedding": [0.1] * DIM, "top_k": -1}, "invalid_top_k"),
        ({"event_id": "emb", "user_embedding": [0.1] * DIM, "top_k": 10**9}, "invalid_top_k"),
        ({"event_id": "emb", "user_embedding": [0.1] * DIM, "threshold": 1.5}, "invalid_threshold"),
        ({"event_id": "emb", "user_embedding": [0.1] * DIM, "threshold": -2}, "invalid_threshold"),
        ({"event_id": "../../etc", "user_embedding": [0.1] * DIM}, "invalid_event_id"),
        ({"event_id": "a" * 300, "user_embedding": [0.1] * DIM}, None),
        ({"user_embedding": [0.1] * DIM}, "missing_field"),
    ],
)
def test_bad_match_input_is_400(client, body, code):
    _error(client.post("/api/v2/match", json=body), 400, code)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
def test_nan_and_inf_vectors_are_400(client, literal):
    vec = ", ".join([literal] + ["0.1"] * (DIM - 1))
    raw = f'{{"event_id": "emb", "photo_id": "bad", "embedding": [{vec}]}}'
    _error(client.post("/api/v2/ingest", data=raw, content_type="application/json"), 400, "invalid_embedding")
    raw = f'{{"event_id": "emb", "user_embedding": [{vec}]}}'
    _error(client.post("/api/v2/match", data=raw, content_type="application/json"), 400, "invalid_embedding")


@pytest.mark.parametrize("photo_id", ["", " ", "a\x00b", "x" * 600])
def test_invalid_photo_ids(client, photo_id):
    resp = client.post("/api/v2/ingest", data=json.dumps({"event_id": "ids", "photo_id": photo_id,
                                                          "embedding": _unit(np.ones(DIM))}),
                       content_type="application/json")
    assert resp.status_code == 400


def test_write_endpoints_need_the_api_key(tmp_path, pack_dir):
    client = create_app(make_settings(tmp_path, pack_dir, api_keys=("k1", "k2"))).test_client()
    body = {"event_id": "keys", "photo_id": "a", "embedding": _unit(np.ones(DIM))}
    _error(client.post("/api/v2/ingest", json=body), 401, "unauthorized")
    _error(client.post("/api/v2/ingest", json=body, headers={"X-API-Key": "nope"}), 401, "unauthorized")
    assert client.post("/api/v2/ingest", json=body, headers={"X-API-Key": "k2"}).status_code == 200
    _error(client.delete("/api/v2/events/keys"), 401)
    _error(client.delete("/api/v2/events/keys/photos/a"), 401)
    assert client.delete("/api/v2/events/keys", headers={"X-API-Key": "k1"}).status_code == 200
    # reads stay open
    _error(client.post("/api/v2/match", json={"event_id": "keys", "user_embedding": body["embedding"]}), 404)


def test_ingest_spaces_setting_chooses_the_spaces_filled(tmp_path, pack_dir, faces_dir):
    client = create_app(make_settings(tmp_path, pack_dir, ingest_spaces=("v2",))).test_client()
    body = _upload(client, "/api/v2/ingest", [faces_dir / "biden__1.jpg"], event_id="only2", photo_id="b").get_json()
    assert set(body["spaces"]) == {"v2"}
    _error(_upload(client, "/api/v1/match", [faces_dir / "biden__2.jpg"], event_id="only2"), 404, "not_indexed")
    both = _upload(client, "/api/v2/ingest", [faces_dir / "biden__2.jpg"], event_id="only2", photo_id="b2",
                   spaces='["v1", "v2"]').get_json()
    assert set(both["spaces"]) == {"v1", "v2"}  # a request may still ask for both


def test_v1_ingest_needs_the_api_key(tmp_path, pack_dir, faces_dir):
    client = create_app(make_settings(tmp_path, pack_dir, api_keys=("k1",))).test_client()
    body = {"event_id": "keys1", "photo_id": "a", "descriptor": _unit(np.ones(128))}
    _error(client.post("/api/v1/ingest", json=body), 401, "unauthorized")
    _error(client.post("/api/v1/ingest", json=body, headers={"X-API-Key": "k2"}), 401, "unauthorized")
    _error(_upload(client, "/api/v1/ingest", [faces_dir / "biden__1.jpg"], event_id="keys1", photo_id="b"),
           401, "unauthorized")
    _error(client.get("/api/v2/events/keys1"), 404, "unknown_event")  # nothing was written
    assert client.post("/api/v1/ingest", json=body, headers={"X-API-Key": "k1"}).status_code == 200
    assert client.get("/api/v2/events/keys1").get_json()["spaces"]["v1"]["photos"] == 1
