"""Deployment as operators run it: a real ``gunicorn -c gunicorn.conf.py`` with two workers,
a real photo worker, the Firestore emulator; /metrics across workers; the systemd units."""

from __future__ import annotations

import base64
import glob
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.firestore_fixtures import (
    PYTHON,
    REPO,
    free_port,
    service_env,
    start_worker,
    wait_for,
)
from tests.http_fixtures import LocalHTTPServer

POLL = 2.0
UNITS = REPO / "systemd"


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_gunicorn_and_worker_photo_matchable_within_poll_interval(firestore_db, tmp_path, faces_dir, pack_dir, procs):
    db = firestore_db
    port, metrics_port = free_port(), free_port()
    mp_dir = tmp_path / "metrics"
    env = service_env(db, tmp_path / "data", pack_dir, FACEMATCH_INGEST_SPACES="v2", FACEMATCH_LOG_LEVEL="WARNING",
                      FACEMATCH_BIND=f"127.0.0.1:{port}", FACEMATCH_WEB_WORKERS="2", FACEMATCH_WEB_THREADS="2")
    web = subprocess.Popen([str(REPO / ".venv" / "bin" / "gunicorn"), "-c", "gunicorn.conf.py"], cwd=REPO,
                           env={**env, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)},
                           stdout=(tmp_path / "web.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(web)
    base = f"http://127.0.0.1:{port}"
    beat = tmp_path / "beat.json"
    with LocalHTTPServer(directory=faces_dir) as srv:
        db.photos("live").document("first").set({"url": srv.url("/biden__1.jpg")})
        worker = start_worker(env, tmp_path / "worker.log", "--event-id", "live", "--poll-interval", str(POLL),
                              "--heartbeat-file", str(beat), "--metrics-port", str(metrics_port))
        procs.append(worker)
        wait_for(lambda: _up(base), 90, what=f"gunicorn on {base}; log: {tmp_path / 'web.log'}")
        wait_for(lambda: db.photo("live", "first").get("faceStatus") == "done", 60, what="the first photo")

        # nothing heavy in the master; engines already warm in both workers (post_worker_init)
        workers = wait_for(lambda: len(_children(web.pid)) == 2 and _children(web.pid), 30, what="2 workers")
        assert "onnxruntime" not in _maps(web.pid) and "faiss" not in _maps(web.pid)
        wait_for(lambda: all("onnxruntime" in _maps(pid) for pid in workers), 60, what="engines in workers")

        selfie = base64.b64encode((faces_dir / "obama__2.jpg").read_bytes()).decode()
        emb = requests.post(f"{base}/api/v2/embed", json={"image_base64": selfie}, timeout=30).json()["embedding"]

        def matched() -> bool:
            resp = requests.post(f"{base}/api/v2/match", json={"event_id": "live", "user_embedding": emb},
                                 timeout=10)
            assert resp.status_code == 200, resp.text
            return any(m["photo_id"] == "obama" for m in resp.json()["matches"])

        assert not matched()
        t0 = time.monotonic()
        db.photos("live").document("obama").set({"imageUrl": srv.url("/obama__1.jpg") + "?alt=media&token=abc"})
        wait_for(matched, POLL + 10, interval=0.1, what="the new photo to be matchable")
        elapsed = time.monotonic() - t0
        assert elapsed <= POLL + 2.0, f"matchable after {elapsed:.2f}s, expected <= poll interval + 2 s"
        # the status is written right after the store (searchable first)
        wait_for(lambda: db.photo("live", "obama").get("faceCount") == 1, 10, what="the status write-back")

        # /metrics: every scrape, whichever worker answers, sees all workers' requests
        before = _sample(requests.get(f"{base}/metrics", timeout=10).text, "facematch_http_requests_total",
                         endpoint="/health", status="200")
        for _ in range(30):
            assert requests.get(f"{base}/health", timeout=10).status_code == 200
        pids = {re.search(r"_(\d+)\.db$", f).group(1) for f in glob.glob(str(mp_dir / "counter_*.db"))}
        assert len(pids) >= 2, "requests did not reach both workers"
        for _ in range(6):
            text = requests.get(f"{base}/metrics", timeout=10).text
            seen = _sample(text, "facematch_http_requests_total", endpoint="/health", status="200")
            assert seen == before + 30, (seen, before)
        assert _sample(text, "facematch_match_duration_seconds_count", space="v2") >= 2
        assert _sample(text, "facematch_engine_ready", space="v2") == 1.0
        assert _sample(text, "facematch_index_faces", space="v2") == 2.0  # biden + obama
        worker_text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert _sample(worker_text, "facematch_ingest_photos_total", source="worker", outcome="done") == 2.0
        assert _sample(worker_text, "facematch_ingest_faces_total", source="worker") == 2.0

        web.send_signal(signal.SIGTERM)
        worker.send_signal(signal.SIGTERM)
        assert web.wait(timeout=40) == 0
        assert worker.wait(timeout=40) == 0
    log = (tmp_path / "web.log").read_text()
    assert "token=abc" not in log and "token=abc" not in (tmp_path / "worker.log").read_text()


def _up(base: str) -> bool:
    try:
        return requests.get(base + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_gunicorn_config_defaults():
    """The config module alone: env → settings, and a private metrics dir when none is given."""
    code = (
        "import runpy, os; c = runpy.run_path('gunicorn.conf.py');"
        "print(c['workers'], c['threads'], c['timeout'], c['graceful_timeout'], c['max_requests'],"
        " c['max_requests_jitter'], c['bind'], c['preload_app'], os.path.isdir(c['METRICS_DIR']),"
        " c['control_socket_disable'], c['reuse_port'], c['worker_class'])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEMATCH_", "PROMETHEUS_"))}
    env.update(FACEMATCH_WEB_WORKERS="3", FACEMATCH_WEB_THREADS="4", FACEMATCH_WEB_MAX_REQUESTS="10",
               FACEMATCH_BIND="127.0.0.1:9999")
    out = subprocess.run([str(PYTHON), "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "4", "120", "30", "10", "200", "['127.0.0.1:9999']", "False", "True", "True",
                                 "True", "flask_backend.gunicorn_worker.ReusePortThreadWorker"]


# --------------------------------------------------------------------------- systemd units
def _directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture(scope="module")
def installed_units(tmp_path_factory) -> Path:
    """The units with /opt/facematch replaced by this checkout (verify checks the executables)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not found (apt package systemd)")
    out = tmp_path_factory.mktemp("units")
    for unit in UNITS.glob("*.service"):
        (out / unit.name).write_text(unit.read_text().replace("/opt/facematch", str(REPO)))
    return out


@pytest.mark.parametrize("name", ["facematch-web.service", "facematch-worker.service"])
def test_systemd_unit_verifies_and_is_hardened(installed_units, name):
    unit = installed_units / name
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], check=False, capture_output=True,
                         text=True, timeout=60)
    problems = [line for line in (res.stdout + res.stderr).splitlines() if name in line or "error" in line.lower()]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr
    sec = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit)],
                         check=False, capture_output=True, text=True, timeout=60)
    assert sec.returncode == 0, sec.stdout[-2000:] + sec.stderr  # exposure <= 2.0 ("OK")

    d = _directives(UNITS / name)
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "Restart": "on-failure", "User": "facematch", "Type": "notify", "KillSignal": "SIGTERM"}.items():
        assert d.get(key) == [value], key
    assert d["ReadWritePaths"] == ["/var/lib/facematch"] and d["EnvironmentFile"] == ["/etc/facematch/facematch.env"]
    env_example = (UNITS / "facematch.env.example").read_text()
    assert "FACEMATCH_DATA_DIR=/var/lib/facematch/" in env_example
    stop = int(d["TimeoutStopSec"][0])
    if name == "facematch-worker.service":
        drain = int(re.search(r"^FACEMATCH_WORKER_DRAIN_TIMEOUT=(\d+)", env_example, re.MULTILINE).group(1))
        assert stop >= drain + 15 and d["UnsetEnvironment"] == ["PROMETHEUS_MULTIPROC_DIR"]
        assert "-m workers.photo_worker" in d["ExecStart"][0]
    else:
        graceful = int(re.search(r"^FACEMATCH_WEB_GRACEFUL_TIMEOUT=(\d+)", env_example, re.MULTILINE).group(1))
        assert stop >= graceful + 10 and "PROMETHEUS_MULTIPROC_DIR=/run/facematch-web/metrics" in d["Environment"]
        assert "gunicorn.conf.py" in d["ExecStart"][0]


@pytest.mark.parametrize("pinned", [False, True])
def test_gunicorn_default_worker_count_is_the_cores_at_least_two(tmp_path, pack_dir, pinned):
    from tests.processes import Gunicorn

    cores = {min(os.sched_getaffinity(0))} if pinned else None  # one core: still two workers
    want = 2 if pinned else max(2, len(os.sched_getaffinity(0)))
    env = {"FACEMATCH_DATA_DIR": str(tmp_path / "data"), "FACEMATCH_V2_PACK": str(pack_dir),
           "FACEMATCH_WEB_WARMUP": "0", "FACEMATCH_LOG_LEVEL": "WARNING"}
    with Gunicorn(env, workers=None, cores=cores, log=tmp_path / "gunicorn.log") as server:
        wait_for(lambda: len(server.worker_pids()) == want, 60, what=f"{want} workers")
        time.sleep(1.0)  # and no more come
        assert len(server.worker_pids()) == want, (tmp_path / "gunicorn.log").read_text()[-2000:]
