"""A private PostgreSQL cluster per test session (Debian's ``postgresql`` package), and the
``store_backend`` fixture that runs a store test against SQLite and PostgreSQL alike.

The cluster is ``initdb``'d into a fresh temporary directory and served on a free port on
127.0.0.1 with its socket in that directory; as root, both run as the ``postgres`` user
(``runuser``: the server refuses to run as root). No system cluster is used or needed.
Each test gets its own database, so tests never see each other's rows.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import free_port


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PostgresCluster:
    """initdb + pg_ctl start/stop/restart of one private cluster."""

    def __init__(self, *, listen: str = "127.0.0.1", wrap: list[str] | None = None) -> None:
        """``listen``: the address served; ``wrap``: a command prefix (e.g. ``ip netns exec A``)."""
        bindir = pg_bin()
        if bindir is None:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
        self.bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="facematch-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.listen = listen
        self.wrap = wrap or []
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        if listen != "127.0.0.1":  # a private network of test namespaces (tests/netns_fixtures.py)
            with (self.data / "pg_hba.conf").open("a") as f:
                f.write(f"host all all {listen.rsplit('.', 1)[0]}.0/24 trust\n")

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        cmd = [*self.wrap, *cmd]
        # never a pipe for the server's output: pg_ctl's child would keep it open
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              check=check, timeout=120)

    def pg_ctl(self, action: str, *extra: str) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses={self.listen} -c max_connections=300"
        self.run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "60", *extra, action)

    def start(self) -> None:
        self.pg_ctl("start")

    def restart(self) -> None:
        self.pg_ctl("restart", "-m", "fast")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@{self.listen}:{self.port}/{db}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
    except subprocess.CalledProcessError:
        log = cluster.log.read_text(errors="replace")[-2000:] if cluster.log.exists() else ""
        cluster.close()
        raise RuntimeError(f"PostgreSQL did not start: {log}") from None
    yield cluster
    cluster.close()


class StoreBackend:
    """What a conformance test needs to open stores on one truth: ``open(data_dir, **kw)``;
    ``url`` is None for SQLite (the data dir holds the truth) or the test's database."""

    def __init__(self, name: str, url: str | None) -> None:
        self.name = name
        self.url = url

    def open(self, data_dir: Path | str, **kw: Any):
        from flask_backend.store import FaceStore

        return FaceStore(data_dir, store_url=self.url, **kw)

    def argv(self) -> list[str]:
        """For helper processes: the URL as an extra argument ('' for SQLite)."""
        return [self.url or ""]

    def env(self) -> dict[str, str]:
        """For services (gunicorn, worker): FACEMATCH_STORE_URL, or nothing for SQLite."""
        return {"FACEMATCH_STORE_URL": self.url} if self.url else {}


@pytest.fixture(params=["sqlite", "postgres"])
def store_backend(request) -> StoreBackend:
    if request.param == "sqlite":
        return StoreBackend("sqlite", None)
    cluster = request.getfixturevalue("postgres_cluster")
    return StoreBackend("postgres", cluster.new_database())
