"""Storage faults get clear answers and lose nothing: a full data dir (a real 4 MB tmpfs) →
507 storage_full, a read-only one or a lock held past the busy timeout → 503
storage_unavailable with Retry-After; /health and /metrics say so; writes work again by
themselves once the fault is gone; every acknowledged photo stays matchable."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from flask_backend import create_app
from flask_backend.store import FaceStore
from tests.conftest import make_settings
from tests.processes import REPO
from tests.storage_fixtures import tmpfs

DIM = 128


def _vectors(seed: int, n: int = 4) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _ingest(client, i: int):
    return client.post("/api/v2/ingest", json={"event_id": "full", "photo_id": f"p{i:05d}",
                                                "embeddings": _vectors(i).tolist()})


def _assert_matchable(client, acked: list[int], event_id: str = "full") -> None:
    for i in acked:
        body = client.post("/api/v2/match", json={"event_id": event_id, "user_embedding": _vectors(i)[2].tolist(),
                                                   "threshold": 0.99, "top_k": 1}).get_json()
        assert [m["photo_id"] for m in body["matches"]] == [f"p{i:05d}"], (i, body)


def _metric(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


def test_disk_full_answers_507_recovers_by_itself_and_loses_nothing(tmp_path, pack_dir):
    with tmpfs(tmp_path / "mnt", "4m") as fs:
        app = create_app(make_settings(fs.path / "data", pack_dir, storage_min_free_bytes=0))
        client = app.test_client()
        assert client.get("/health").get_json()["storage"]["ok"] is True
        acked, refused, i = [], 0, 0
        while refused < 25 and i < 20_000:
            resp = _ingest(client, i)
            if resp.status_code == 200:
                assert refused == 0, "no write is acknowledged once the disk is full"
                acked.append(i)
            else:
                assert resp.status_code == 507, resp.get_data(as_text=True)
                assert resp.get_json()["error"]["code"] == "storage_full"
                refused += 1
            i += 1
        assert refused == 25 and len(acked) > 20  # some writes were acknowledged before the disk filled
        health = client.get("/health").get_json()
        assert health["status"] == "degraded"
        assert health["storage"]["reason"] == "storage_full: disk_full"
        assert isinstance(health["storage"]["free_bytes"], int) and health["storage"]["free_bytes"] < 1 << 20
        metrics = client.get("/metrics").get_data(as_text=True)
        assert _metric(metrics, "facematch_store_free_bytes")
        (errors,) = _metric(metrics, 'facematch_store_errors_total{code="storage_full",reason="disk_full"}')
        assert float(errors.split()[-1]) >= 25
        _assert_matchable(client, acked)  # reads keep working on a full disk

        fs.remount("size=32m")  # space returns: no restart, the next write just works
        resp = _ingest(client, i)
        assert resp.status_code == 200, resp.get_json()
        acked.append(i)
        assert client.get("/health").get_json()["storage"] == {
            **client.get("/health").get_json()["storage"], "ok": True, "reason": None}
        _assert_matchable(client, acked)


def test_read_only_data_dir_answers_503_with_retry_after_then_recovers(tmp_path, pack_dir):
    with tmpfs(tmp_path / "mnt", "16m") as fs:
        data = fs.path / "data"
        # populate from another process, so that nothing here holds a file open for writing
        code = ("import sys, numpy as np; from flask_backend.store import FaceStore, FaceRecord, Space;"
                "s = FaceStore(sys.argv[1]); sp = Space('v2', 'insightface', 'det500m_mbf128', 128);"
                "[s.put_photo('full', f'p{i:05d}', sp, [FaceRecord(v, (0, 0, 1, 1), 1.0) for v in "
                "np.load(sys.argv[2])[i]]) for i in range(20)]; s.close()")
        np.save(tmp_path / "v.npy", np.stack([_vectors(i) for i in range(20)]))
        subprocess.run([sys.executable, "-c", code, str(data), str(tmp_path / "v.npy")], cwd=REPO, check=True)
        fs.remount("ro")
        app = create_app(make_settings(data, pack_dir, storage_min_free_bytes=0, storage_retry_after=7))
        client = app.test_client()
        resp = _ingest(client, 100)
        assert resp.status_code == 503, resp.get_data(as_text=True)
        assert resp.get_json()["error"]["code"] == "storage_unavailable"
        assert resp.headers["Retry-After"] == "7"
        match = client.post("/api/v2/match", json={"event_id": "full", "user_embedding": _vectors(3)[0].tolist()})
        assert match.status_code in (200, 503), match.get_data(as_text=True)  # never a 500
        health = client.get("/health").get_json()
        assert health["status"] == "degraded" and health["storage"]["reason"].startswith("storage_unavailable")
        assert health["storage"]["writable"] is False

        fs.remount("rw")
        resp = _ingest(client, 100)
        assert resp.status_code == 200, resp.get_json()
        _assert_matchable(client, [*range(20), 100])
        assert client.get("/health").get_json()["storage"]["ok"] is True


def test_lock_held_past_the_busy_timeout_answers_503(tmp_path, pack_dir):
    app = create_app(make_settings(tmp_path / "data", pack_dir, storage_busy_timeout=0.3))
    client = app.test_client()
    assert _ingest(client, 1).status_code == 200
    other = sqlite3.connect(tmp_path / "data" / "facestore.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        resp = _ingest(client, 2)
        assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "storage_unavailable"
        assert "locked" in resp.get_json()["error"]["message"] and "Retry-After" in resp.headers
        _assert_matchable(client, [1])  # WAL readers are not blocked by the writer
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _ingest(client, 2).status_code == 200
    _assert_matchable(client, [1, 2])


def test_cli_keeps_photos_to_do_when_the_disk_is_full(tmp_path, pack_dir, faces_dir):
    photos = tmp_path / "photos" / "gala"
    photos.mkdir(parents=True)
    for name in ("obama__1.jpg", "biden__1.jpg"):
        (photos / name).write_bytes((faces_dir / name).read_bytes())
    with tmpfs(tmp_path / "mnt", "1m") as fs:
        filler = fs.path / "filler"
        with open(filler, "wb") as fh:  # leave (almost) nothing
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        env = {"FACEMATCH_DATA_DIR": str(fs.path / "data"), "FACEMATCH_V2_PACK": str(pack_dir),
               "FACEMATCH_INGEST_SPACES": "v2", "FACEMATCH_LOG_LEVEL": "WARNING"}
        cmd = [sys.executable, "-m", "scripts.bulk_ingest", "--from-dir", str(photos), "--no-progress"]
        out = subprocess.run(cmd, check=False, cwd=REPO, env={**_base_env(), **env}, capture_output=True, text=True, timeout=300)
        assert out.returncode == 1, out.stdout + out.stderr
        assert re.search(r"\b0 failed\b", out.stdout) and "2 released" in out.stdout, out.stdout  # not failed: to do
        filler.unlink()
        again = subprocess.run(cmd, check=False, cwd=REPO, env={**_base_env(), **env}, capture_output=True, text=True,
                               timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        store = FaceStore(fs.path / "data")
        try:
            assert sorted(p.photo_id for p in store.list_photos("gala", "v2")) == ["biden__1.jpg", "obama__1.jpg"]
        finally:
            store.close()


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("FACEMATCH_")}


@pytest.fixture(autouse=True)
def _root_only():
    import os

    if os.geteuid() != 0:
        pytest.skip("storage-fault tests mount a tmpfs: they need root (CI runs them as root)")


def test_worker_keeps_the_photo_pending_on_a_full_disk_then_indexes_it(
    firestore_db, tmp_path, faces_dir, pack_dir, procs
):
    from tests.firestore_fixtures import service_env, start_worker, wait_for
    from tests.http_fixtures import LocalHTTPServer, Reply

    with tmpfs(tmp_path / "mnt", "1m") as fs, LocalHTTPServer() as srv:
        filler = fs.path / "filler"
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        srv.set("/a.jpg", Reply(headers={"Content-Type": "image/jpeg"}, body=(faces_dir / "obama__1.jpg").read_bytes()))
        firestore_db.photos("ev").document("a").set({"url": srv.url("/a.jpg")})
        env = service_env(firestore_db, fs.path / "data", pack_dir, FACEMATCH_INGEST_SPACES="v2",
                          FACEMATCH_STORAGE_RETRY_AFTER="2")
        procs.append(start_worker(env, tmp_path / "w.log", "--poll-interval", "1", "--compute-threads", "1",
                                  "--max-attempts", "1", "--summary-interval", "0"))
        doc = wait_for(lambda: (d := firestore_db.photo("ev", "a")).get("faceError") and d, 120,
                       what="the storage fault recorded")
        assert doc["faceStatus"] == "pending" and doc["faceError"].startswith("storage_full"), doc
        assert doc["faceAttempts"] == 0  # not counted: --max-attempts 1 would have failed it otherwise
        filler.unlink()  # space returns: the worker indexes it by itself
        doc = wait_for(lambda: (d := firestore_db.photo("ev", "a")).get("faceStatus") == "done" and d, 120,
                       what="the photo indexed after the fault")
        assert doc["faceCount"] == 1
