"""The "forget me" bar is the server's, never the request's (real engines, real photos).

An event with two people (Obama, Biden): Obama's selfie removes his faces and leaves
Biden's; a request sending ``threshold: -1`` (which once emptied events) is refused and
removes nothing; and a stricter FACEMATCH_FORGET_THRESHOLD really is the bar used.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from flask_backend import create_app
from flask_backend.forget import forget_threshold
from tests.conftest import make_settings

OBAMA = ["obama__1.jpg", "obama__2.jpg", "obama__5.jpg"]
BIDEN = ["biden__1.jpg", "biden__2.jpg"]
SELFIE = "obama__3.jpg"  # held out: never ingested


def _ingest_all(client, faces_dir, event):
    for name in OBAMA + BIDEN:
        with (faces_dir / name).open("rb") as f:
            r = client.post("/api/v2/ingest", data={"event_id": event, "photo_id": name, "image": (f, name)},
                            content_type="multipart/form-data")
        assert r.status_code == 200 and r.get_json()["faces_indexed"] == 1, r.get_json()


def _forget(client, faces_dir, event, **fields):
    data = {"image": (io.BytesIO((faces_dir / SELFIE).read_bytes()), SELFIE), **fields}
    return client.post(f"/api/v2/events/{event}/forget", data=data, content_type="multipart/form-data")


def _photos(app, event, space="v2") -> set[str]:
    store = app.extensions["facematch"].store
    return {p.photo_id for p in store.list_photos(event, space) if p.faces > 0}


@pytest.fixture()
def app(tmp_path, pack_dir):
    return create_app(make_settings(tmp_path / "data", pack_dir))


def test_forget_removes_only_faces_above_the_servers_bar(app, faces_dir):
    client = app.test_client()
    _ingest_all(client, faces_dir, "two-people")
    svc = app.extensions["facematch"]
    bar = forget_threshold(svc)
    # what the server bar means on these photos, measured with the same engine
    selfie = svc.engines.get("v2").detect(svc.decode((faces_dir / SELFIE).read_bytes()), "selfie")[0].embedding
    score = {}
    for name in OBAMA + BIDEN:
        face = svc.engines.get("v2").detect(svc.decode((faces_dir / name).read_bytes()), "ingest")[0]
        score[name] = float(np.dot(selfie, face.embedding) / np.linalg.norm(selfie) / np.linalg.norm(face.embedding))
    above = {n for n, v in score.items() if v >= bar}
    assert above == set(OBAMA), (bar, score)  # the photos make the bar matter: Biden is below it

    resp = _forget(client, faces_dir, "two-people")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert {r["photo_id"] for r in body["removed"]["v2"]} == set(OBAMA)
    assert all(r["score"] >= bar - 1e-4 for r in body["removed"]["v2"])
    assert _photos(app, "two-people") == set(BIDEN)
    assert _photos(app, "two-people", "v1") == set(BIDEN)


@pytest.mark.parametrize("field, value", [("threshold", "-1"), ("threshold", "0.99"), ("tolerance", "2")])
def test_a_request_bar_is_refused_and_removes_nothing(app, faces_dir, field, value):
    client = app.test_client()
    _ingest_all(client, faces_dir, "attack")
    resp = _forget(client, faces_dir, "attack", **{field: value})
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"]["code"] == "field_not_allowed"
    assert resp.get_json()["error"]["field"] == field
    assert _photos(app, "attack") == set(OBAMA + BIDEN)
    # JSON bodies too
    import base64

    resp = client.post("/api/v2/events/attack/forget", json={
        "image_base64": base64.b64encode((faces_dir / SELFIE).read_bytes()).decode(), field: float(value)})
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "field_not_allowed"
    assert _photos(app, "attack") == set(OBAMA + BIDEN)


def test_the_setting_is_the_bar(tmp_path, pack_dir, faces_dir):
    strict = create_app(make_settings(tmp_path / "data", pack_dir, forget_threshold=0.999))
    client = strict.test_client()
    _ingest_all(client, faces_dir, "strict")
    resp = _forget(client, faces_dir, "strict")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["faces_removed"]["v2"] == 0
    assert _photos(strict, "strict") == set(OBAMA + BIDEN)
