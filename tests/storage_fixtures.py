"""A real small file system for storage-fault tests: a tmpfs mounted on a temp dir (root only)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


class Tmpfs:
    def __init__(self, path: Path) -> None:
        self.path = path

    def remount(self, options: str) -> None:
        out = subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=False, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


@contextmanager
def tmpfs(path: Path, size: str = "4m") -> Iterator[Tmpfs]:
    """``mount -t tmpfs -o size=...`` on ``path``; skips (with the reason) where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         check=False, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({out.stderr.strip() or 'not permitted'}): storage-fault tests need root")
    try:
        yield Tmpfs(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
