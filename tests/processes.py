"""Real processes for tests: a gunicorn server and a private redis-server on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """``gunicorn -c gunicorn.conf.py`` with FACEMATCH_* settings, as operators run it."""

    def __init__(self, env: dict[str, str], workers: int | None = 3, log: Path | None = None,
                 cores: set[int] | None = None, *, host: str = "127.0.0.1", wrap: list[str] | None = None) -> None:
        """``workers`` None: gunicorn.conf.py's default; ``cores``: CPU affinity of the server;
        ``host``/``wrap``: serve on another address, e.g. in a test namespace (tests/netns_fixtures.py)."""
        self.port = free_port()
        self.host = host
        self.wrap = wrap or []
        self.url = f"http://{host}:{self.port}"
        # rate limits off unless the test asks for them (every test speaks from 127.0.0.1)
        self.env = {**os.environ, "FACEMATCH_RATE_LIMITS_ENABLED": "0", **env,
                    "FACEMATCH_BIND": f"{host}:{self.port}", "FACEMATCH_ACCESS_LOG": ""}
        if workers is None:
            self.env.pop("FACEMATCH_WEB_WORKERS", None)
        else:
            self.env["FACEMATCH_WEB_WORKERS"] = str(workers)
        self.cores = cores
        self.log = log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        pin = ["taskset", "-c", ",".join(map(str, sorted(self.cores)))] if self.cores else []
        self.proc = subprocess.Popen(
            [*self.wrap, *pin, sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "flask_backend:create_app()"],
            cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}; log: {self.log}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("gunicorn did not answer /health within 90 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def worker_pids(self) -> list[int]:
        """The master's children: its web workers."""
        assert self.proc is not None
        return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]


class WorkerSessions:
    """One keep-alive connection held by each gunicorn worker, so that a check can ask every
    worker (or one chosen worker) rather than whichever the kernel hands a new connection to."""

    def __init__(self, url: str, workers: int) -> None:
        self.url, self.workers = url, workers
        self.by_worker: dict[str, requests.Session] = {}
        deadline = time.monotonic() + 90  # the last workers may still be loading their engines
        while len(self.by_worker) < workers and time.monotonic() < deadline:
            self._open_until(lambda w: w not in self.by_worker, deadline)
        assert len(self.by_worker) == workers, f"only reached workers {sorted(self.by_worker)}"

    def _open_until(self, wanted, deadline: float) -> None:
        """Open connections (held, so the next one goes elsewhere) until one reaches a worker
        ``wanted(worker)`` accepts; /health is never rate-limited, so probing costs no budget."""
        spare: list[requests.Session] = []
        try:
            while time.monotonic() < deadline:
                session = requests.Session()
                worker = session.get(self.url + "/health", timeout=30).headers["X-FaceMatch-Worker"]
                if wanted(worker):
                    old = self.by_worker.get(worker)
                    if old is not None:
                        old.close()
                    self.by_worker[worker] = session
                    return
                spare.append(session)
                time.sleep(0.05)
        finally:
            for session in spare:
                session.close()

    def refresh(self) -> None:
        """Re-open any held connection the server closed (keep-alive timeout) before a burst."""
        for want in list(self.by_worker):
            if self.by_worker[want].get(self.url + "/health", timeout=30).headers["X-FaceMatch-Worker"] != want:
                self._open_until(lambda w, want=want: w == want, time.monotonic() + 60)

    def on(self, worker: str, method: str, path: str, **kwargs) -> requests.Response:
        """``method path`` on ``worker``'s own connection; fails if another worker answered."""
        r = self.by_worker[worker].request(method, self.url + path, timeout=30, **kwargs)
        assert r.headers["X-FaceMatch-Worker"] == worker, f"worker {worker}'s keep-alive connection was dropped"
        return r

    def each(self, method: str, path: str, **kwargs) -> dict[str, requests.Response]:
        """The same request asked of every worker (a dropped keep-alive is re-opened)."""
        answers: dict[str, requests.Response] = {}
        for _ in range(50):
            missing = [w for w in self.by_worker if w not in answers]
            if not missing:
                return answers
            for want in missing:
                r = self.by_worker[want].request(method, self.url + path, timeout=30, **kwargs)
                got = r.headers["X-FaceMatch-Worker"]
                if got != want:  # its keep-alive was closed and re-opened elsewhere: try a new one
                    self.by_worker[want] = requests.Session()
                answers.setdefault(got, r)
        raise AssertionError(f"could not reach every worker: {sorted(answers)}")


REDIS_SERVER = Path("/usr/bin/redis-server")


class RedisServer:
    """A private ``redis-server`` (Debian's package) on a free 127.0.0.1 port, nothing on disk."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        exe = shutil.which("redis-server") or str(REDIS_SERVER)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("redis-server did not answer PING within 20 s")

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """One private redis-server for the session (skips when the Debian package is missing)."""
    if not (shutil.which("redis-server") or REDIS_SERVER.exists()):
        pytest.skip("redis-server not found: apt-get install redis-server")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server
