"""POST /api/v2/verify and /api/v1/verify on the real engines and the real labelled photos."""

from __future__ import annotations

import base64
import io
import itertools
import json

import numpy as np
import pytest
from PIL import Image

SPACES = ("v1", "v2")
VECTOR = {"v2": "embedding", "v1": "descriptor"}


def _file(data: bytes, name: str = "x.jpg") -> tuple[io.BytesIO, str]:
    return io.BytesIO(data), name


def _blank_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((320, 240)).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(faces_dir, single_person_photos, derived_files) -> list[dict]:
    rows = [r for r in single_person_photos if r["file"] not in derived_files]
    assert len(rows) >= 10
    return rows


@pytest.fixture(scope="module")
def vectors(client_module, photos, faces_dir) -> dict[str, dict[str, list[float]]]:
    """Each photo's vector per space, from /api/v2/embed and /api/face/analyze."""
    out: dict[str, dict[str, list[float]]] = {"v1": {}, "v2": {}}
    for r in photos:
        data = (faces_dir / r["file"]).read_bytes()
        v2 = client_module.post("/api/v2/embed", data={"image": _file(data)})
        v1 = client_module.post("/api/face/analyze", data={"image": _file(data)})
        assert v2.status_code == 200 and v1.status_code == 200, (r["file"], v2.get_json(), v1.get_json())
        out["v2"][r["file"]] = v2.get_json()["embedding"]
        out["v1"][r["file"]] = v1.get_json()["descriptor"]
    return out


@pytest.fixture(scope="module")
def client_module(app):
    return app.test_client()


@pytest.mark.parametrize("space", SPACES)
def test_verify_agrees_with_identity_on_every_non_derived_pair(client_module, photos, vectors, faces_dir, space):
    """Every pair once: image a as a file (detected by the server), b as its vector."""
    wrong, n_same, n_diff = [], 0, 0
    for a, b in itertools.combinations(photos, 2):
        resp = client_module.post(f"/api/{space}/verify", data={
            "image_a": _file((faces_dir / a["file"]).read_bytes(), a["file"]),
            f"{VECTOR[space]}_b": json.dumps(vectors[space][b["file"]]),
        })
        body = resp.get_json()
        assert resp.status_code == 200, body
        same = a["identity"] == b["identity"]
        n_same += same
        n_diff += not same
        if body["is_match"] != same:
            wrong.append((a["file"], b["file"], body.get("similarity", body.get("distance"))))
        assert body["faces_a"] >= 1 and body["faces_b"] is None and body["face_b"] is None
        assert 0 <= body["face_a"]["det_score"] <= 1
    assert n_same >= 10 and n_diff >= 50
    assert wrong == [], f"{space}: verify disagrees with identity on {wrong}"


def test_verify_two_images_v2_matches_the_embed_vectors(client_module, faces_dir, vectors):
    a, b = "obama__1.jpg", "obama__2.jpg"
    body = client_module.post("/api/v2/verify", json={
        "image_base64_a": base64.b64encode((faces_dir / a).read_bytes()).decode(),
        "image_base64_b": base64.b64encode((faces_dir / b).read_bytes()).decode(),
    }).get_json()
    expected = float(np.dot(vectors["v2"][a], vectors["v2"][b]))
    assert abs(body["similarity"] - expected) < 1e-3
    assert body["is_match"] is True and body["faces_a"] == body["faces_b"] == 1
    assert body["threshold"] == pytest.approx(0.40) and body["model"] == "det500m_mbf128"
    assert set(body["face_a"]) == {"bbox", "det_score", "quality"}


