"""With the default gunicorn config no worker restarts during a 5,000-request run: the
latency spikes of worker recycling (engines and caches reloaded while requests queue) are gone."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import requests

from tests.processes import Gunicorn

pytestmark = pytest.mark.slow

REQUESTS = 5000
THREADS = 4


def test_no_worker_restarts_during_5000_requests(tmp_path, pack_dir, monkeypatch):
    env = {"FACEMATCH_DATA_DIR": str(tmp_path / "data"), "FACEMATCH_V2_PACK": str(pack_dir),
           "FACEMATCH_LOG_LEVEL": "INFO", "FACEMATCH_RATE_LIMITS_ENABLED": "0"}  # 5,000 requests from one address
    for name in ("FACEMATCH_WEB_MAX_REQUESTS", "FACEMATCH_WEB_MAX_REQUESTS_JITTER"):
        monkeypatch.delenv(name, raising=False)  # the defaults of gunicorn.conf.py, as shipped
    log = tmp_path / "gunicorn.log"
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((50, 128)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with Gunicorn(env, workers=2, log=log) as server:
        s = requests.Session()
        for i, v in enumerate(vecs):
            r = s.post(server.url + "/api/v2/ingest", json={"event_id": "soak", "photo_id": f"p{i}",
                                                            "embedding": v.tolist()}, timeout=30)
            assert r.status_code == 200, r.text
        pids: set[str] = set()
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def client(n: int, seed: int) -> None:
            sess = requests.Session()
            local = np.random.default_rng(seed)
            for j in range(n):
                if j % 5 == 0:
                    r = sess.get(server.url + "/health", timeout=30)
                else:
                    q = vecs[int(local.integers(len(vecs)))]
                    r = sess.post(server.url + "/api/v2/match", json={"event_id": "soak", "top_k": 5,
                                                                      "user_embedding": q.tolist()}, timeout=30)
                with lock:
                    pids.add(r.headers.get("X-FaceMatch-Worker", ""))
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        threads = [threading.Thread(target=client, args=(REQUESTS // THREADS, k)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    text = log.read_text()
    assert statuses == {200: REQUESTS}, statuses
    assert "Autorestarting worker" not in text
    assert text.count("Booting worker") == 2, text[-2000:]
    booted = set(re.findall(r"Booting worker with pid: (\d+)", text))
    assert len(booted) == 2 and pids <= booted, (pids, booted)  # every answer came from an original worker
