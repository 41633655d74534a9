"""/openapi.json is a valid OpenAPI 3.1 document that cannot drift from the code.

* every route the app serves is documented, and nothing else;
* every error code (flask_backend/errors.py's named constructors) is listed under its status;
* REAL responses of every endpoint, success and error, validate against the spec, and the
  JSON requests the tests send validate against the documented request bodies.
"""

from __future__ import annotations

import ast
import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from flask_backend import create_app, errors
from flask_backend.access import keys
from flask_backend.api.errors import HTTP_CODES
from flask_backend.openapi import (
    ERROR_CODES,
    OPERATIONS,
    app_routes,
    build_spec,
    openapi_path,
    undocumented_routes,
)
from tests.conftest import make_settings
from tests.http_fixtures import LocalHTTPServer

PACKAGE = Path(__file__).resolve().parent.parent / "flask_backend"
SPEC_URI = "urn:facematch:openapi"
API_PREFIXES = ("/api/", "/health")


# --------------------------------------------------------------------------- static checks
def test_spec_is_valid_openapi(app):
    validator = pytest.importorskip("openapi_spec_validator", reason="pip install openapi-spec-validator")
    validator.validate(build_spec(app))
    validator.validate(build_spec(None))


def test_every_route_is_documented_and_nothing_else(app, app_without_v2):
    for a in (app, app_without_v2):
        assert undocumented_routes(a) == [], "document these routes in flask_backend/openapi/operations.py OPERATIONS"
    # nothing documented that the app does not serve (build_spec(app) would silently drop it)
    assert sorted(set(OPERATIONS) - app_routes(app)) == []
    spec_ops = {(path, method.upper()) for path, ops in build_spec(app)["paths"].items() for method in ops}
    assert spec_ops == {(openapi_path(rule), method) for rule, method in OPERATIONS}
    assert ("/api/v2/match", "POST") in spec_ops and ("/e/{event_id}", "GET") in spec_ops


def _raised_codes() -> set[tuple[int, str]]:
    """(status, code) of every named constructor in flask_backend/errors.py, of every
    ``out_of_range`` field (``invalid_<name>`` for each ``fields.number("<name>", ...)``) and of
    the framework's own HTTP errors."""
    found = {(status, code) for code, status in errors.CODES.items()}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "number" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                found.add((400, f"invalid_{node.args[0].value}"))
    found.update(HTTP_CODES.items())
    found.add((500, "internal_error"))
    return found


def test_errors_are_built_by_their_named_constructor_only():
    """Each code is spelled once: nothing outside errors.py builds an ``ApiError`` itself."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if name == "ApiError":
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, f"raise flask_backend.errors.<code>(...) instead: {offenders}"


def test_every_error_code_is_documented():
    missing = sorted((s, c) for s, c in _raised_codes() if c not in ERROR_CODES.get(s, ()))
    assert not missing, f"add these (status, code) pairs to ERROR_CODES in flask_backend/openapi/operations.py: {missing}"
    numbered = {f"invalid_{n}" for n in ("top_k", "page_size", "threshold", "tolerance")}  # f"invalid_{name}"
    assert numbered <= set(ERROR_CODES[400])


def test_spec_defaults_come_from_settings(tmp_path, pack_dir):
    spec = build_spec(create_app(make_settings(tmp_path, pack_dir, page_size=7, max_top_k=50)))
    paging = spec["components"]["schemas"]["MatchV2Request"]["properties"]
    assert paging["page_size"]["maximum"] == 50 and "(default 7)" in paging["page_size"]["description"]


# --------------------------------------------------------------------------- real responses
@dataclass
class Seen:
    template: str
    method: str
    status: int
    mimetype: str
    body: Any
    request_json: Any = None


class Recorder:
    """Sends requests through a Flask test client and remembers each (operation, response)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def send(self, client, method: str, template: str, path: str | None = None, *, expect: int, **kw) -> Any:
        response = client.open(path or template, method=method, **kw)
        if response.mimetype == "application/json":
            body = response.get_json(silent=True)
        else:  # pages as text; images, zips and SVGs as bytes
            body = response.get_data(as_text=response.mimetype.startswith("text/"))
        assert response.status_code == expect, (method, path or template, response.status_code, body)
        self.seen.append(Seen(template, method, response.status_code, response.mimetype, body, kw.get("json")))
        return body


