"""Access rules in one process (Flask test client, real engines, real store files):
headers, default access, code storage, client addresses, per-key and per-address limits.
The multi-worker behaviour (Redis, gunicorn) is in test_access_http.py."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from flask_backend import create_app
from flask_backend.access import codes, keys
from flask_backend.access.addresses import client_address
from flask_backend.store.db import DB_FILE
from tests.conftest import make_settings

TEMPLATES = Path(__file__).resolve().parent.parent / "flask_backend" / "templates"
DIM = 128


def _unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=DIM)
    return (v / np.linalg.norm(v)).tolist()


def _err(resp) -> tuple[int, str | None]:
    body = resp.get_json(silent=True) or {}
    return resp.status_code, body.get("error", {}).get("code")


@pytest.fixture()
def make(tmp_path, pack_dir):
    def build(**overrides):
        app = create_app(make_settings(tmp_path / "data", pack_dir, **overrides))
        return app, app.test_client()
    return build


# --------------------------------------------------------------------------- headers
def test_api_answers_carry_security_headers_and_person_answers_are_not_cached(make, faces_dir):
    _app, c = make()
    c.post("/api/v2/ingest", json={"event_id": "h", "photo_id": "p", "embedding": _unit(1)})
    responses = {
        "match": c.post("/api/v2/match", json={"event_id": "h", "user_embedding": _unit(1)}),
        "v1 match": c.post("/api/v1/match", json={"event_id": "h", "descriptor": [0.0] * 128}),
        "embed": c.post("/api/v2/embed", data={"image": ((faces_dir / "obama__1.jpg").open("rb"), "s.jpg")},
                        content_type="multipart/form-data"),
        "stats": c.get("/api/v2/events/h"),
        "health": c.get("/health"),
    }
    for name, r in responses.items():
        assert r.headers["X-Content-Type-Options"] == "nosniff", name
        assert r.headers["Referrer-Policy"] == "no-referrer", name
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"], name
        assert r.headers["X-Frame-Options"] == "DENY", name
    assert responses["match"].status_code == 200 and responses["embed"].status_code == 200
    for name in ("match", "v1 match", "embed"):
        assert responses[name].headers["Cache-Control"] == "no-store", name
    assert "no-store" not in responses["stats"].headers.get("Cache-Control", "")
    assert responses["match"].headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_pages_have_a_csp_without_inline_script_and_no_inline_code(make):
    _app, c = make()
    for path in ("/", "/e/gala", "/docs"):
        r = c.get(path)
        csp = r.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "script-src 'self'" in csp, path
        assert "frame-ancestors 'none'" in csp and r.headers["Referrer-Policy"] == "no-referrer"
        html = r.get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), f"inline script in {path}"
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=|javascript:", html, re.IGNORECASE), f"inline style/handler in {path}"
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"\son[a-z]+=|<style|\sstyle=", text, re.IGNORECASE), template.name


# --------------------------------------------------------------------------- event access
def test_default_access_code_closes_events_without_a_setting_even_unknown_ones(make):
    _app, c = make(default_event_access="code")
    c.post("/api/v2/ingest", json={"event_id": "closed", "photo_id": "p", "embedding": _unit(2)})
    for event in ("closed", "no-such-event"):  # the answer does not tell whether the event exists
        assert _err(c.post("/api/v2/match", json={"event_id": event, "user_embedding": _unit(2)})) == \
            (403, "event_code_required")
        assert _err(c.get(f"/api/v2/events/{event}")) == (403, "event_code_required")
    r = c.put("/api/v2/events/closed/access", json={"mode": "open"})
    assert r.status_code == 200 and r.get_json() == {"event_id": "closed", "mode": "open", "default": False,
                                                     "updated_at": r.get_json()["updated_at"]}
    assert c.post("/api/v2/match", json={"event_id": "closed", "user_embedding": _unit(2)}).status_code == 200
    assert c.get("/api/v2/events/closed/access").get_json()["default"] is False
    assert c.get("/api/v2/events/other/access").get_json() == {"event_id": "other", "mode": "code", "default": True,
                                                                "updated_at": None}


def test_bad_access_settings_are_refused_at_start(tmp_path, pack_dir):
    with pytest.raises(ValueError, match="FACEMATCH_DEFAULT_EVENT_ACCESS"):
        create_app(make_settings(tmp_path, pack_dir, default_event_access="closed"))
    with pytest.raises(ValueError, match="FACEMATCH_FORWARDED_ALLOW_IPS"):
        create_app(make_settings(tmp_path, pack_dir, forwarded_allow_ips="localhost"))


@pytest.mark.parametrize("body, code", [
    ({"mode": "code", "code": "12345"}, "invalid_access"),  # too short
    ({"mode": "code"}, "invalid_access"),
    ({"mode": "code", "code": 123456}, "invalid_access"),
    ({"mode": "code", "code": " padded-code "}, "invalid_access"),
    ({"mode": "open", "code": "abcdefgh"}, "invalid_access"),
    ({"mode": "secret"}, "invalid_access"),
    ({}, "invalid_access"),
])
def test_bad_access_settings_are_refused(make, body, code):
    _app, c = make()
    assert _err(c.put("/api/v2/events/ev/access", json=body)) == (400, code)
    assert c.get("/api/v2/events/ev/access").get_json()["default"] is True  # nothing was stored


def test_codes_are_stored_hashed_and_a_new_code_replaces_the_old(make, tmp_path):
    app, c = make()
    c.post("/api/v2/ingest", json={"event_id": "ev", "photo_id": "p", "embedding": _unit(3)})
    assert c.put("/api/v2/events/ev/access", json={"mode": "code", "code": "first-code-1"}).status_code == 200
    match = {"event_id": "ev", "user_embedding": _unit(3)}
    assert c.post("/api/v2/match", json=match, headers={"X-Event-Code": "first-code-1"}).status_code == 200
    assert c.post("/api/v2/match", json=match, headers={"X-Event-Code": "first-code-1"}).status_code == 200  # cached
    assert c.put("/api/v2/events/ev/access", json={"mode": "code", "code": "second-code-2"}).status_code == 200
    # the per-process cache is keyed by the stored hash: the old code stops working at once
    assert _err(c.post("/api/v2/match", json=match, headers={"X-Event-Code": "first-code-1"})) == \
        (403, "event_code_invalid")
    assert c.post("/api/v2/match", json=match, headers={"X-Event-Code": "second-code-2"}).status_code == 200
    app.extensions["facematch"].store.checkpoint()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob(DB_FILE + "*"))
    assert b"first-code-1" not in raw and b"second-code-2" not in raw
    stored = sqlite3.connect(tmp_path / "data" / DB_FILE).execute(
        "SELECT code_hash FROM event_access WHERE event_id='ev'").fetchone()[0]
    assert stored.startswith("scrypt$") and codes._kdf_matches(stored, "second-code-2")
    assert not any("second-code-2" in repr(tag) for tag in codes.VERIFIED._seen)


# --------------------------------------------------------------------------- client address
@pytest.mark.parametrize("peer, forwarded, trusted, expected", [
    ("127.0.0.1", "203.0.113.7", ("127.0.0.1",), "203.0.113.7"),
    ("127.0.0.1", "6.6.6.6, 203.0.113.7", ("127.0.0.1",), "203.0.113.7"),  # the left part is the client's word
    ("127.0.0.1", "203.0.113.7, 10.0.0.2", ("127.0.0.1", "10.0.0.0/8"), "203.0.113.7"),  # two proxies
    ("198.51.100.9", "203.0.113.7", ("127.0.0.1",), "198.51.100.9"),  # untrusted peer: header ignored
    ("127.0.0.1", "not-an-address", ("127.0.0.1",), "127.0.0.1"),
    ("10.1.2.3", "203.0.113.7", ("*",), "203.0.113.7"),
    ("::ffff:127.0.0.1", "2001:db8::1", ("127.0.0.1",), "2001:db8::1"),
])
def test_client_address_believes_forwarded_for_only_from_trusted_proxies(make, peer, forwarded, trusted, expected):
    app, _c = make()
    with app.test_request_context("/", environ_base={"REMOTE_ADDR": peer}, headers={"X-Forwarded-For": forwarded}):
        assert client_address(trusted) == expected


# --------------------------------------------------------------------------- limits
def test_search_limit_is_per_address_with_retry_after(make):
    _app, c = make(rate_limits_enabled=True, rate_limit_search="3 per minute")
    c.post("/api/v2/ingest", json={"event_id": "lim", "photo_id": "p", "embedding": _unit(4)})
    body = {"event_id": "lim", "user_embedding": _unit(4)}
    a = {"X-Forwarded-For": "203.0.113.1"}
    assert [c.post("/api/v2/match", json=body, headers=a).status_code for _ in range(3)] == [200, 200, 200]
    r = c.post("/api/v2/match", json=body, headers=a)
    assert _err(r) == (429, "rate_limited") and 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.get_json()["error"]["retry_after"] == int(r.headers["Retry-After"])
    assert c.post("/api/v2/match", json=body, headers={"X-Forwarded-For": "203.0.113.2"}).status_code == 200
    # an untrusted peer cannot buy itself a new budget with X-Forwarded-For
    far = {"REMOTE_ADDR": "198.51.100.50"}
    got = [c.post("/api/v2/match", json=body, environ_base=far,
                  headers={"X-Forwarded-For": f"203.0.113.{100 + i}"}).status_code for i in range(4)]
    assert got == [200, 200, 200, 429]


def test_ingest_limit_is_per_key(make):
    app, c = make(rate_limits_enabled=True, rate_limit_ingest="3 per minute", api_keys=("admin-a",))
    svc = app.extensions["facematch"]
    other = keys.create_key(svc, "other", "organizer", ["*"])
    same_addr = {"X-Forwarded-For": "203.0.113.9"}

    def ingest(key: str, i: int) -> int:
        return c.post("/api/v2/ingest", headers={**same_addr, "X-API-Key": key},
                      json={"event_id": "k", "photo_id": f"{key[:4]}{i}", "embedding": _unit(i)}).status_code

    assert [ingest("admin-a", i) for i in range(4)] == [200, 200, 200, 429]
    assert ingest(other, 0) == 200  # same address, another key: its own budget


def test_forget_is_rate_limited(make, faces_dir):
    _app, c = make(rate_limits_enabled=True, rate_limit_forget="2 per hour")
    c.post("/api/v2/ingest", json={"event_id": "f", "photo_id": "p", "embedding": _unit(5)})

    def forget() -> int:
        return c.post("/api/v2/events/f/forget", data={"image": ((faces_dir / "biden__1.jpg").open("rb"), "s.jpg")},
                      content_type="multipart/form-data").status_code

    assert [forget(), forget(), forget()] == [200, 200, 429]


def test_limits_keep_working_per_process_when_redis_is_unreachable(make):
    from tests.processes import free_port

    _app, c = make(rate_limits_enabled=True, rate_limit_storage=f"redis://127.0.0.1:{free_port()}/0",
                   rate_limit_search="2 per minute", rate_limit_event_code="2 per minute")
    c.post("/api/v2/ingest", json={"event_id": "down", "photo_id": "p", "embedding": _unit(8)})
    body = {"event_id": "down", "user_embedding": _unit(8)}
    assert [c.post("/api/v2/match", json=body).status_code for _ in range(3)] == [200, 200, 429]
    assert c.put("/api/v2/events/down/access", json={"mode": "code", "code": "down-code"}).status_code == 200
    wrong = {"X-Event-Code": "wrong-code", "X-Forwarded-For": "203.0.113.77"}
    assert [c.get("/api/v2/events/down", headers=wrong).status_code for _ in range(3)] == [403, 403, 429]


def test_routes_named_verify_get_the_search_limit_and_no_store(tmp_path, pack_dir):
    """The contract for routes added later (verify): the endpoint name is enough."""
    from flask import Blueprint, jsonify

    app = create_app(make_settings(tmp_path, pack_dir, rate_limits_enabled=True, rate_limit_search="2 per minute"))
    bp = Blueprint("later", __name__)
    bp.add_url_rule("/api/v9/verify", "verify", lambda: jsonify({"is_match": True}), methods=["POST"])
    app.register_blueprint(bp)
    c = app.test_client()
    got = [c.post("/api/v9/verify") for _ in range(3)]
    assert [r.status_code for r in got] == [200, 200, 429]
    assert got[0].headers["Cache-Control"] == "no-store" and got[2].headers["Retry-After"]


def test_limits_off_means_off(make):
    _app, c = make(rate_limits_enabled=True, rate_limit_search="off")
    c.post("/api/v2/ingest", json={"event_id": "off", "photo_id": "p", "embedding": _unit(6)})
    body = {"event_id": "off", "user_embedding": _unit(6)}
    assert {c.post("/api/v2/match", json=body).status_code for _ in range(30)} == {200}


def test_a_bad_limit_setting_fails_at_start(tmp_path, pack_dir):
    with pytest.raises(ValueError):
        create_app(make_settings(tmp_path, pack_dir, rate_limit_search="lots per minute"))


# --------------------------------------------------------------------------- keys and records
def test_writes_stay_open_until_a_key_exists(make):
    app, c = make()
    body = {"event_id": "w", "photo_id": "p", "embedding": _unit(7)}
    assert c.post("/api/v2/ingest", json=body).status_code == 200  # no key anywhere: open, as before
    key = keys.create_key(app.extensions["facematch"], "first", "organizer", ["w*"])
    assert _err(c.post("/api/v2/ingest", json=body)) == (401, "unauthorized")
    assert c.post("/api/v2/ingest", json=body, headers={"X-API-Key": key}).status_code == 200
    assert _err(c.delete("/api/v2/events/w", headers={"X-API-Key": key + "x"})) == (401, "unauthorized")


def test_forget_record_table_holds_no_biometric_column(make, tmp_path, faces_dir):
    _app, c = make()
    c.post("/api/v2/ingest", data={"event_id": "r", "photo_id": "o1",
                                   "image": ((faces_dir / "obama__1.jpg").open("rb"), "o1.jpg")},
           content_type="multipart/form-data")
    r = c.post("/api/v2/events/r/forget", data={"image": ((faces_dir / "obama__3.jpg").open("rb"), "s.jpg")},
               content_type="multipart/form-data")
    assert r.status_code == 200 and r.get_json()["faces_removed"]["v2"] == 1
    db = sqlite3.connect(tmp_path / "data" / DB_FILE)
    columns = {row[1]: row[2] for row in db.execute("PRAGMA table_info(forget_requests)")}
    assert columns == {"rid": "INTEGER", "event_id": "TEXT", "created_at": "REAL", "client_hash": "TEXT",
                       "faces_removed": "TEXT", "photos": "TEXT"}
    (event, client_hash, faces, photos), = db.execute(
        "SELECT event_id, client_hash, faces_removed, photos FROM forget_requests").fetchall()
    assert event == "r" and photos == '["o1"]' and re.fullmatch(r"[0-9a-f]{32}", client_hash)
    assert "127.0.0.1" not in client_hash and faces == '{"v1": 1, "v2": 1}'
