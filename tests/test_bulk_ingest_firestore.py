"""The bulk CLI against Google's Firestore emulator (real firebase-admin client), photos
served by a local HTTP server, the real pipeline and store."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from click.testing import CliRunner

from flask_backend.services import Services
from flask_backend.sources.claims import plan
from flask_backend.sources.firestore import FirestoreConfigError, Layout
from scripts.bulk_ingest import main as bulk_ingest
from tests.conftest import make_settings
from tests.firestore_fixtures import (
    PYTHON,
    REPO,
    service_env,
    stop_process,
    wait_for,
)
from tests.http_fixtures import LocalHTTPServer, Reply

GOOD = {"e1": ["obama__1.jpg", "biden__1.jpg", "group__two_people.jpg"], "e2": ["kit_harington__1.jpeg", "rose_leslie__1.jpg"]}
URL_FIELDS = ["url", "imageUrl", "secure_url"]  # organizers' documents differ


def _cli(args: list[str], db, data_dir: Path, pack: Path):
    env = {**db.env(), "FACEMATCH_DATA_DIR": str(data_dir), "FACEMATCH_V2_PACK": str(pack),
           "FACEMATCH_ALLOW_PRIVATE_URLS": "1", "FACEMATCH_INGEST_SPACES": "v2"}
    return CliRunner().invoke(bulk_ingest, [*args, "--no-progress"], env=env, catch_exceptions=False)


def _seed(db, srv: LocalHTTPServer) -> None:
    for event, names in GOOD.items():
        for i, name in enumerate(names):
            db.photos(event).document(name.split(".")[0]).set(
                {URL_FIELDS[i % 3]: srv.url("/" + name) + "?token=s3cret", "uploadedBy": "organizer"})
    db.photos("e1").document("gone").set({"url": srv.url("/gone.jpg")})
    db.photos("e1").document("page").set({"url": srv.url("/page")})
    db.photos("e1").document("uploading").set({"uploadedBy": "organizer"})  # no URL yet


def test_event_then_all_events_then_noop_then_retry(firestore_db, tmp_path, faces_dir, pack_dir):
    db, data = firestore_db, tmp_path / "data"
    with LocalHTTPServer(directory=faces_dir) as srv:
        srv.set("/gone.jpg", 404)
        srv.set("/page", Reply(headers={"Content-Type": "text/html"}, body=b"<html>sign in</html>"))
        _seed(db, srv)

        first = _cli(["--event-id", "e1", "--concurrency", "3"], db, data, pack_dir)
        assert first.exit_code == 1, first.output
        assert "3 indexed" in first.output and "2 failed" in first.output
        for name in GOOD["e1"]:
            doc = db.photo("e1", name.split(".")[0])
            assert doc["faceStatus"] == "done" and doc["faceAttempts"] == 1, doc
            assert doc["faceLeaseOwner"] is None and doc["faceError"] is None
            assert doc["faceIndexedAt"] is not None and doc["uploadedBy"] == "organizer"
        assert db.photo("e1", "group__two_people")["faceCount"] == 2
        gone, page = db.photo("e1", "gone"), db.photo("e1", "page")
        assert gone["faceStatus"] == "failed" and "404" in gone["faceError"]
        assert page["faceStatus"] == "failed" and page["faceError"].startswith("unsupported_image")
        assert "faceStatus" not in db.photo("e1", "uploading")  # nothing to do without a URL
        assert "faceStatus" not in db.photo("e2", "rose_leslie__1")  # other events untouched

        second = _cli(["--all-events"], db, data, pack_dir)
        assert second.exit_code == 0, second.output  # earlier failures are skipped, not failed again
        assert "2 indexed" in second.output and "failed before 2" in second.output
        assert db.photo("e2", "kit_harington__1")["faceCount"] == 1

        hits = srv.hits()
        times = {d.id: d.update_time for e in GOOD for d in db.photos(e).stream()}
        third = _cli(["--all-events"], db, data, pack_dir)
        assert third.exit_code == 0, third.output
        assert "0 indexed" in third.output and "already indexed 5" in third.output
        assert srv.hits() == hits  # nothing downloaded
        assert {d.id: d.update_time for e in GOOD for d in db.photos(e).stream()} == times  # nothing written

        srv.set("/gone.jpg", Reply(headers={"Content-Type": "image/jpeg"}, body=(faces_dir / "obama__3.jpg").read_bytes()))
        fourth = _cli(["--event-id", "e1", "--retry-failed"], db, data, pack_dir)
        assert fourth.exit_code == 1, fourth.output  # the HTML page still fails
        gone = db.photo("e1", "gone")
        assert gone["faceStatus"] == "done" and gone["faceAttempts"] == 2 and gone["faceError"] is None

    store = Services(make_settings(data, pack_dir)).store
    assert {p.photo_id for p in store.list_photos("e1", "v2")} == {"obama__1", "biden__1", "group__two_people", "gone"}
    assert store.photo_state("e1", "obama__1", "v2").source_url.endswith("?token=s3cret")


def test_store_is_the_truth(firestore_db, tmp_path, faces_dir, pack_dir):
    """A wiped store is refilled even though Firestore says done; a photo stored before a
    crash (status never written) only gets its status, no second ingest."""
    db = firestore_db
    with LocalHTTPServer(directory=faces_dir) as srv:
        db.photos("ev").document("a").set({"url": srv.url("/obama__1.jpg")})
        assert _cli(["--event-id", "ev"], db, tmp_path / "d1", pack_dir).exit_code == 0
        assert srv.hits() == 1
        result = _cli(["--event-id", "ev"], db, tmp_path / "d2", pack_dir)  # new, empty store
        assert result.exit_code == 0 and "1 indexed" in result.output, result.output
        assert srv.hits() == 2

        db.photos("ev").document("a").update({"faceStatus": "processing", "faceLeaseUntil": None})
        result = _cli(["--event-id", "ev"], db, tmp_path / "d2", pack_dir)
        assert result.exit_code == 0, result.output
        assert srv.hits() == 2  # not downloaded again
        assert db.photo("ev", "a")["faceStatus"] == "done"


def test_layout_and_plan_rules():
    assert Layout.parse("events/{event_id}/photos/{photo_id}") == Layout("events", "photos")
    assert Layout.parse("orgs/acme/events/{event_id}/pics/{photo_id}") == Layout("orgs/acme/events", "pics")
    for bad in ("events/{photo_id}", "events/x/photos/{photo_id}", "a/b/{event_id}/p/{photo_id}"):
        try:
            Layout.parse(bad)
        except FirestoreConfigError:
            continue
        raise AssertionError(f"{bad!r} was accepted")

    from datetime import UTC, datetime, timedelta

    from flask_backend.sources import url_hash

    now = datetime(2026, 1, 1, tzinfo=UTC)
    url = "https://cdn.example/p.jpg"
    done = {"faceStatus": "done", "faceSource": url_hash(url)}
    assert plan({}, url, now, indexed=False) == (True, "new")
    assert plan({}, None, now, indexed=False) == (False, "no_url")
    assert plan(done, url, now, indexed=True) == (False, "already_indexed")
    assert plan(done, url, now, indexed=False) == (True, "not_in_store")
    assert plan(done, url + "?v=2", now, indexed=True) == (True, "changed")
    leased = {"faceStatus": "processing", "faceLeaseUntil": now + timedelta(seconds=5)}
    assert plan(leased, url, now, indexed=False) == (False, "leased")
    assert plan(leased, url, now + timedelta(seconds=6), indexed=False) == (True, "lease_expired")
    failed = {**done, "faceStatus": "failed"}
    assert plan(failed, url, now, indexed=False) == (False, "failed_before")
    assert plan(failed, url, now, indexed=False, retry_failed=True) == (True, "retry_failed")
    backoff = {**done, "faceStatus": "pending", "faceAttempts": 1, "faceRetryAt": now + timedelta(seconds=30)}
    assert plan(backoff, url, now, indexed=False) == (False, "backoff")
    assert plan(backoff, url, now, indexed=False, honor_backoff=False) == (True, "retry")
    assert plan(backoff, url, now + timedelta(seconds=31), indexed=False) == (True, "retry")


def test_ctrl_c_finishes_photos_in_flight_and_loses_nothing(firestore_db, tmp_path, faces_dir, pack_dir):
    db = firestore_db
    env = service_env(db, tmp_path / "data", pack_dir, FACEMATCH_INGEST_SPACES="v2")
    names = ["obama__1.jpg", "biden__1.jpg", "kit_harington__1.jpeg", "rose_leslie__1.jpg", "obama__3.jpg",
             "alex_lacamoire__2.jpg"]
    cmd = [str(PYTHON), "-m", "scripts.bulk_ingest", "--event-id", "ev", "--concurrency", "2",
           "--compute-threads", "1", "--no-progress"]
    with LocalHTTPServer() as srv:
        for i, name in enumerate(names):
            srv.set(f"/{i}.jpg", Reply(headers={"Content-Type": "image/jpeg"}, body=(faces_dir / name).read_bytes(),
                                       delay=2))
            db.photos("ev").document(f"p{i}").set({"url": srv.url(f"/{i}.jpg")})
        cli = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: srv.hits() >= 2, 60, what="two downloads in flight")
            cli.send_signal(signal.SIGINT)
            out, _ = cli.communicate(timeout=60)
        finally:
            stop_process(cli)
        assert cli.returncode == 130, out
        assert "stopping after the 2 photo(s) in flight" in out and "2 indexed" in out, out
        assert "skipped: stopped 4" in out, out
        started = {r.path for r in srv.records()}
        docs = {d.id: d.to_dict() for d in db.photos("ev").stream()}
        done = {f"/{k[1:]}.jpg" for k, d in docs.items() if d.get("faceStatus") == "done"}
        assert done == started and len(done) == 2  # finished what it had started ...
        assert all("faceStatus" not in d for k, d in docs.items() if f"/{k[1:]}.jpg" not in started)  # ... no more

        rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert rerun.returncode == 0 and "4 indexed" in rerun.stdout, rerun.stdout + rerun.stderr
        assert all(srv.hits(p) == 1 for p in started)
    assert all(d.to_dict()["faceStatus"] == "done" for d in db.photos("ev").stream())


def _cli_proc(env: dict, *args: str) -> subprocess.Popen:
    cmd = [str(PYTHON), "-m", "scripts.bulk_ingest", "--event-id", "ev", "--compute-threads", "1", "--no-progress",
           *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_second_ctrl_c_gives_the_photos_in_flight_back(firestore_db, tmp_path, faces_dir, pack_dir):
    db = firestore_db
    env = service_env(db, tmp_path / "data", pack_dir, FACEMATCH_INGEST_SPACES="v2")
    body = (faces_dir / "obama__1.jpg").read_bytes()
    with LocalHTTPServer() as srv:
        for i in range(4):
            srv.set(f"/{i}.jpg", Reply(headers={"Content-Type": "image/jpeg"}, body=body, delay=60))
            db.photos("ev").document(f"p{i}").set({"url": srv.url(f"/{i}.jpg")})
        cli = _cli_proc(env, "--concurrency", "2")
        try:
            wait_for(lambda: srv.hits() >= 2, 60, what="two downloads in flight")
            cli.send_signal(signal.SIGINT)
            time.sleep(0.5)
            cli.send_signal(signal.SIGINT)  # don't wait for them
            out, _ = cli.communicate(timeout=30)
        finally:
            stop_process(cli)
        assert cli.returncode == 130, out
        assert "interrupted: 2 photo(s) in flight given back" in out, out
        started = {r.path for r in srv.records()}
    docs = {d.id: d.to_dict() for d in db.photos("ev").stream()}
    assert len(started) == 2
    for photo_id, doc in docs.items():
        if f"/{photo_id[1:]}.jpg" in started:  # given back: pending, no lease, the attempt not counted
            assert doc["faceStatus"] == "pending" and doc["faceLeaseOwner"] is None, doc
            assert doc["faceAttempts"] == 0 and doc["faceLeaseUntil"] is None, doc
        else:
            assert "faceStatus" not in doc, doc


def test_cli_and_worker_at_once_process_each_photo_once(firestore_db, tmp_path, faces_dir, pack_dir, procs):
    import threading

    from tests.firestore_fixtures import start_worker

    db = firestore_db
    env = service_env(db, tmp_path / "data", pack_dir, FACEMATCH_INGEST_SPACES="v2")
    names = ["obama__1.jpg", "biden__1.jpg", "kit_harington__1.jpeg", "rose_leslie__1.jpg"]
    gate = threading.Event()  # downloads wait until both processes are at work

    def gated(body: bytes):
        def reply(info):
            gate.wait(60)
            return Reply(headers={"Content-Type": "image/jpeg"}, body=body, delay=0.2)
        return reply

    with LocalHTTPServer() as srv:
        for i in range(12):
            srv.set(f"/{i}.jpg", gated((faces_dir / names[i % 4]).read_bytes()))
            db.photos("ev").document(f"p{i}").set({"url": srv.url(f"/{i}.jpg")})
        worker = start_worker(env, tmp_path / "worker.log", "--event-id", "ev", "--once", "--poll-interval", "1",
                              "--concurrency", "2", "--compute-threads", "1", "--summary-interval", "0",
                              "--worker-id", "W")
        procs.append(worker)
        wait_for(lambda: srv.hits() >= 2, 60, what="the worker's first downloads")
        cli = _cli_proc(env, "--concurrency", "2")
        procs.append(cli)
        wait_for(lambda: srv.hits() >= 4 or cli.poll() is not None, 60, what="the CLI's first downloads")
        gate.set()  # now both race for the rest
        out, _ = cli.communicate(timeout=120)
        assert cli.returncode == 0, out  # photos the worker holds are skipped, not failed
        assert worker.wait(timeout=120) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        assert {f"/{i}.jpg": srv.hits(f"/{i}.jpg") for i in range(12)} == {f"/{i}.jpg": 1 for i in range(12)}
    docs = {d.id: d.to_dict() for d in db.photos("ev").stream()}
    assert all(d["faceStatus"] == "done" and d["faceAttempts"] == 1 for d in docs.values()), docs
    workers = {d["faceWorker"] for d in docs.values()}
    assert "W" in workers and any(w.startswith("cli@") for w in workers), workers  # both took a share
    store = Services(make_settings(tmp_path / "data", pack_dir)).store
    assert len(store.list_photos("ev", "v2")) == 12