def _jpeg(path: Path) -> bytes:
    return path.read_bytes()


def _no_face_jpeg() -> bytes:
    img = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _file(data: bytes, name: str = "selfie.jpg") -> tuple[io.BytesIO, str]:
    return io.BytesIO(data), name


def _other_pack(tmp: Path, pack_dir: Path) -> Path:
    """The same model files under another pack name: its indexes are 'another model'."""
    other = tmp / "renamed_pack"
    other.mkdir()
    for f in pack_dir.iterdir():
        (other / f.name).symlink_to(f)
    return other


@pytest.fixture(scope="module")
def observed(app, app_without_v2, faces_dir, pack_dir, tmp_path_factory) -> Iterator[list[Seen]]:
    rec = Recorder()
    c = app.test_client()
    face = {n: _jpeg(faces_dir / n) for n in ("obama__1.jpg", "obama__2.jpg", "obama__3.jpg", "biden__1.jpg",
                                              "biden__2.jpg", "group__two_people.jpg")}
    blank = _no_face_jpeg()
    selfie = face["obama__3.jpg"]
    ev = "openapi-ev"
    with LocalHTTPServer(directory=faces_dir) as srv:
        # pages and service
        rec.send(c, "GET", "/health", expect=200)
        rec.send(c, "GET", "/openapi.json", expect=200)
        rec.send(c, "GET", "/docs", expect=200)
        rec.send(c, "GET", "/", expect=200)
        if any(rule.rule == "/metrics" for rule in app.url_map.iter_rules()):
            rec.send(c, "GET", "/metrics", expect=200)
        rec.send(c, "GET", "/e/<event_id>", f"/e/{ev}", expect=200)
        # v2 ingest: by URL (both spaces), by precomputed embedding, errors
        for name in ("obama__1.jpg", "obama__2.jpg", "biden__1.jpg", "group__two_people.jpg"):
            rec.send(c, "POST", "/api/v2/ingest", expect=200,
                     json={"event_id": ev, "photo_id": name, "image_url": srv.url("/" + name)})
        rec.send(c, "POST", "/api/v2/ingest", expect=400, json={"event_id": ev, "image_url": srv.url("/x.jpg")})
        rec.send(c, "POST", "/api/v2/ingest", expect=415, data={"event_id": ev, "photo_id": "t",
                                                                 "image": _file(b"hello, not an image", "a.jpg")})
        emb = rec.send(c, "POST", "/api/v2/embed", expect=200, data={"image": _file(selfie)})["embedding"]
        rec.send(c, "POST", "/api/v2/embed", expect=200, json={"images": [_b64(selfie)]})
        rec.send(c, "POST", "/api/v2/embed", expect=422, data={"image": _file(blank)})
        rec.send(c, "POST", "/api/v2/ingest", expect=200, json={"event_id": "openapi-emb", "photo_id": "e1",
                                                                 "embedding": emb})
        # v1 ingest: multipart, precomputed descriptor, v1 only
        rec.send(c, "POST", "/api/v1/ingest", expect=200,
                 data={"event_id": ev, "photo_id": "biden__2.jpg", "image": _file(face["biden__2.jpg"])})
        desc = rec.send(c, "POST", "/api/face/analyze", expect=200, data={"image": _file(selfie)})["descriptor"]
        rec.send(c, "POST", "/api/face/analyze", expect=422, data={"image": _file(blank)})
        rec.send(c, "POST", "/api/face/analyze", expect=415, data={"image": _file(b"GIF89a not really")})
        rec.send(c, "POST", "/api/face/analyze", expect=400, data={})
        rec.send(c, "POST", "/api/v1/ingest", expect=200, json={"event_id": "openapi-v1only", "photo_id": "d1",
                                                                 "descriptor": desc})
        rec.send(c, "POST", "/api/v1/ingest", expect=400, json={"event_id": ev, "photo_id": "d2",
                                                                 "descriptor": [0.1, 0.2]})
        # detect
        rec.send(c, "POST", "/api/v2/detect", expect=200, data={"image": _file(face["group__two_people.jpg"])})
        rec.send(c, "POST", "/api/v2/detect", expect=200, json={"image_base64": _b64(blank)})
        rec.send(c, "POST", "/api/v2/detect", expect=400, json={})
        # verify: two images, image + vector, errors
        rec.send(c, "POST", "/api/v2/verify", expect=200,
                 data={"image_a": _file(selfie, "a.jpg"), "image_b": _file(face["obama__1.jpg"], "b.jpg")})
        rec.send(c, "POST", "/api/v2/verify", expect=200, json={"image_base64_a": _b64(face["biden__1.jpg"]),
                                                                 "embedding_b": emb, "threshold": 0.5})
        rec.send(c, "POST", "/api/v2/verify", expect=422, json={"image_base64_a": _b64(selfie),
                                                                 "image_base64_b": _b64(blank)})
        rec.send(c, "POST", "/api/v2/verify", expect=400, json={"embedding_a": emb, "embedding_b": [0.1, 0.2]})
        rec.send(c, "POST", "/api/v1/verify", expect=200, json={"descriptor_a": desc, "descriptor_b": desc})
        rec.send(c, "POST", "/api/v1/verify", expect=200,
                 data={"image_a": _file(face["biden__2.jpg"]), "descriptor_b": str(desc)})
        rec.send(c, "POST", "/api/v1/verify", expect=400, data={"image_a": _file(selfie)})
        # v2 match: selfie, embedding with paging, errors
        rec.send(c, "POST", "/api/v2/match", expect=200, data={"event_id": ev, "image": _file(selfie)})
        page1 = rec.send(c, "POST", "/api/v2/match", expect=200,
                         json={"event_id": ev, "user_embedding": emb, "mode": "all", "page_size": 1})
        assert page1["next_cursor"], page1
        rec.send(c, "POST", "/api/v2/match", expect=200,
                 json={"event_id": ev, "user_embedding": emb, "mode": "all", "page_size": 1,
                       "cursor": page1["next_cursor"]})
        rec.send(c, "POST", "/api/v2/match", expect=200,
                 data={"event_id": ev, "image": [_file(selfie, "a.jpg"), _file(face["obama__1.jpg"], "b.jpg")],
                       "top_k": "null"})
        rec.send(c, "POST", "/api/v2/match", expect=404, json={"event_id": "openapi-nope", "user_embedding": emb})
        rec.send(c, "POST", "/api/v2/match", expect=404, json={"event_id": "openapi-v1only", "user_embedding": emb})
        rec.send(c, "POST", "/api/v2/match", expect=400, json={"event_id": ev, "user_embedding": emb, "threshold": 7})
        rec.send(c, "POST", "/api/v2/match", expect=400, json={"event_id": ev, "user_embedding": emb,
                                                                "mode": "all", "cursor": "garbage"})
        rec.send(c, "POST", "/api/v2/match", expect=422, data={"event_id": ev, "image": _file(blank)})
        # v1 match
        rec.send(c, "POST", "/api/v1/match", expect=200, data={"event_id": ev, "image": _file(selfie)})
        rec.send(c, "POST", "/api/v1/match", expect=200, json={"event_id": ev, "descriptor": desc, "mode": "all"})
        rec.send(c, "POST", "/api/v1/match", expect=404, json={"event_id": "openapi-nope", "descriptor": desc})
        rec.send(c, "POST", "/api/v1/match", expect=400, json={"event_id": ev, "descriptor": desc, "tolerance": 9})
        rec.send(c, "POST", "/api/v1/match", expect=415, data={"event_id": ev, "image": _file(b"%PDF-1.4 nope")})
        # events
        rec.send(c, "GET", "/api/v2/events/<event_id>", f"/api/v2/events/{ev}", expect=200)
        rec.send(c, "GET", "/api/v2/events/<event_id>", "/api/v2/events/openapi-nope", expect=404)
        rec.send(c, "GET", "/api/v2/events/<event_id>", "/api/v2/events/.bad", expect=400)
        forget_ev = "openapi-forget"
        rec.send(c, "POST", "/api/v2/ingest", expect=200,
                 json={"event_id": forget_ev, "photo_id": "o1", "image_url": srv.url("/obama__1.jpg")})
        rec.send(c, "POST", "/api/v2/events/<event_id>/forget", f"/api/v2/events/{forget_ev}/forget", expect=200,
                 data={"image": _file(face["obama__1.jpg"])})
        rec.send(c, "POST", "/api/v2/events/<event_id>/forget", "/api/v2/events/openapi-nope/forget", expect=404,
                 data={"image": _file(selfie)})
        rec.send(c, "POST", "/api/v2/events/<event_id>/forget", f"/api/v2/events/{forget_ev}/forget", expect=422,
                 data={"image": _file(blank)})
        photo = "/api/v2/events/<event_id>/photos/<path:photo_id>"
        rec.send(c, "DELETE", photo, f"/api/v2/events/{ev}/photos/biden__1.jpg", expect=200)
        rec.send(c, "DELETE", photo, f"/api/v2/events/{ev}/photos/biden__1.jpg", expect=404)
        rec.send(c, "DELETE", "/api/v2/events/<event_id>", "/api/v2/events/openapi-emb", expect=200)
        rec.send(c, "DELETE", "/api/v2/events/<event_id>", "/api/v2/events/openapi-emb", expect=404)
        _experience_calls(rec, tmp_path_factory.mktemp("openapi_exp"), pack_dir, srv, emb)

    # v2 engine not ready
    n = app_without_v2.test_client()
    rec.send(n, "GET", "/health", expect=200)
    rec.send(n, "POST", "/api/v2/match", expect=503, json={"event_id": ev, "user_embedding": emb})
    rec.send(n, "POST", "/api/v2/embed", expect=503, data={"image": _file(selfie)})
    rec.send(n, "POST", "/api/v2/detect", expect=503, data={"image": _file(selfie)})
    rec.send(n, "POST", "/api/v2/ingest", expect=503, json={"event_id": ev, "photo_id": "x", "embedding": emb})
    # API keys and size limits
    tmp = tmp_path_factory.mktemp("openapi_small")
    small = create_app(make_settings(tmp / "data", pack_dir, api_keys=("k1",), max_image_bytes=2000)).test_client()
    rec.send(small, "POST", "/api/v2/ingest", expect=401, json={"event_id": ev, "photo_id": "x", "embedding": emb})
    rec.send(small, "DELETE", "/api/v2/events/<event_id>", f"/api/v2/events/{ev}", expect=401)
    rec.send(small, "POST", "/api/face/analyze", expect=413, data={"image": _file(selfie)})
    _access_calls(rec, tmp, pack_dir, emb, selfie)
    # the same data read with another model: the v2 index is stale
    renamed = create_app(make_settings(app.extensions["facematch"].settings.data_dir, _other_pack(tmp, pack_dir)))
    rec.send(renamed.test_client(), "POST", "/api/v2/match", expect=409, data={"event_id": ev, "image": _file(selfie)})
    yield rec.seen


