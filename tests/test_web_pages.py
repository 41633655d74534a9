"""The selfie page, /docs and CORS, through the Flask test client (the browser tests drive them for real)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flask_backend import create_app
from flask_backend.config import Settings
from flask_backend.openapi import build_spec
from flask_backend.web.cors import CorsPolicy
from tests.conftest import make_settings

STATIC = Path(__file__).resolve().parent.parent / "flask_backend" / "static"
# HTML + JS + CSS of the selfie page, uncompressed (40 KB before the photo viewer, which adds ~7 KB;
# the whole page is ~13 KB gzipped). The photos themselves: test_browser_experience.py measures them.
PAGE_BUDGET_BYTES = 48_000


@pytest.fixture(scope="module")
def cors_client(tmp_path_factory, pack_dir):
    settings = make_settings(tmp_path_factory.mktemp("cors"), pack_dir,
                             cors_origins=("https://photos.example.org", "http://127.0.0.1:8081/"))
    return create_app(settings).test_client()


def _assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"?]+)', html)


def test_selfie_page(client):
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert 'type="file"' in html and 'accept="image/*"' in html and 'capture="user"' in html
    assert 'name="viewport"' in html and "never stored" in html
    assert sorted(_assets(html)) == ["/static/facematch.js", "/static/selfie.css", "/static/selfie.js",
                                     "/static/viewer.css", "/static/viewer.js"]
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["Referrer-Policy"] == "no-referrer"


def test_event_page_escapes_the_event_id(client):
    r = client.get("/e/summer-gala")
    assert r.status_code == 200 and 'data-event-id="summer-gala"' in r.get_data(as_text=True)
    r = client.get('/e/"><img src=x onerror=alert(1)>')
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert client.get("/e/" + "x" * 300).status_code == 404


def test_assets_are_served_and_small(client):
    html = client.get("/e/x").get_data()
    total = len(html)
    for path in _assets(html.decode()):
        r = client.get(path)
        assert r.status_code == 200, path
        total += len(r.get_data())
    assert total < PAGE_BUDGET_BYTES, f"selfie page weighs {total} bytes"


def test_no_external_resources_and_no_storage():
    """Offline machine, privacy: nothing from a CDN, and the selfie is never persisted."""
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", text), path.name
        # The organizer key (admin.js) is kept for the tab in sessionStorage, by design; nothing else stores.
        banned = ("localStorage", "indexedDB") + (() if path.name == "admin.js" else ("sessionStorage",))
        assert not any(word in text for word in banned), path.name
    templates = STATIC.parent / "templates"
    for path in templates.iterdir():
        assert "http://" not in path.read_text() and "https://" not in path.read_text(), path.name


def test_selfie_is_resized_before_upload():
    js = (STATIC / "facematch.js").read_text()
    assert "MAX_SIDE = 1280" in js and "resizeImage" in (STATIC / "selfie.js").read_text()


def test_openapi_json_and_docs(client, app):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1") and spec == build_spec(app)
    html = client.get("/docs").get_data(as_text=True)
    for path in spec["paths"]:
        assert f"<code>{path}</code>" in html, path
    assert "no_face" in html and "engine_not_ready" in html and 'id="schema-MatchV2Response"' in html


# --------------------------------------------------------------------------- CORS
PREFLIGHT = {"Access-Control-Request-Method": "POST"}


def test_no_origin_is_allowed_by_default(client):
    r = client.options("/api/v2/match", headers={"Origin": "https://photos.example.org",
                                                 "Access-Control-Request-Headers": "content-type", **PREFLIGHT})
    assert r.status_code == 204 and "Access-Control-Allow-Origin" not in r.headers
    r = client.get("/health", headers={"Origin": "https://photos.example.org"})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    assert "Origin" in r.headers.get("Vary", "")


@pytest.mark.parametrize("headers", ["content-type", "content-type, x-api-key", ""])
def test_preflight_for_configured_origin(cors_client, headers):
    """JSON (content-type) and multipart with an API key both need a preflight."""
    r = cors_client.options("/api/v2/ingest", headers={"Origin": "https://photos.example.org",
                                                       "Access-Control-Request-Headers": headers, **PREFLIGHT})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://photos.example.org"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    allowed = r.headers["Access-Control-Allow-Headers"].lower()
    assert "content-type" in allowed and "x-api-key" in allowed
    assert int(r.headers["Access-Control-Max-Age"]) > 0


def test_configured_origin_with_trailing_slash_and_case(cors_client):
    r = cors_client.get("/health", headers={"Origin": "http://127.0.0.1:8081"})
    assert r.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8081"
    r = cors_client.get("/health", headers={"Origin": "HTTPS://PHOTOS.EXAMPLE.ORG"})
    assert r.headers["Access-Control-Allow-Origin"] == "HTTPS://PHOTOS.EXAMPLE.ORG"


def test_other_origins_and_headers_are_refused(cors_client):
    for origin in ("https://evil.example", "null", "http://127.0.0.1:8082"):
        r = cors_client.options("/api/v2/match", headers={"Origin": origin, **PREFLIGHT})
        assert "Access-Control-Allow-Origin" not in r.headers, origin
        assert "Access-Control-Allow-Origin" not in cors_client.get("/health", headers={"Origin": origin}).headers
    r = cors_client.options("/api/v2/match", headers={"Origin": "https://photos.example.org",
                                                      "Access-Control-Request-Headers": "x-secret", **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_errors_carry_cors_headers_too(cors_client):
    """A browser can only read the JSON error (e.g. no_face) if the error response allows the origin."""
    r = cors_client.post("/api/v2/match", json={}, headers={"Origin": "https://photos.example.org"})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "missing_field"
    assert r.headers["Access-Control-Allow-Origin"] == "https://photos.example.org"
    assert "X-Request-ID" in r.headers["Access-Control-Expose-Headers"]


def test_plain_options_is_not_a_preflight(cors_client):
    r = cors_client.options("/api/v2/match")
    assert r.status_code == 200 and "POST" in r.headers["Allow"]


def test_wildcard_policy():
    policy = CorsPolicy(["*"])
    assert policy.allows("https://anything.example") and not policy.allows("null") and not policy.allows(None)
    assert policy.headers_for("https://anything.example")["Access-Control-Allow-Origin"] == "*"
    assert not CorsPolicy([]).allows("https://anything.example")


def test_origins_come_from_the_environment(tmp_path, pack_dir):
    env = {"FACEMATCH_CORS_ORIGINS": "https://a.example, https://b.example", "FACEMATCH_DATA_DIR": str(tmp_path)}
    c = create_app(Settings.from_env(env, v2_pack=str(pack_dir))).test_client()
    for origin in ("https://a.example", "https://b.example"):
        assert c.get("/health", headers={"Origin": origin}).headers["Access-Control-Allow-Origin"] == origin
    assert "Access-Control-Allow-Origin" not in c.get("/health", headers={"Origin": "https://c.example"}).headers


def test_admin_page_has_the_page_csp_and_no_inline_script(client):
    r = client.get("/admin")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert sorted(_assets(html)) == ["/static/admin.css", "/static/admin.js", "/static/selfie.css"]
    for path in (STATIC.parent / "templates").iterdir():  # the CSP would block these anyway: keep them out
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path.name
        assert not re.search(r"\son[a-z]+\s*=", text), path.name
