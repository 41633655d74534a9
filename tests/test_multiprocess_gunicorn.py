"""On SQLite and on PostgreSQL (store_backend): a real gunicorn with 3 workers on one data dir, plus a separate writer process and HTTP
ingest through several paths at once: every acknowledged photo is matched by the very next
search of EVERY worker (each asked through a keep-alive connection it holds), and the final
counts are exact (no duplicates, nothing lost)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests

from tests.processes import REPO, Gunicorn, WorkerSessions

pytestmark = pytest.mark.slow

EVENT = "mp-event"
DIM = 128
N_WRITER = 40  # separate process, through the pipeline
N_HTTP = 30  # HTTP JSON embeddings (each ingested twice)
PHOTOS = ["obama__1.jpg", "biden__1.jpg", "kit_harington__1.jpeg", "rose_leslie__1.jpg"]  # HTTP multipart


def _unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _ask_all(workers: WorkerSessions, vec: np.ndarray) -> dict[str, set[str]]:
    """{worker: photo ids matched} from every worker (404: the event is not created yet)."""
    answers = workers.each("POST", "/api/v2/match",
                           json={"event_id": EVENT, "user_embedding": vec.tolist(), "threshold": 0.95, "top_k": 5})
    for r in answers.values():
        if r.status_code not in (200, 404):
            r.raise_for_status()
    return {w: set() if r.status_code == 404 else {m["photo_id"] for m in r.json()["matches"]} for w, r in answers.items()}


def test_every_worker_sees_every_acknowledged_photo_at_its_next_search(tmp_path, pack_dir, faces_dir, store_backend):
    data = tmp_path / "data"
    env = {"FACEMATCH_DATA_DIR": str(data), "FACEMATCH_V2_PACK": str(pack_dir), "FACEMATCH_LOG_LEVEL": "WARNING",
           **store_backend.env()}
    writer_vecs, http_vecs = _unit_vectors(N_WRITER, 1), _unit_vectors(N_HTTP, 2)
    np.save(tmp_path / "writer.npy", writer_vecs)
    vector_of = {f"w{i:05d}": v for i, v in enumerate(writer_vecs)} | {f"h{i:05d}": v for i, v in enumerate(http_vecs)}
    acks: list[str] = []  # in the order the test learnt of them
    lock = threading.Lock()
    failures: list[str] = []

    with Gunicorn(env, workers=3, log=tmp_path / "gunicorn.log") as server:
        session = requests.Session()
        workers = WorkerSessions(server.url, 3)

        def http_writer() -> None:
            for i, vec in enumerate(http_vecs):
                pid = f"h{i:05d}"
                for _ in range(2):
                    r = session.post(server.url + "/api/v2/ingest",
                                     json={"event_id": EVENT, "photo_id": pid, "embedding": vec.tolist()}, timeout=30)
                    assert r.status_code == 200, r.text
                with lock:
                    acks.append(pid)

        def photo_writer() -> None:
            for name in PHOTOS:
                r = requests.post(server.url + "/api/v2/ingest",
                                  files={"image": (name, (faces_dir / name).read_bytes())},
                                  data={"event_id": EVENT, "photo_id": f"real-{name}"}, timeout=60)
                assert r.status_code == 200 and r.json()["faces_indexed"] == 1, r.text

        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ingest_writer", str(data), str(pack_dir), EVENT,
             str(tmp_path / "writer.npy"), "w", "--repeat", "2", "--delay", "0.02", "--store-url", store_backend.url or ""],
            cwd=REPO, stdout=subprocess.PIPE, stderr=(tmp_path / "writer.err").open("w"), text=True,
        )

        def read_acks() -> None:
            for line in proc.stdout:
                _, pid, _when = line.split()
                with lock:
                    acks.append(pid)

        threads = [threading.Thread(target=f) for f in (http_writer, photo_writer, read_acks)]
        for t in threads:
            t.start()
        checked = 0
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() not in (None, 0):
                pytest.fail("writer process failed: " + (tmp_path / "writer.err").read_text()[-2000:])
            with lock:
                fresh = acks[checked:]
            done = not fresh and checked == N_WRITER + N_HTTP and not any(t.is_alive() for t in threads)
            # acknowledged before these searches were sent: every worker must find it
            for pid in fresh:
                for worker, found in _ask_all(workers, vector_of[pid]).items():
                    if pid not in found:
                        failures.append(f"worker {worker} missed {pid} after its ack")
            checked += len(fresh)
            if done:
                break
            time.sleep(0.01)
        for t in threads:
            t.join(timeout=60)
        assert proc.wait(timeout=60) == 0
        assert len(acks) == N_WRITER + N_HTTP == checked

        # final state: every vector finds exactly its photo on every worker; counts exact
        for pid, vec in vector_of.items():
            for worker, found in _ask_all(workers, vec).items():
                if found != {pid}:
                    failures.append(f"worker {worker}: {pid} matched {found}")
        summary = requests.get(server.url + f"/api/v2/events/{EVENT}", timeout=10).json()

    assert failures == []
    v2 = summary["spaces"]["v2"]
    assert v2["photos"] == N_WRITER + N_HTTP + len(PHOTOS)
    assert v2["faces"] == N_WRITER + N_HTTP + len(PHOTOS)
    assert summary["spaces"]["v1"]["photos"] == len(PHOTOS)
