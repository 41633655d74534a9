"""Who may search and who may write, through a real gunicorn (2 workers) sharing Redis limits.

Real photos (Obama, Biden) are ingested into two events of one organizer: ``acme-open``
(open) and ``acme-priv`` (code). Keys are made with the real CLI (``python -m scripts.keys``).
Each test speaks from its own client address through X-Forwarded-For (the peer, 127.0.0.1,
is a trusted proxy by default), so their rate-limit budgets never mix.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.processes import REPO, Gunicorn, RedisServer, WorkerSessions

pytestmark = pytest.mark.slow

CODE = "gala-7Q4K"
ADMIN = "admin-test-key"
PHOTOS = ["obama__1.jpg", "obama__2.jpg", "biden__1.jpg", "group__two_people.jpg"]
SELFIE = "obama__3.jpg"  # never ingested
CODE_LIMIT, CODE_WINDOW = 4, 6  # wrong codes per address and event, seconds
FORGET_LIMIT = 8  # per address and minute
_addresses = itertools.count(10)


def new_address() -> dict[str, str]:
    """Headers that make the next requests come from a fresh client address."""
    return {"X-Forwarded-For": f"198.51.100.{next(_addresses)}"}


def keys_cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.keys", "--data-dir", str(data), *args], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=60)


@dataclass
class Site:
    url: str
    data: Path
    acme: str  # organizer key for acme-*
    globex: str  # organizer key for globex-*
    reader: str  # reader key for acme-*
    faces: Path

    def post(self, path: str, headers: dict | None = None, **kw) -> requests.Response:
        return requests.post(self.url + path, headers={"Connection": "close", **(headers or {})}, timeout=60, **kw)

    def get(self, path: str, headers: dict | None = None, **kw) -> requests.Response:
        return requests.get(self.url + path, headers={"Connection": "close", **(headers or {})}, timeout=60, **kw)

    def selfie(self) -> dict:
        return {"image": (SELFIE, (self.faces / SELFIE).read_bytes(), "image/jpeg")}


@pytest.fixture(scope="module")
def site(tmp_path_factory, pack_dir, faces_dir, redis_server: RedisServer) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("access-http")
    data = tmp / "data"
    data.mkdir()
    made = {}
    for name, role, pattern in (("acme", "organizer", "acme-*"), ("globex", "organizer", "globex-*"),
                                ("acme-board", "reader", "acme-*")):
        out = keys_cli(data, "create", "--name", name, "--events", pattern, "--role", role)
        assert out.returncode == 0, out.stderr
        made[name] = out.stdout.strip()
        assert made[name].startswith("fmk_") and made[name] not in out.stderr
    env = {"FACEMATCH_DATA_DIR": str(data), "FACEMATCH_V2_PACK": str(pack_dir), "FACEMATCH_LOG_LEVEL": "WARNING",
           "FACEMATCH_API_KEYS": ADMIN, "FACEMATCH_RATE_LIMITS_ENABLED": "1",
           "FACEMATCH_RATE_LIMIT_STORAGE": redis_server.url, "FACEMATCH_RATE_LIMIT_SEARCH": "1000 per minute",
           "FACEMATCH_RATE_LIMIT_EVENT_CODE": f"{CODE_LIMIT} per {CODE_WINDOW} seconds",
           "FACEMATCH_RATE_LIMIT_FORGET": f"{FORGET_LIMIT} per minute"}
    with Gunicorn(env, workers=2, log=tmp / "gunicorn.log") as server:
        s = Site(server.url, data, made["acme"], made["globex"], made["acme-board"], faces_dir)
        for event in ("acme-open", "acme-priv", "globex-1"):
            key = s.globex if event.startswith("globex") else s.acme
            for name in PHOTOS:
                r = s.post("/api/v2/ingest", headers={"X-API-Key": key}, data={"event_id": event, "photo_id": name},
                           files={"image": (name, (faces_dir / name).read_bytes(), "image/jpeg")})
                assert r.status_code == 200, r.text
        r = requests.put(s.url + "/api/v2/events/acme-priv/access", headers={"X-API-Key": s.acme},
                         json={"mode": "code", "code": CODE}, timeout=30)
        assert r.status_code == 200 and r.json()["mode"] == "code" and CODE not in r.text, r.text
        yield s


def _code(resp: requests.Response) -> str | None:
    body = resp.json() if resp.headers.get("Content-Type", "").startswith("application/json") else {}
    return body.get("error", {}).get("code")


def _calls(site: Site, event: str, headers: dict, fields: dict | None = None) -> dict[str, requests.Response]:
    """Every attendee endpoint once: v2 and v1 match by selfie, the event summary."""
    fields = fields or {}
    return {
        "v2 match": site.post("/api/v2/match", headers=headers, data={"event_id": event, **fields}, files=site.selfie()),
        "v1 match": site.post("/api/v1/match", headers=headers, data={"event_id": event, **fields}, files=site.selfie()),
        "stats": site.get(f"/api/v2/events/{event}", headers=headers),
    }


def test_open_event_needs_no_code(site):
    for name, r in _calls(site, "acme-open", new_address()).items():
        assert r.status_code == 200, (name, r.text)
    hits = _calls(site, "acme-open", new_address())["v2 match"].json()["matches"]
    assert {m["photo_id"] for m in hits} == {"obama__1.jpg", "obama__2.jpg", "group__two_people.jpg"}


def test_code_event_needs_its_code_across_v1_v2_and_stats(site):
    who = new_address()
    for name, r in _calls(site, "acme-priv", who).items():
        assert (r.status_code, _code(r)) == (403, "event_code_required"), (name, r.text)
    wrong = _calls(site, "acme-priv", {**who, "X-Event-Code": "not-the-code"})
    for name, r in wrong.items():
        assert (r.status_code, _code(r)) == (403, "event_code_invalid"), (name, r.text)
    right = _calls(site, "acme-priv", {**new_address(), "X-Event-Code": CODE})
    for name, r in right.items():
        assert r.status_code == 200, (name, r.text)
    assert {m["photo_id"] for m in right["v2 match"].json()["matches"]} >= {"obama__1.jpg", "obama__2.jpg"}
    assert {m["photo_id"] for m in right["v1 match"].json()["matches"]} >= {"obama__1.jpg", "obama__2.jpg"}
    by_field = _calls(site, "acme-priv", new_address(), {"event_code": CODE})
    assert by_field["v2 match"].status_code == 200 and by_field["v1 match"].status_code == 200
    # organizer tools: a key that may read the event needs no code; another organizer's key may not
    assert site.get("/api/v2/events/acme-priv", headers={"X-API-Key": site.reader}).status_code == 200
    assert site.post("/api/v2/match", headers={"X-API-Key": site.acme}, data={"event_id": "acme-priv"},
                     files=site.selfie()).status_code == 200
    r = site.post("/api/v2/match", headers={"X-API-Key": site.globex}, data={"event_id": "acme-priv"},
                  files=site.selfie())
    assert (r.status_code, _code(r)) == (403, "event_code_required")
    # the access answer gives the mode, never the code
    r = site.get("/api/v2/events/acme-priv/access", headers={"X-API-Key": site.acme})
    assert r.status_code == 200 and r.json()["mode"] == "code" and CODE not in r.text


def test_forget_on_a_code_event_needs_the_code_and_is_recorded_without_biometrics(site):
    who = new_address()
    r = site.post("/api/v2/events/acme-priv/forget", headers=who, files=site.selfie())
    assert (r.status_code, _code(r)) == (403, "event_code_required")
    r = site.post("/api/v2/events/acme-priv/forget", headers={**who, "X-Event-Code": "wrong-code"},
                  files=site.selfie())
    assert (r.status_code, _code(r)) == (403, "event_code_invalid")
    before = site.get("/api/v2/events/acme-priv/forget-requests", headers={"X-API-Key": site.acme}).json()
    r = site.post("/api/v2/events/acme-priv/forget", headers={**who, "X-Event-Code": CODE}, files=site.selfie())
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    removed = {row["photo_id"] for row in r.json()["removed"]["v2"]}
    assert removed == {"obama__1.jpg", "obama__2.jpg", "group__two_people.jpg"}
    again = site.post("/api/v2/events/acme-priv/forget", headers={**who, "X-Event-Code": CODE}, files=site.selfie())
    assert again.status_code == 200 and again.json()["faces_removed"]["v2"] == 0
    other = site.post("/api/v2/events/acme-priv/forget", headers={**new_address(), "X-Event-Code": CODE},
                      files=site.selfie())
    assert other.status_code == 200

    listed = site.get("/api/v2/events/acme-priv/forget-requests", headers={"X-API-Key": site.acme})
    assert listed.status_code == 200, listed.text
    rows = listed.json()["forget_requests"][: 3]
    assert len(listed.json()["forget_requests"]) == len(before["forget_requests"]) + 3
    newest_other, second, first = rows
    assert first["photos"] == sorted(removed) and first["faces_removed"] == r.json()["faces_removed"]
    assert second["faces_removed"]["v2"] == 0 and second["photos"] == []
    assert first["client_hash"] == second["client_hash"] != newest_other["client_hash"]
    for row in rows:
        assert set(row) == {"id", "event_id", "created_at", "client_hash", "faces_removed", "photos"}
        assert who["X-Forwarded-For"] not in listed.text and "198.51.100" not in row["client_hash"]
        assert all(isinstance(v, int) for v in row["faces_removed"].values())  # counts, no vectors, no scores
        assert all(isinstance(p, str) for p in row["photos"])
    # the reader may not read forget records; the other organizer neither
    assert site.get("/api/v2/events/acme-priv/forget-requests", headers={"X-API-Key": site.reader}).status_code == 403
    assert site.get("/api/v2/events/acme-priv/forget-requests", headers={"X-API-Key": site.globex}).status_code == 403


def test_brute_force_of_codes_gets_429_and_even_the_right_code_waits_for_the_window(site):
    who = new_address()
    for _ in range(CODE_LIMIT):
        r = site.get("/api/v2/events/acme-priv", headers={**who, "X-Event-Code": "guess-000"})
        assert (r.status_code, _code(r)) == (403, "event_code_invalid"), r.text
    r = site.get("/api/v2/events/acme-priv", headers={**who, "X-Event-Code": CODE})
    assert (r.status_code, _code(r)) == (429, "rate_limited"), r.text
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= CODE_WINDOW and r.json()["error"]["retry_after"] == retry
    r = site.post("/api/v2/match", headers={**who, "X-Event-Code": CODE}, data={"event_id": "acme-priv"},
                  files=site.selfie())
    assert r.status_code == 429, r.text  # every attendee endpoint of the event
    # another address, or the same address on another event, is not affected
    assert site.get("/api/v2/events/acme-priv", headers={**new_address(), "X-Event-Code": CODE}).status_code == 200
    assert site.get("/api/v2/events/acme-open", headers=who).status_code == 200
    time.sleep(retry + 0.5)
    r = site.get("/api/v2/events/acme-priv", headers={**who, "X-Event-Code": CODE})
    assert r.status_code == 200, r.text


def test_limits_are_shared_by_both_workers_with_redis(site):
    """The count of one address is global: exactly the limit passes, whichever worker answers.
    The two workers take turns (each asked over its own connection: new connections may all
    land on one worker on a busy box)."""
    workers = WorkerSessions(site.url, 2)
    workers.refresh()
    who = new_address()
    order = sorted(workers.by_worker) * (3 * CODE_LIMIT // 2 + 1)
    statuses = [workers.on(w, "GET", "/api/v2/events/acme-priv", headers={**who, "X-Event-Code": "guess-111"}).status_code
                for w in order[: 3 * CODE_LIMIT]]
    assert statuses == [403] * CODE_LIMIT + [429] * (2 * CODE_LIMIT)


def _forget(workers: WorkerSessions, worker: str, who: dict) -> int:
    """One forget on an event that does not exist (cheap: 404 before any face work), asked of
    ``worker`` through its own connection."""
    return workers.on(worker, "POST", "/api/v2/events/nobody-here/forget", headers=who,
                      files={"image": ("s.jpg", b"not even an image", "image/jpeg")}).status_code


def test_route_limits_are_shared_by_both_workers_with_redis(site):
    workers = WorkerSessions(site.url, 2)
    workers.refresh()
    who, order = new_address(), sorted(workers.by_worker) * (3 * FORGET_LIMIT // 2)
    statuses = [_forget(workers, w, who) for w in order]  # the two workers take turns
    assert statuses == [404] * FORGET_LIMIT + [429] * (2 * FORGET_LIMIT)


def test_memory_storage_counts_per_worker(tmp_path, pack_dir):
    """What the README warns about: with memory:// each of the 2 workers allows the limit."""
    env = {"FACEMATCH_DATA_DIR": str(tmp_path / "data"), "FACEMATCH_V2_PACK": str(pack_dir),
           "FACEMATCH_WEB_WARMUP": "0", "FACEMATCH_RATE_LIMITS_ENABLED": "1", "FACEMATCH_RATE_LIMIT_FORGET": "3 per minute"}
    with Gunicorn(env, workers=2, log=tmp_path / "gunicorn.log") as server:
        workers = WorkerSessions(server.url, 2)
        workers.refresh()
        who = new_address()
        per_worker = {w: [_forget(workers, w, who) for _ in range(5)] for w in sorted(workers.by_worker)}
    assert per_worker == {w: [404, 404, 404, 429, 429] for w in per_worker}, per_worker


