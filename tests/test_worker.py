"""The photo worker as real processes against the Firestore emulator: two workers share the
work exactly once, kill -9 leaves leases that are taken over, SIGTERM drains or gives back."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from datetime import UTC, datetime

from flask_backend.services import Services
from tests.conftest import make_settings
from tests.firestore_fixtures import (
    service_env,
    start_worker,
    wait_for,
)
from tests.http_fixtures import LocalHTTPServer, Reply

PHOTOS = ["obama__1.jpg", "biden__1.jpg", "kit_harington__1.jpeg", "rose_leslie__1.jpg", "alex_lacamoire__2.jpg",
          "obama__3.jpg"]
JPEG = {"Content-Type": "image/jpeg"}
BASE_ARGS = ["--poll-interval", "1", "--compute-threads", "1", "--summary-interval", "0"]


def _docs(db, event: str) -> dict[str, dict]:
    return {d.id: d.to_dict() for d in db.photos(event).stream()}


def test_two_workers_process_each_photo_exactly_once(firestore_db, tmp_path, faces_dir, pack_dir, procs):
    db = firestore_db
    env = service_env(db, tmp_path / "data", pack_dir, FACEMATCH_INGEST_SPACES="v2")
    with LocalHTTPServer() as srv:
        paths = []
        for i in range(12):
            path = f"/p{i}.jpg"
            srv.set(path, Reply(headers=JPEG, body=(faces_dir / PHOTOS[i % len(PHOTOS)]).read_bytes(), delay=0.8))
            db.photos("ev").document(f"p{i}").set({"url": srv.url(path) + "?token=s3cret"})
            paths.append(path)
        srv.set("/gone.jpg", 404)
        db.photos("ev").document("gone").set({"url": srv.url("/gone.jpg")})

        args = [*BASE_ARGS, "--once", "--concurrency", "2", "--max-attempts", "2", "--retry-base", "0.5"]
        for name in ("A", "B"):
            procs.append(start_worker(env, tmp_path / f"{name}.log", *args, "--worker-id", name))
        for proc in procs:
            assert proc.wait(timeout=120) == 0, (tmp_path / "A.log").read_text()[-3000:]

        assert {p: srv.hits(p) for p in paths} == {p: 1 for p in paths}  # each photo downloaded once
        assert srv.hits("/gone.jpg") == 2  # retried once after backoff, then given up
    docs = _docs(db, "ev")
    good = {k: v for k, v in docs.items() if k != "gone"}
    assert all(d["faceStatus"] == "done" and d["faceAttempts"] == 1 and d["faceCount"] == 1 for d in good.values())
    assert {d["faceWorker"] for d in good.values()} == {"A", "B"}  # both took a share
    assert docs["gone"]["faceStatus"] == "failed" and docs["gone"]["faceAttempts"] == 2
    assert "404" in docs["gone"]["faceError"]
    store = Services(make_settings(tmp_path / "data", pack_dir)).store
    assert len(store.list_photos("ev", "v2")) == 12
    logs = (tmp_path / "A.log").read_text() + (tmp_path / "B.log").read_text()
    assert "status=done" in logs and "s3cret" not in logs  # one line per photo, never a token


def test_kill9_leases_are_taken_over(firestore_db, tmp_path, faces_dir, pack_dir, procs):
    db = firestore_db
    env = service_env(db, tmp_path / "data", pack_dir, FACEMATCH_INGEST_SPACES="v2")
    with LocalHTTPServer() as srv:
        for i in range(3):
            body = (faces_dir / PHOTOS[i]).read_bytes()
            # the first download hangs (the victim is killed meanwhile), later ones answer at once
            srv.sequence(f"/k{i}.jpg", [Reply(headers=JPEG, body=body, delay=120), Reply(headers=JPEG, body=body)])
            db.photos("ev").document(f"k{i}").set({"url": srv.url(f"/k{i}.jpg")})
        lease = ["--lease-seconds", "3"]
        victim = start_worker(env, tmp_path / "victim.log", *BASE_ARGS, *lease, "--worker-id", "victim")
        procs.append(victim)
        wait_for(lambda: all(d.get("faceWorker") == "victim" and d.get("faceStatus") == "processing"
                             for d in _docs(db, "ev").values()), 60, what="the victim to claim every photo")
        claimed = {k: d["faceLeaseUntil"] for k, d in _docs(db, "ev").items()}
        time.sleep(2 * 3 + 1)  # past twice the lease: without renewal every lease would have expired
        renewed = {k: d["faceLeaseUntil"] for k, d in _docs(db, "ev").items()}
        assert all(renewed[k] > claimed[k] for k in claimed), (claimed, renewed)  # moved forward
        assert all(until > datetime.now(UTC) for until in renewed.values())  # and still held
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        dead_until = {k: d["faceLeaseUntil"] for k, d in _docs(db, "ev").items()}  # its last renewal

        heir = start_worker(env, tmp_path / "heir.log", *BASE_ARGS, *lease, "--once", "--worker-id", "heir")
        procs.append(heir)
        assert heir.wait(timeout=90) == 0, (tmp_path / "heir.log").read_text()[-3000:]
        assert all(srv.hits(f"/k{i}.jpg") == 2 for i in range(3))
        # the heir's download (after its claim) came only once the dead worker's lease had run out
        for i in range(3):
            victim_get, heir_get = srv.records(f"/k{i}.jpg")
            assert heir_get.wall >= dead_until[f"k{i}"].timestamp() > victim_get.wall, (heir_get.wall, dead_until)
    for doc in _docs(db, "ev").values():
        assert doc["faceStatus"] == "done" and doc["faceWorker"] == "heir" and doc["faceAttempts"] == 2, doc


def test_permanent_failures_fail_at_once_retryable_ones_back_off_doubling(firestore_db, tmp_path, pack_dir, procs):
    db = firestore_db
    # one download per attempt: the fetcher's own retries off
    env = service_env(db, tmp_path / "data", pack_dir, FACEMATCH_INGEST_SPACES="v2", FACEMATCH_FETCH_RETRIES="0")
    with LocalHTTPServer() as srv:
        srv.set("/page", Reply(headers={"Content-Type": "text/html"}, body=b"<html>sign in</html>"))
        srv.set("/busy.jpg", 503)
        db.photos("ev").document("page").set({"url": srv.url("/page")})
        db.photos("ev").document("busy").set({"url": srv.url("/busy.jpg")})
        worker = start_worker(env, tmp_path / "w.log", *BASE_ARGS, "--once", "--max-attempts", "3",
                              "--retry-base", "2")
        procs.append(worker)
        pending: dict[int, float] = {}  # attempt -> faceRetryAt minus the time that status was written
        while worker.poll() is None:
            snap = db.photos("ev").document("busy").get()
            doc = snap.to_dict()
            if doc.get("faceStatus") == "pending" and doc["faceAttempts"] not in pending:
                pending[doc["faceAttempts"]] = (doc["faceRetryAt"] - snap.update_time).total_seconds()
            time.sleep(0.1)
        assert worker.returncode == 0, (tmp_path / "w.log").read_text()[-3000:]
        assert srv.hits("/page") == 1 and srv.hits("/busy.jpg") == 3
    page = db.photo("ev", "page")
    assert page["faceStatus"] == "failed" and page["faceAttempts"] == 1 and page["faceRetryAt"] is None
    assert page["faceError"].startswith("unsupported_image")
    busy = db.photo("ev", "busy")
    assert busy["faceStatus"] == "failed" and busy["faceAttempts"] == 3 and "503" in busy["faceError"]
    # the backoff after attempt n is retry-base * 2**(n-1), measured from the status write
    assert set(pending) == {1, 2}, pending
    assert 2.0 - 1.0 < pending[1] <= 2.0 + 0.05, pending
    assert 4.0 - 1.0 < pending[2] <= 4.0 + 0.05, pending


def _notify_socket(tmp_path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    return sock, path


def _messages(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


def test_sigterm_drains_in_flight_or_gives_back(firestore_db, tmp_path, faces_dir, pack_dir, procs):
    db = firestore_db
    env = service_env(db, tmp_path / "data", pack_dir, FACEMATCH_INGEST_SPACES="v2")
    sock, sock_path = _notify_socket(tmp_path)
    body = (faces_dir / "obama__1.jpg").read_bytes()
    with LocalHTTPServer() as srv:
        queued = [f"/q{i}.jpg" for i in range(4)]  # more photos than --concurrency 1
        for path in ["/slow.jpg", *queued]:
            srv.set(path, Reply(headers=JPEG, body=body, delay=3))
            db.photos("ev-drain").document(path[1:-4]).set({"url": srv.url(path)})
        srv.set("/stuck.jpg", Reply(headers=JPEG, body=body, delay=120))
        db.photos("ev-give").document("stuck").set({"url": srv.url("/stuck.jpg")})
        beat = tmp_path / "heartbeat.json"
        drainer = start_worker({**env, "NOTIFY_SOCKET": sock_path}, tmp_path / "drainer.log", *BASE_ARGS,
                               "--event-id", "ev-drain", "--heartbeat-file", str(beat), "--drain-timeout", "30",
                               "--concurrency", "1")
        giver = start_worker(env, tmp_path / "giver.log", *BASE_ARGS, "--event-id", "ev-give", "--drain-timeout", "1")
        procs.extend([drainer, giver])
        drain_paths = ["/slow.jpg", *queued]
        wait_for(lambda: any(srv.hits(p) for p in drain_paths) and srv.hits("/stuck.jpg"), 60,
                 what="both workers' first downloads to start")
        first_path = next(r.path for r in srv.records() if r.path in drain_paths)
        assert db.photo("ev-drain", first_path[1:-4])["faceStatus"] == "processing"
        drainer.send_signal(signal.SIGTERM)
        giver.send_signal(signal.SIGTERM)
        assert giver.wait(timeout=20) == 0
        # gave up after --drain-timeout: its download (120 s) is still being served
        assert not srv.records("/stuck.jpg")[0].done.is_set()
        assert drainer.wait(timeout=30) == 0

        started = [r.path for r in srv.records() if r.path in drain_paths]
        urls = {p: srv.url(p) for p in drain_paths}
    assert started == [first_path]  # one fetch slot: the others were queued (or not yet submitted)
    first = db.photo("ev-drain", first_path[1:-4])
    assert first["faceStatus"] == "done" and first["faceCount"] == 1  # finished before exiting
    for path in set(drain_paths) - {first_path}:  # never started: never claimed either
        assert db.photo("ev-drain", path[1:-4]) == {"url": urls[path]}, path
    stuck = db.photo("ev-give", "stuck")
    assert stuck["faceStatus"] == "pending" and stuck["faceLeaseOwner"] is None and stuck["faceAttempts"] == 0
    messages = "\n".join(_messages(sock))
    assert "READY=1" in messages and "STOPPING=1" in messages and "WATCHDOG=1" in messages
    state = json.loads(beat.read_text())
    assert state["pid"] == drainer.pid and state["counts"]["done"] == 1 and state["stopping"] is True
    assert not os.path.exists(str(beat) + ".tmp")


def test_mirror_deletes_removes_photos_deleted_from_firestore(firestore_db, tmp_path, faces_dir, pack_dir, procs):
    db = firestore_db
    env = service_env(db, tmp_path / "data", pack_dir, FACEMATCH_INGEST_SPACES="v2")
    args = [*BASE_ARGS, "--once"]
    with LocalHTTPServer() as srv:
        for name in PHOTOS[:3]:
            srv.set(f"/{name}", Reply(headers=JPEG, body=(faces_dir / name).read_bytes()))
            db.photos("ev").document(name).set({"url": srv.url(f"/{name}")})
        first = start_worker(env, tmp_path / "w1.log", *args)
        procs.append(first)
        assert first.wait(timeout=120) == 0, (tmp_path / "w1.log").read_text()[-3000:]
        store = Services(make_settings(tmp_path / "data", pack_dir)).store
        assert len(store.list_photos("ev", "v2")) == 3
        db.photos("ev").document(PHOTOS[0]).delete()
        # without the flag nothing is removed; with it, the deleted photo's embeddings go
        plain = start_worker(env, tmp_path / "w2.log", *args)
        procs.append(plain)
        assert plain.wait(timeout=120) == 0
        assert len(store.list_photos("ev", "v2")) == 3
        mirror = start_worker(env, tmp_path / "w3.log", *args, "--mirror-deletes")
        procs.append(mirror)
        assert mirror.wait(timeout=120) == 0, (tmp_path / "w3.log").read_text()[-3000:]
    assert {p.photo_id for p in store.list_photos("ev")} == set(PHOTOS[1:3])
    assert "status=deleted" in (tmp_path / "w3.log").read_text()


def test_worker_and_cli_refuse_private_urls_by_default(firestore_db, tmp_path, faces_dir, pack_dir, procs):
    """Every other test allows loopback URLs (its photo server); with the defaults the
    worker and the CLI refuse them before connecting."""
    from click.testing import CliRunner

    from scripts.bulk_ingest import main as bulk_ingest

    db = firestore_db
    env = service_env(db, tmp_path / "data", pack_dir, FACEMATCH_INGEST_SPACES="v2")
    del env["FACEMATCH_ALLOW_PRIVATE_URLS"]  # the default
    with LocalHTTPServer() as srv:
        srv.set("/a.jpg", Reply(headers=JPEG, body=(faces_dir / "obama__1.jpg").read_bytes()))
        db.photos("ev-w").document("a").set({"url": srv.url("/a.jpg")})
        db.photos("ev-c").document("a").set({"url": srv.url("/a.jpg").replace("127.0.0.1", "localhost")})
        worker = start_worker(env, tmp_path / "w.log", *BASE_ARGS, "--once", "--event-id", "ev-w")
        procs.append(worker)
        assert worker.wait(timeout=120) == 0, (tmp_path / "w.log").read_text()[-3000:]
        cli_env = {**env, "FACEMATCH_ALLOW_PRIVATE_URLS": ""}  # CliRunner adds to this process's environment
        result = CliRunner().invoke(bulk_ingest, ["--event-id", "ev-c", "--no-progress"], env=cli_env,
                                    catch_exceptions=False)
        assert result.exit_code == 1, result.output
        assert srv.hits() == 0  # refused before any connection
    for event in ("ev-w", "ev-c"):
        doc = db.photo(event, "a")
        assert doc["faceStatus"] == "failed" and doc["faceAttempts"] == 1, doc
        assert doc["faceError"].startswith("forbidden_url: "), doc
