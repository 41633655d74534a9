"""Google's Firestore emulator for tests: one real emulator process per test session.

The fixtures are registered in tests/conftest.py (once, so the session scope holds):

    def test_x(firestore_emulator, firestore_db):   # firestore_db: a fresh project per test
        firestore_db.client.collection("events").document("e1").set({...})

The emulator is started once on a free 127.0.0.1 port and stopped at the end of the
session. Each ``firestore_db`` gets its own project id, so tests never see each other's
documents (and no clearing is needed between tests; ``clear()`` exists anyway).
Tests skip with the reason when java or the emulator jar is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.processes import free_port

JAR_CANDIDATES = (
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar",
    "/usr/share/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar",
)
MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
START_TIMEOUT = 60.0


def find_jar() -> Path | None:
    env = os.environ.get("FIRESTORE_EMULATOR_JAR")
    for candidate in ([env] if env else []) + list(JAR_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@dataclass
class FirestoreEmulator:
    host: str  # "127.0.0.1:<port>", the value of FIRESTORE_EMULATOR_HOST
    process: subprocess.Popen

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def env(self, project: str) -> dict[str, str]:
        """Environment for a subprocess (worker, CLI) that must talk to this emulator."""
        return {"FIRESTORE_EMULATOR_HOST": self.host, "GOOGLE_CLOUD_PROJECT": project}

    def clear(self, project: str) -> None:
        url = f"{self.base_url}/emulator/v1/projects/{project}/databases/(default)/documents"
        requests.delete(url, timeout=10).raise_for_status()


@dataclass
class FirestoreDB:
    """A firebase-admin Firestore client bound to one emulator project."""

    emulator: FirestoreEmulator
    project: str
    app: Any
    client: Any

    def env(self) -> dict[str, str]:
        return self.emulator.env(self.project)

    def photos(self, event_id: str):
        return self.client.collection("events").document(event_id).collection("photos")

    def photo(self, event_id: str, photo_id: str) -> dict[str, Any]:
        snap = self.photos(event_id).document(photo_id).get()
        return snap.to_dict() or {}


def _start(jar: Path, log_path: Path, host: str = "127.0.0.1") -> FirestoreEmulator:
    port = free_port()
    log = log_path.open("wb")
    proc = subprocess.Popen(
        ["java", "-cp", str(jar), MAIN_CLASS, "start", f"--host={host}", f"--port={port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Firestore emulator exited with {proc.returncode}; see {log_path}")
        try:
            if requests.get(f"http://{host}:{port}/", timeout=1).ok:
                return FirestoreEmulator(f"{host}:{port}", proc)
        except requests.RequestException:
            pass
        time.sleep(0.2)
    _stop(proc)
    raise RuntimeError(f"Firestore emulator did not answer within {START_TIMEOUT}s; see {log_path}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture(scope="session", name="firestore_emulator")
def firestore_emulator_fixture(tmp_path_factory) -> Iterator[FirestoreEmulator]:
    if shutil.which("java") is None:
        pytest.skip("java not found: the Firestore emulator needs a JRE (apt package default-jre-headless)")
    jar = find_jar()
    if jar is None:
        pytest.skip(
            "Firestore emulator jar not found (apt package google-cloud-cli-firestore-emulator; "
            "or set FIRESTORE_EMULATOR_JAR)"
        )
    emulator = _start(jar, tmp_path_factory.mktemp("firestore") / "emulator.log")
    try:
        yield emulator
    finally:
        _stop(emulator.process)


def connect(emulator: FirestoreEmulator, project: str) -> FirestoreDB:
    """A firebase-admin app + client for ``project`` on the emulator (this process)."""
    import firebase_admin
    import google.auth.credentials
    from firebase_admin import firestore

    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    app = firebase_admin.initialize_app(
        google.auth.credentials.AnonymousCredentials(), {"projectId": project}, name=f"test-{uuid.uuid4().hex}"
    )
    return FirestoreDB(emulator, project, app, firestore.client(app))


@pytest.fixture(name="firestore_db")
def firestore_db_fixture(firestore_emulator: FirestoreEmulator, monkeypatch) -> Iterator[FirestoreDB]:
    """A client on a project of its own (isolated from every other test)."""
    import firebase_admin

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
    db = connect(firestore_emulator, f"demo-{uuid.uuid4().hex[:12]}")
    try:
        yield db
    finally:
        db.client.close()
        firebase_admin.delete_app(db.app)


# --------------------------------------------------------------------------- helpers
REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"


def wait_for(predicate: Any, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def service_env(db: FirestoreDB, data_dir: Path, pack: Path, **extra: str) -> dict[str, str]:
    """Environment for a FaceMatch subprocess (worker, CLI, gunicorn) on this emulator project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEMATCH_", "PROMETHEUS_"))}
    env.update(db.env())
    env.update(
        FACEMATCH_DATA_DIR=str(data_dir),
        FACEMATCH_V2_PACK=str(pack),
        FACEMATCH_ALLOW_PRIVATE_URLS="1",
        FACEMATCH_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen:
    """``python -m workers.photo_worker ARGS`` as a real process, output to ``log_path``."""
    log = log_path.open("ab")
    return subprocess.Popen(
        [str(PYTHON), "-m", "workers.photo_worker", *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )


@pytest.fixture(name="procs")
def procs_fixture() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; killed at teardown if still running."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        stop_process(proc)


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Kill a test-started process (and its group, when it leads one) if still running."""
    if proc.poll() is None:
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)
