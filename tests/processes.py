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