def test_scoped_key_on_another_organizers_event_is_forbidden(site):
    acme = {"X-API-Key": site.acme}
    name = PHOTOS[0]
    image = {"image": (name, (site.faces / name).read_bytes(), "image/jpeg")}
    calls = {
        "ingest": lambda: site.post("/api/v2/ingest", headers=acme, data={"event_id": "globex-1", "photo_id": "x"},
                                    files=image),
        "ingest v1": lambda: site.post("/api/v1/ingest", headers=acme, data={"event_id": "globex-1", "photo_id": "x"},
                                       files=image),
        "delete photo": lambda: requests.delete(site.url + f"/api/v2/events/globex-1/photos/{name}", headers=acme,
                                                timeout=30),
        "delete event": lambda: requests.delete(site.url + "/api/v2/events/globex-1", headers=acme, timeout=30),
        "set access": lambda: requests.put(site.url + "/api/v2/events/globex-1/access", headers=acme,
                                           json={"mode": "open"}, timeout=30),
        "read access": lambda: site.get("/api/v2/events/globex-1/access", headers=acme),
        "stats": lambda: site.get("/api/v2/events/globex-1", headers=acme),
    }
    for what, call in calls.items():
        r = call()
        assert (r.status_code, _code(r)) == (403, "forbidden"), (what, r.text)
    summary = site.get("/api/v2/events/globex-1", headers={"X-API-Key": site.globex}).json()
    assert summary["photos"] == len(PHOTOS)  # nothing was deleted
    # the reader only reads stats
    reader = {"X-API-Key": site.reader}
    assert site.get("/api/v2/events/acme-open", headers=reader).status_code == 200
    r = site.post("/api/v2/ingest", headers=reader, json={"event_id": "acme-open", "photo_id": "y",
                                                          "embedding": [0.1] * 128})
    assert (r.status_code, _code(r)) == (403, "forbidden")
    r = requests.put(site.url + "/api/v2/events/acme-open/access", headers=reader, json={"mode": "open"}, timeout=30)
    assert (r.status_code, _code(r)) == (403, "forbidden")
    # no key at all: 401 (keys exist), and the admin key may do everything
    r = site.post("/api/v2/ingest", json={"event_id": "acme-open", "photo_id": "y", "embedding": [0.1] * 128})
    assert (r.status_code, _code(r)) == (401, "unauthorized")
    assert site.get("/api/v2/events/globex-1/access", headers={"X-API-Key": ADMIN}).status_code == 200


def test_revoked_key_gets_401_on_every_worker(site):
    out = keys_cli(site.data, "create", "--name", "temp", "--events", "acme-*")
    key = {"X-API-Key": out.stdout.strip()}
    assert site.get("/api/v2/events/acme-open/access", headers=key).status_code == 200
    listed = keys_cli(site.data, "list")
    assert "temp\torganizer\tacme-*" in listed.stdout and out.stdout.strip() not in listed.stdout
    assert keys_cli(site.data, "revoke", "temp").returncode == 0
    answers = WorkerSessions(site.url, 2).each("GET", "/api/v2/events/acme-open/access", headers=key)
    assert len(answers) == 2
    for r in answers.values():
        assert (r.status_code, _code(r)) == (401, "unauthorized"), r.text
    assert keys_cli(site.data, "revoke", "temp").returncode == 1  # already revoked
