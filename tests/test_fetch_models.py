"""scripts.fetch_models: fails fast without a network, installs and verifies a pack served
by a local HTTP server (sha256 pinned for det_500m, recorded for the rest), refuses a bad one."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import zipfile

from tests.http_fixtures import LocalHTTPServer
from tests.processes import REPO, free_port


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.fetch_models", *args], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _pack_zip(pack_dir, corrupt: bool = False) -> bytes:
    buf = io.BytesIO()
    det = (pack_dir / "det_500m.onnx").read_bytes()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("buffalo_s/det_500m.onnx", det[:-1] + b"\0" if corrupt else det)
        for name in ("w600k_mbf.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx"):
            zf.writestr(f"buffalo_s/{name}", b"stand-in model " + name.encode())
    return buf.getvalue()


def test_unreachable_host_fails_fast_and_clearly(tmp_path):
    started = time.monotonic()
    result = _run("buffalo_l", "--root", str(tmp_path), "--url", f"http://127.0.0.1:{free_port()}/buffalo_l.zip",
                  "--connect-timeout", "3")
    assert result.returncode != 0
    assert time.monotonic() - started < 20
    assert "could not download pack buffalo_l" in result.stderr and "no internet" in result.stderr
    assert not (tmp_path / "buffalo_l").exists()


def test_installs_verifies_and_records_checksums(tmp_path, pack_dir):
    with LocalHTTPServer({"/buffalo_s.zip": (200, {"Content-Type": "application/zip"}, _pack_zip(pack_dir))}) as srv:
        result = _run("buffalo_s", "--root", str(tmp_path), "--url", srv.url("/buffalo_s.zip"))
    assert result.returncode == 0, result.stderr
    installed = tmp_path / "buffalo_s"
    assert (installed / "det_500m.onnx").read_bytes() == (pack_dir / "det_500m.onnx").read_bytes()
    assert "det_500m.onnx" in (installed / "SHA256SUMS").read_text()
    assert _run("buffalo_s", "--root", str(tmp_path), "--verify").returncode == 0
    (installed / "w600k_mbf.onnx").write_bytes(b"tampered")
    tampered = _run("buffalo_s", "--root", str(tmp_path), "--verify")
    assert tampered.returncode != 0 and "sha256 mismatch for w600k_mbf.onnx" in tampered.stderr


def test_refuses_a_pack_whose_pinned_checksum_does_not_match(tmp_path, pack_dir):
    with LocalHTTPServer({"/bad.zip": (200, {}, _pack_zip(pack_dir, corrupt=True))}) as srv:
        result = _run("buffalo_s", "--root", str(tmp_path), "--url", srv.url("/bad.zip"))
    assert result.returncode != 0 and "sha256 mismatch for det_500m.onnx" in result.stderr
    assert not (tmp_path / "buffalo_s").exists()