def test_verify_v1_distance_is_face_recognition_semantics(client_module, vectors):
    a, b = vectors["v1"]["obama__1.jpg"], vectors["v1"]["biden__1.jpg"]
    body = client_module.post("/api/v1/verify", json={"descriptor_a": a, "descriptor_b": b}).get_json()
    assert body["distance"] == pytest.approx(float(np.linalg.norm(np.subtract(a, b))), abs=1e-3)
    assert body["is_match"] is (body["distance"] <= 0.6) and body["tolerance"] == 0.6
    strict = client_module.post("/api/v1/verify", json={"descriptor_a": a, "descriptor_b": a, "tolerance": 0.01})
    assert strict.get_json()["is_match"] is True and strict.get_json()["distance"] == 0.0


def test_threshold_decides_is_match(client_module, vectors):
    a, b = vectors["v2"]["obama__1.jpg"], vectors["v2"]["obama__3.jpg"]
    sim = float(np.dot(a, b))
    lo = client_module.post("/api/v2/verify", json={"embedding_a": a, "embedding_b": b, "threshold": sim - 0.01})
    hi = client_module.post("/api/v2/verify", json={"embedding_a": a, "embedding_b": b, "threshold": sim + 0.01})
    assert lo.get_json()["is_match"] is True and hi.get_json()["is_match"] is False


@pytest.mark.parametrize("space", SPACES)
def test_one_image_missing_is_400_naming_it(client_module, faces_dir, space):
    resp = client_module.post(f"/api/{space}/verify", data={"image_a": _file((faces_dir / "obama__1.jpg").read_bytes())})
    body = resp.get_json()
    assert resp.status_code == 400 and body["error"]["code"] == "missing_image"
    assert "image_b" in body["error"]["message"]
    resp = client_module.post(f"/api/{space}/verify", json={})
    assert resp.status_code == 400 and "image a" in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("blank_side", ["a", "b"])
def test_no_face_in_one_image_is_422_naming_it(client_module, faces_dir, space, blank_side):
    face = (faces_dir / "biden__1.jpg").read_bytes()
    files = {"a": face, "b": face, blank_side: _blank_jpeg()}
    resp = client_module.post(f"/api/{space}/verify", data={f"image_{k}": _file(v) for k, v in files.items()})
    body = resp.get_json()
    assert resp.status_code == 422 and body["error"]["code"] == "no_face"
    assert body["error"]["image"] == blank_side and f"image_{blank_side}" in body["error"]["message"]


@pytest.mark.parametrize("space", SPACES)
def test_mismatched_vector_dims_are_400(client_module, vectors, space):
    good = vectors[space]["obama__1.jpg"]
    resp = client_module.post(f"/api/{space}/verify", json={f"{VECTOR[space]}_a": good,
                                                            f"{VECTOR[space]}_b": good[:64]})
    body = resp.get_json()
    assert resp.status_code == 400 and body["error"]["code"] == "dimension_mismatch"
    assert body["error"]["expected"] == 128 and body["error"]["got"] == 64


def test_other_bad_inputs_are_4xx_json(client_module, vectors):
    emb = vectors["v2"]["obama__1.jpg"]
    cases = [
        ({"json": {"embedding_a": emb, "image_base64_b": "!!not base64!!"}}, 400, "invalid_base64"),
        ({"data": {"image_a": _file(b"hello, not an image"), "embedding_b": json.dumps(emb)}}, 415, "unsupported_image"),
        ({"json": {"embedding_a": emb, "embedding_b": [0.0] * 128}}, 400, "invalid_embedding"),
        ({"json": {"embedding_a": emb, "embedding_b": emb, "threshold": 3}}, 400, "invalid_threshold"),
        ({"json": {"embedding_a": "nope", "embedding_b": emb}}, 400, "invalid_embedding"),
        ({"data": "not json", "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ]
    for kwargs, status, code in cases:
        resp = client_module.post("/api/v2/verify", **kwargs)
        body = resp.get_json()
        assert resp.status_code == status and body["error"]["code"] == code, (kwargs.keys(), body)
    resp = client_module.post("/api/v1/verify", json={"descriptor_a": vectors["v1"]["obama__1.jpg"],
                                                      "descriptor_b": vectors["v1"]["obama__1.jpg"], "tolerance": 0})
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_tolerance"