def _access_calls(rec: Recorder, tmp: Path, pack_dir: Path, emb: list[float], selfie: bytes) -> None:
    """Event access, scoped keys, forget records and rate limits, success and error."""
    app = create_app(make_settings(tmp / "access", pack_dir, api_keys=("admin-k",), rate_limits_enabled=True,
                                   rate_limit_event_code="2 per minute"))
    a = app.test_client()
    org = {"X-API-Key": keys.create_key(app.extensions["facematch"], "acme", "organizer", ["acme-*"])}
    access, forget = "/api/v2/events/<event_id>/access", "/api/v2/events/<event_id>/forget"
    records, event = "/api/v2/events/<event_id>/forget-requests", "/api/v2/events/<event_id>"
    rec.send(a, "POST", "/api/v2/ingest", expect=200, headers=org,
             json={"event_id": "acme-1", "photo_id": "e1", "embedding": emb})
    rec.send(a, "POST", "/api/v2/ingest", expect=403, headers=org,
             json={"event_id": "other-1", "photo_id": "e1", "embedding": emb})
    rec.send(a, "GET", access, "/api/v2/events/acme-1/access", expect=200, headers=org)
    rec.send(a, "GET", access, "/api/v2/events/acme-1/access", expect=401)
    rec.send(a, "PUT", access, "/api/v2/events/acme-1/access", expect=200, headers=org,
             json={"mode": "code", "code": "secret-42"})
    rec.send(a, "PUT", access, "/api/v2/events/acme-1/access", expect=400, headers=org,
             json={"mode": "code", "code": "abc"})
    rec.send(a, "PUT", access, "/api/v2/events/other-1/access", expect=403, headers=org, json={"mode": "open"})
    rec.send(a, "POST", "/api/v2/match", expect=403, json={"event_id": "acme-1", "user_embedding": emb})
    rec.send(a, "POST", "/api/v2/match", expect=200,
             json={"event_id": "acme-1", "user_embedding": emb, "event_code": "secret-42"})
    rec.send(a, "POST", "/api/v1/match", expect=403, json={"event_id": "acme-1", "descriptor": [0.0] * 128})
    rec.send(a, "GET", event, "/api/v2/events/acme-1", expect=403)
    rec.send(a, "GET", event, "/api/v2/events/acme-1", expect=200, headers={"X-Event-Code": "secret-42"})
    rec.send(a, "GET", event, "/api/v2/events/acme-1", expect=401, headers={"X-API-Key": "nope"})
    rec.send(a, "POST", forget, "/api/v2/events/acme-1/forget", expect=200,
             data={"image": _file(selfie), "event_code": "secret-42"})
    rec.send(a, "GET", records, "/api/v2/events/acme-1/forget-requests", expect=200, headers=org)
    rec.send(a, "GET", records, "/api/v2/events/acme-1/forget-requests?limit=0", expect=400, headers=org)
    rec.send(a, "GET", records, "/api/v2/events/other-1/forget-requests", expect=403, headers=org)
    for _ in range(2):
        rec.send(a, "POST", forget, "/api/v2/events/acme-1/forget", expect=403,
                 data={"image": _file(selfie), "event_code": "wrong-code"})
    rec.send(a, "POST", forget, "/api/v2/events/acme-1/forget", expect=429,
             data={"image": _file(selfie), "event_code": "secret-42"})


