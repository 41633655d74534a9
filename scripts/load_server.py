"""The load benchmark's harness: a real gunicorn (the project's gunicorn.conf.py) on a free
loopback port, and wrk runs against it (scripts/bench_load.py's scenarios and soak).

Besides req/s and latencies, a run reports the CPU time its workers spent per request: on a
shared 2-core box req/s drifts with whatever else runs (wrk itself takes a share), while a
worker's CPU per request is what a request costs the server.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LUA = """
local f = io.open("{body}", "rb"); wrk.body = f:read("*all"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "{ctype}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\nRESULT {{"requests":%d,"duration_us":%d,"p50":%d,"p90":%d,"p99":%d,'
    .. '"non2xx":%d,"errors":%d}}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""
LUA_GET = LUA.replace('local f = io.open("{body}", "rb"); wrk.body = f:read("*all"); f:close()\nwrk.method = "POST"\n'
                      'wrk.headers["Content-Type"] = "{ctype}"\n', "")


def need_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit("wrk not found: install it (Debian/Ubuntu: sudo apt-get install wrk; macOS: brew install wrk)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



class Server:
    def __init__(self, data_dir: Path, pack: Path, log: Path, extra_env: dict[str, str], repo: Path = REPO) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEMATCH_", "PROMETHEUS_"))}
        env.update(FACEMATCH_DATA_DIR=str(data_dir), FACEMATCH_V2_PACK=str(pack),
                   FACEMATCH_BIND=f"127.0.0.1:{self.port}", FACEMATCH_LOG_LEVEL="INFO",
                   FACEMATCH_RATE_LIMITS_ENABLED="0", **extra_env)  # capacity, from one address
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=repo, env=env,
                                     stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        import requests

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"gunicorn exited ({self.proc.returncode}); see {log}")
            try:
                if requests.get(self.url + "/health", timeout=2).ok and len(self.workers()) >= 1:
                    time.sleep(2)  # every worker booted and warmed its engines
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        sys.exit("gunicorn did not answer within 120 s")

    def workers(self) -> list[int]:
        import psutil

        return sorted(c.pid for c in psutil.Process(self.proc.pid).children())

    def rss_mb(self) -> list[float]:
        import psutil

        out = []
        for pid in self.workers():
            try:
                out.append(psutil.Process(pid).memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                pass
        return out

    def cpu_s(self) -> dict[int, float]:
        """CPU seconds (user + system) each worker has used so far, by pid."""
        import psutil

        out = {}
        for pid in self.workers():
            try:
                t = psutil.Process(pid).cpu_times()
                out[pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)



def multipart(fields: dict[str, str], image: bytes, name: str = "selfie.jpg") -> tuple[bytes, str]:
    boundary = "----facematchbench7"
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
              "Content-Type: image/jpeg\r\n\r\n".encode() + image + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def run_wrk(wrk: str, url: str, body: bytes | None, ctype: str, conns: int, seconds: float, tmp: Path) -> dict:
    script = tmp / f"s{time.monotonic_ns()}.lua"
    if body is None:
        script.write_text(LUA_GET.format())
    else:
        body_path = tmp / (script.stem + ".body")
        body_path.write_bytes(body)
        script.write_text(LUA.format(body=body_path, ctype=ctype))
    threads = min(2, conns)
    out = subprocess.run([wrk, f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script),
                          url], capture_output=True, text=True, check=True)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    r = json.loads(line[len("RESULT "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r



def cpu_ms_per_request(before: dict[int, float], after: dict[int, float], requests: int) -> float:
    """The workers' CPU time per request between two ``Server.cpu_s`` readings (a worker that
    started in between counts from zero)."""
    used = sum(t - before.get(pid, 0.0) for pid, t in after.items())
    return 1000.0 * used / max(1, requests)


def warm(url: str, cases, workers: int) -> None:
    import requests

    for _name, path, body, ctype, _c in cases:
        for _ in range(workers * 4):  # every worker loads every event before it is measured
            if body is None:
                requests.get(url + path, timeout=60)
            else:
                r = requests.post(url + path, data=body, headers={"Content-Type": ctype}, timeout=120)
                if r.status_code != 200:
                    sys.exit(f"warm-up {path} answered {r.status_code}: {r.text[:300]}")


