"""The image endpoints over HTTP (Flask test client): health, analyze, embed, detect, and
every kind of bad input — each a 4xx JSON error, never a 5xx, the service still serving."""

from __future__ import annotations

import base64
import io
import os
import socket

import numpy as np
import pytest
from PIL import Image

from flask_backend import create_app
from tests.conftest import make_settings
from tests.http_fixtures import LocalHTTPServer, Reply


def _jpeg(size=(64, 48), color=(120, 130, 140)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def _error(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)[:500]
    body = resp.get_json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def _upload(client, path: str, data: bytes, filename: str = "selfie.jpg", **fields):
    form = {"image": (io.BytesIO(data), filename), **fields}
    return client.post(path, data=form, content_type="multipart/form-data")


def test_health_reports_both_engines(client):
    body = client.get("/health").get_json()
    assert body["status"] == "ok" and body["insightface_ready"] is True
    assert body["engines"]["v1"] == {"ready": True, "model": "dlib_resnet_v1", "dim": 128, "error": None}
    v2 = body["engines"]["v2"]
    assert v2["ready"] and v2["model"] == "det500m_mbf128" and v2["dim"] == 128
    assert "CPUExecutionProvider" in v2["providers"] and v2["error"] is None
    assert body["version"]


def test_analyze_gives_the_raw_v1_descriptor(client, app, faces_dir):
    data = (faces_dir / "obama__1.jpg").read_bytes()
    resp = _upload(client, "/api/face/analyze", data)
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert len(body["descriptor"]) == 128 and body["faces_detected"] == 1
    svc = app.extensions["facematch"]
    face = svc.engines.get("v1").detect(svc.decode(data), "selfie")[0]
    np.testing.assert_allclose(body["descriptor"], face.raw, rtol=0, atol=1e-6)  # the engine's own vector
    assert abs(float(np.linalg.norm(body["descriptor"])) - 1.0) > 0.05  # raw, not normalised
    x1, y1, x2, y2 = body["bbox"]
    assert x2 > x1 and y2 > y1


def _centre_inside(box, other) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return other[0] <= cx <= other[2] and other[1] <= cy <= other[3]


def _two_sizes(faces_dir) -> bytes:
    """Obama big on the left, Biden small on the right, in one JPEG."""
    canvas = Image.new("RGB", (1600, 800), (200, 200, 200))
    for name, height, x in (("obama__1.jpg", 760, 20), ("biden__1.jpg", 420, 1150)):
        with Image.open(faces_dir / name) as im:
            im = im.convert("RGB")
            canvas.paste(im.resize((int(im.width * height / im.height), height)), (x, 20))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_selfie_endpoints_use_the_largest_face_and_count_them(client, faces_dir):
    data = _two_sizes(faces_dir)
    faces = _upload(client, "/api/v2/detect", data).get_json()["faces"]
    assert len(faces) == 2
    big, small = sorted(faces, key=lambda f: (f["bbox"][2] - f["bbox"][0]) * (f["bbox"][3] - f["bbox"][1]), reverse=True)
    assert big["bbox"][2] < 800 < small["bbox"][0]  # Obama's face is the big one
    resp = _upload(client, "/api/v2/embed", data)
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["faces_detected"] == 2 and body["model"] == "det500m_mbf128"
    assert body["bbox"] == pytest.approx(big["bbox"], abs=0.2)
    np.testing.assert_allclose(body["embedding"], big["embedding"], atol=1e-5)
    assert abs(float(np.linalg.norm(body["embedding"])) - 1.0) < 1e-3
    assert body["det_score"] > 0.5
    v1 = _upload(client, "/api/face/analyze", data).get_json()  # its own (HOG) boxes: the same face
    assert v1["faces_detected"] == 2
    assert _centre_inside(v1["bbox"], big["bbox"]) and not _centre_inside(v1["bbox"], small["bbox"])
    obama = _upload(client, "/api/face/analyze", (faces_dir / "obama__2.jpg").read_bytes()).get_json()["descriptor"]
    assert float(np.linalg.norm(np.subtract(v1["descriptor"], obama))) < 0.6  # and it describes that face


def test_embed_by_json_base64(client, faces_dir):
    data = base64.b64encode((faces_dir / "biden__1.jpg").read_bytes()).decode()
    resp = client.post("/api/v2/embed", json={"image_base64": "data:image/jpeg;base64," + data})
    assert resp.status_code == 200 and resp.get_json()["faces_detected"] == 1


def test_detect_gives_every_face_with_landmarks(client, faces_dir):
    resp = _upload(client, "/api/v2/detect", (faces_dir / "group__t1.jpg").read_bytes())
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert len(body["faces"]) == 6 and body["faces_detected"] == 6
    with Image.open(faces_dir / "group__t1.jpg") as im:
        assert (body["image_width"], body["image_height"]) == im.size
    for face in body["faces"]:
        assert len(face["kps"]) == 5 and len(face["embedding"]) == 128 and face["det_score"] > 0.5
    assert body["processing_time_ms"] > 0


def test_no_face_is_422(client):
    for path in ("/api/v2/embed", "/api/face/analyze"):
        _error(_upload(client, path, _jpeg((400, 300))), 422, "no_face")


def test_png_named_jpg_works(client, faces_dir):
    png = (faces_dir / "alex_lacamoire__1.png").read_bytes()
    resp = _upload(client, "/api/v2/embed", png, filename="renamed.jpg")
    assert resp.status_code == 200 and resp.get_json()["faces_detected"] >= 1


# --- bad input -----------------------------------------------------------------------------


def _truncated_jpeg(faces_dir) -> bytes:
    data = (faces_dir / "obama__2.jpg").read_bytes()
    return data[: len(data) // 2]


def _animated_gif() -> bytes:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


BAD_UPLOADS = {
    "zero_bytes": (lambda fd, bomb: b"", 400, "empty_image"),
    "random_bytes": (lambda fd, bomb: os.urandom(4096), 415, "unsupported_image"),
    "truncated_jpeg": (lambda fd, bomb: _truncated_jpeg(fd), 400, "corrupt_image"),
    "bomb_png": (lambda fd, bomb: bomb, 413, "image_too_large"),  # 20000x20000, built once per session
    "animated_gif": (lambda fd, bomb: _animated_gif(), 415, "unsupported_image"),
}


@pytest.mark.parametrize("path", ["/api/v2/embed", "/api/v2/detect", "/api/face/analyze"])
@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_uploads_are_4xx_json(client, faces_dir, png_bomb_20k, path, case):
    make, status, code = BAD_UPLOADS[case]
    _error(_upload(client, path, make(faces_dir, png_bomb_20k)), status, code)
    assert client.get("/health").status_code == 200  # still serving


def test_non_image_content_type_is_415(client):
    resp = client.post("/api/v2/embed", data="hello", content_type="text/plain")
    _error(resp, 415, "unsupported_media_type")


def test_invalid_json_and_base64(client):
    _error(client.post("/api/v2/embed", data="{not json", content_type="application/json"), 400, "invalid_json")
    _error(client.post("/api/v2/embed", json={"image_base64": "***not base64***"}), 400, "invalid_base64")
    _error(client.post("/api/v2/embed", json={"image_base64": 12}), 400, "invalid_base64")


def test_missing_fields(client):
    _error(client.post("/api/v2/embed", json={}), 400, "missing_image")
    _error(client.post("/api/v2/detect", json={}), 400, "missing_image")
    _error(client.post("/api/face/analyze", data={}, content_type="multipart/form-data"), 400, "missing_image")


def test_fifty_megabyte_body_is_413(client):
    body = b"\xff\xd8" + b"0" * (50 * 1024 * 1024)
    resp = _upload(client, "/api/v2/embed", body)
    _error(resp, 413)


def test_unknown_route_and_wrong_method_are_json(client):
    _error(client.get("/api/v2/nope"), 404, "not_found")
    resp = client.get("/api/v2/embed")
    _error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


def test_unexpected_exception_is_a_json_500_with_request_id(tmp_path, pack_dir):
    app = create_app(make_settings(tmp_path, pack_dir))
    client = app.test_client()

    @app.get("/__boom")
    def boom():  # pragma: no cover - body raises
        raise RuntimeError("secret internals")

    resp = client.get("/__boom", headers={"X-Request-ID": "abc123"})
    err = _error(resp, 500, "internal_error")
    assert err["request_id"] == "abc123" and "secret" not in resp.get_data(as_text=True)
    assert "Traceback" not in resp.get_data(as_text=True)


# --- image_url: SSRF and remote failures -----------------------------------------------------


@pytest.fixture(scope="module")
def strict_client(tmp_path_factory, pack_dir):
    """Production-like URL policy: private/loopback addresses refused."""
    app = create_app(make_settings(tmp_path_factory.mktemp("strict"), pack_dir, allow_private_urls=False))
    return app.test_client()


@pytest.mark.parametrize(
    "url, code",
    [
        ("file:///etc/passwd", "invalid_url"),
        ("ftp://example.com/a.jpg", "invalid_url"),
        ("http://127.0.0.1/a.jpg", "forbidden_url"),
        ("http://169.254.169.254/latest/meta-data/", "forbidden_url"),
        ("http://photos.nonexistent.invalid/a.jpg", "fetch_failed"),
    ],
)
def test_image_url_refused(strict_client, url, code):
    _error(strict_client.post("/api/v2/detect", json={"image_url": url}), 400, code)


def test_image_url_remote_failures(client, faces_dir):
    photo = (faces_dir / "biden__1.jpg").read_bytes()
    routes = {
        "/ok.jpg": (200, {"Content-Type": "image/jpeg"}, photo),
        "/page.html": (200, {"Content-Type": "text/html"}, b"<html><body>hi</body></html>"),
        "/huge.jpg": Reply(200, {"Content-Type": "image/jpeg"}, b"\xff\xd8" + b"0" * (30 * 1024 * 1024)),
    }
    with LocalHTTPServer(routes) as srv:
        ok = client.post("/api/v2/detect", json={"image_url": srv.url("/ok.jpg")})
        assert ok.status_code == 200 and ok.get_json()["faces_detected"] == 1
        err = _error(client.post("/api/v2/detect", json={"image_url": srv.url("/missing.jpg")}), 400, "fetch_failed")
        assert err.get("upstream_status") == 404
        _error(client.post("/api/v2/detect", json={"image_url": srv.url("/page.html")}), 415, "unsupported_image")
        _error(client.post("/api/v2/detect", json={"image_url": srv.url("/huge.jpg")}), 413, "image_too_large")
    assert client.get("/health").status_code == 200


# --- v2 not ready ----------------------------------------------------------------------------


def test_v2_not_ready_path(app_without_v2, faces_dir, monkeypatch):
    attempts: list = []
    real_connect = socket.socket.connect

    def spy(sock, address):
        attempts.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    client = app_without_v2.test_client()
    health = client.get("/health").get_json()
    assert health["status"] == "degraded" and health["insightface_ready"] is False
    err = health["engines"]["v2"]["error"]
    assert "buffalo_l" in err and "fetch_models" in err and str(app_without_v2.extensions["facematch"].settings.model_root) in err
    photo = (faces_dir / "obama__1.jpg").read_bytes()
    for path in ("/api/v2/embed", "/api/v2/detect"):
        _error(_upload(client, path, photo), 503, "engine_not_ready")
    _error(client.post("/api/v2/match", json={"event_id": "e1", "user_embedding": [0.1] * 512}), 503, "engine_not_ready")
    resp = _upload(client, "/api/face/analyze", photo)
    assert resp.status_code == 200 and len(resp.get_json()["descriptor"]) == 128
    assert attempts == [], f"the not-ready path tried the network: {attempts}"
    assert not any(app_without_v2.extensions["facematch"].settings.model_root.iterdir())


def test_lowered_max_image_pixels_is_honoured(tmp_path, pack_dir, faces_dir):
    from flask_backend.config import Settings

    photo = (faces_dir / "obama__1.jpg").read_bytes()
    with Image.open(io.BytesIO(photo)) as im:
        pixels = im.width * im.height
    env = {"FACEMATCH_MAX_IMAGE_PIXELS": str(pixels - 1)}  # one pixel too many, read as operators set it
    client = create_app(Settings.from_env(env, data_dir=tmp_path, v2_pack=str(pack_dir), log_level="WARNING")).test_client()
    for path in ("/api/v2/embed", "/api/v2/detect", "/api/face/analyze"):
        _error(_upload(client, path, photo), 413, "image_too_large")
    _error(_upload(client, "/api/v2/ingest", photo, event_id="px", photo_id="a"), 413, "image_too_large")
    _error(client.get("/api/v2/events/px"), 404, "unknown_event")
    small = _jpeg((640, 480))
    assert _upload(client, "/api/v2/ingest", small, event_id="px", photo_id="b").status_code == 200


def _displayed_upright(data: bytes, orientation: int) -> bytes:
    """The same picture stored rotated, with the EXIF tag that tells viewers to turn it back."""
    with Image.open(io.BytesIO(data)) as im:
        stored = im.convert("RGB").transpose({6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
                                              3: Image.Transpose.ROTATE_180}[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_gives_boxes_in_the_displayed_orientation(client, faces_dir, orientation):
    with Image.open(faces_dir / "obama__1.jpg") as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=95)
        upright, size = buf.getvalue(), im.size
    rotated = _displayed_upright(upright, orientation)
    with Image.open(io.BytesIO(rotated)) as im:
        assert im.size == (size if orientation == 3 else size[::-1])  # stored sideways / upside down
    want = _upload(client, "/api/v2/detect", upright).get_json()
    got = _upload(client, "/api/v2/detect", rotated).get_json()
    assert (got["image_width"], got["image_height"]) == size
    assert len(got["faces"]) == len(want["faces"]) == 1
    box = want["faces"][0]["bbox"]
    tol = 0.05 * (box[2] - box[0])
    assert got["faces"][0]["bbox"] == pytest.approx(box, abs=tol)
    v1_want = _upload(client, "/api/face/analyze", upright).get_json()["bbox"]
    assert _upload(client, "/api/face/analyze", rotated).get_json()["bbox"] == pytest.approx(v1_want, abs=tol)
    event = f"exif-{orientation}"
    ingested = _upload(client, "/api/v2/ingest", rotated, event_id=event, photo_id="rot").get_json()
    assert ingested["faces"][0]["bbox"] == pytest.approx(box, abs=tol)
    selfie = (faces_dir / "obama__2.jpg").read_bytes()
    hit = _upload(client, "/api/v2/match", selfie, event_id=event).get_json()["matches"][0]
    assert hit["photo_id"] == "rot" and hit["bbox"] == pytest.approx(box, abs=tol)  # stored in that orientation