def _experience_calls(rec: Recorder, tmp: Path, pack_dir: Path, srv: LocalHTTPServer, emb: list[float]) -> None:
    """Thumbnails, downloads, outcomes, retries, the dashboard's listing and QR: success and error."""
    app = create_app(make_settings(tmp, pack_dir, api_keys=("admin-k",), ingest_spaces=("v2",), zip_max_photos=3))
    a, admin = app.test_client(), {"X-API-Key": "admin-k"}
    ev, photo = "exp-1", "/api/v2/events/<event_id>/photos/<path:photo_id>"
    rec.send(a, "GET", "/admin", expect=200)
    rec.send(a, "POST", "/api/v2/ingest", expect=200, headers=admin,
             json={"event_id": ev, "photo_id": "o1", "image_url": srv.url("/obama__1.jpg")})
    rec.send(a, "POST", "/api/v2/ingest", expect=200, headers=admin, json={"event_id": ev, "photo_id": "v1",
                                                                           "embedding": emb})
    rec.send(a, "POST", "/api/v2/ingest", expect=400, headers=admin,
             json={"event_id": ev, "photo_id": "gone", "image_url": srv.url("/gone.jpg")})
    match = rec.send(a, "POST", "/api/v2/match", expect=200, json={"event_id": ev, "user_embedding": emb})
    thumb = next(m["thumbnail_url"] for m in match["matches"] if m["photo_id"] == "o1")
    rec.send(a, "GET", photo + "/thumbnail", thumb, expect=200)
    rec.send(a, "GET", photo + "/thumbnail", f"/api/v2/events/{ev}/photos/v1/thumbnail", expect=404)
    zip_path = "/api/v2/events/<event_id>/photos.zip"
    rec.send(a, "POST", zip_path, f"/api/v2/events/{ev}/photos.zip", expect=200, json={"photo_ids": ["o1", "gone"]})
    rec.send(a, "POST", zip_path, f"/api/v2/events/{ev}/photos.zip", expect=400,
             json={"photo_ids": ["a", "b", "c", "d"]})
    rec.send(a, "POST", photo + "/download", f"/api/v2/events/{ev}/photos/o1/download", expect=200, data={})
    rec.send(a, "POST", photo + "/download", f"/api/v2/events/{ev}/photos/nope/download", expect=404, data={})
    listing = "/api/v2/events/<event_id>/photos"
    rec.send(a, "GET", listing, f"/api/v2/events/{ev}/photos?status=failed", expect=200, headers=admin)
    rec.send(a, "GET", listing, f"/api/v2/events/{ev}/photos?status=bogus", expect=400, headers=admin)
    rec.send(a, "POST", photo + "/retry", f"/api/v2/events/{ev}/photos/gone/retry", expect=200, headers=admin,
             json={})
    rec.send(a, "POST", photo + "/retry", f"/api/v2/events/{ev}/photos/never/retry", expect=404, headers=admin,
             json={})
    rec.send(a, "GET", "/api/v2/events", expect=200, headers=admin)
    rec.send(a, "GET", "/api/v2/events", expect=401)
    qr = "/api/v2/events/<event_id>/qr"
    rec.send(a, "POST", qr, f"/api/v2/events/{ev}/qr", expect=200, headers=admin, json={})
    rec.send(a, "PUT", "/api/v2/events/<event_id>/access", f"/api/v2/events/{ev}/access", expect=200,
             headers=admin, json={"mode": "code", "code": "open-sesame"})
    rec.send(a, "POST", qr, f"/api/v2/events/{ev}/qr", expect=403, headers=admin, json={"code": "not-it-at-all"})
    rec.send(a, "GET", photo + "/thumbnail", thumb, expect=403)  # unsigned, no code: refused
    rec.send(a, "POST", zip_path, f"/api/v2/events/{ev}/photos.zip", expect=403, json={"photo_ids": ["o1"]})


def _validator(spec: dict, pointer: str):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install jsonschema)")
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    registry = Registry().with_resource(SPEC_URI, resource)
    return jsonschema.Draft202012Validator({"$ref": f"{SPEC_URI}#{pointer}"}, registry=registry)


def _response_entry(spec: dict, seen: Seen) -> dict:
    op = spec["paths"][openapi_path(seen.template)][seen.method.lower()]
    entry = op["responses"].get(str(seen.status))
    assert entry is not None, f"{seen.method} {seen.template} answered {seen.status}, which the spec does not list"
    if "$ref" in entry:
        entry = spec["components"]["responses"][entry["$ref"].rsplit("/", 1)[-1]]
    return entry


def test_real_responses_match_the_spec(app, observed):
    spec = build_spec(app)
    problems = []
    for seen in observed:
        entry = _response_entry(spec, seen)
        content = entry["content"]
        assert seen.mimetype in content, (seen.template, seen.status, seen.mimetype, list(content))
        if seen.mimetype != "application/json":
            continue
        schema = content["application/json"]["schema"]
        pointer = schema["$ref"][1:] if "$ref" in schema else None
        if pointer is None:
            continue
        for err in _validator(spec, pointer).iter_errors(seen.body):
            problems.append(f"{seen.method} {seen.template} {seen.status}: {err.json_path}: {err.message}")
        if seen.status >= 400:
            assert seen.body["error"]["code"] in entry["x-error-codes"], (seen.template, seen.body)
            assert seen.body["error"]["request_id"]
    assert not problems, "\n".join(problems)


def test_json_requests_match_the_documented_bodies(app, observed):
    spec = build_spec(app)
    checked = 0
    for seen in observed:
        if seen.request_json is None or seen.status >= 400:
            continue
        op = spec["paths"][openapi_path(seen.template)][seen.method.lower()]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        _validator(spec, ref[1:]).validate(seen.request_json)
        checked += 1
    assert checked >= 8


def test_every_api_operation_was_exercised(app, observed):
    spec = build_spec(app)
    got: dict[tuple[str, str], set[int]] = {}
    for seen in observed:
        got.setdefault((openapi_path(seen.template), seen.method.lower()), set()).add(seen.status)
    for path, ops in spec["paths"].items():
        for method in ops:
            statuses = got.get((path, method), set())
            assert 200 in statuses, f"no successful {method.upper()} {path} was validated"
            if path.startswith(API_PREFIXES) and path != "/health":
                assert any(s >= 400 for s in statuses), f"no error of {method.upper()} {path} was validated"
    all_statuses = {s.status for s in observed}
    assert {400, 401, 403, 404, 409, 413, 415, 422, 429, 503} <= all_statuses
