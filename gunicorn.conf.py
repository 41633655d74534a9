"""gunicorn settings, each from the environment with a default for one small box.

    gunicorn -c gunicorn.conf.py "flask_backend:create_app()"

Nothing heavy happens in the master: the app is not preloaded, so engines, onnxruntime
sessions, FAISS and SQLite open in each worker after fork (their thread pools do not
survive fork; FAISS searches can hang in a forked child). ``post_worker_init`` then
warms the engines so a worker's first request does not pay for loading them.

Cores: each worker runs at most ``threads`` requests at once and each inference uses
FACEMATCH_ONNX_THREADS threads, so workers x threads x onnx threads should stay near the
core count; the defaults (workers = cores, 2 threads, 1 onnx thread) allow one request
waiting on I/O per busy core.

Metrics: several workers share counters through prometheus_client's multiprocess mode.
PROMETHEUS_MULTIPROC_DIR is used when set (systemd: a RuntimeDirectory, empty at every
start); otherwise a private temporary directory is created here, before any worker
imports prometheus_client, and removed on exit. Files of dead workers are marked in
``child_exit``.
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import shutil
import tempfile


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    return default if not raw else raw not in ("0", "false", "no", "off")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return multiprocessing.cpu_count()


# -- metrics directory: must exist in the environment before any worker starts ---------
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="facematch-metrics-")
METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]
os.makedirs(METRICS_DIR, exist_ok=True)
# one inference thread per request unless told otherwise (see the module docstring)
os.environ.setdefault("FACEMATCH_ONNX_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("FACEMATCH_FAISS_THREADS", "1"))

# -- server ------------------------------------------------------------------------------
wsgi_app = "flask_backend:create_app()"
bind = [b.strip() for b in os.environ.get("FACEMATCH_BIND", "127.0.0.1:5000").split(",") if b.strip()]
workers = _int("FACEMATCH_WEB_WORKERS", max(2, _cores()))
# gthread with a listening socket per worker: the kernel spreads connections over the workers
# instead of the first to wake taking them all (flask_backend/gunicorn_worker.py says why)
worker_class = "flask_backend.gunicorn_worker.ReusePortThreadWorker"
reuse_port = _flag("FACEMATCH_WEB_REUSE_PORT", True)
threads = _int("FACEMATCH_WEB_THREADS", 2)
timeout = _int("FACEMATCH_WEB_TIMEOUT", 120)  # a 24 MP photo from a slow URL stays well under this
graceful_timeout = _int("FACEMATCH_WEB_GRACEFUL_TIMEOUT", 30)
keepalive = _int("FACEMATCH_WEB_KEEPALIVE", 5)
# Off by default: a recycled worker reloads its engines and event caches while requests queue
# (p99 1.4 s at 2000). The soak benchmark (scripts/bench_load.py --soak) shows flat RSS, so
# there is no leak to bound; set it only to contain a leak of your own.
max_requests = _int("FACEMATCH_WEB_MAX_REQUESTS", 0)
max_requests_jitter = _int("FACEMATCH_WEB_MAX_REQUESTS_JITTER", 200)  # ... not all at once, when on
preload_app = False  # each worker builds its own app, engines and store after fork
forwarded_allow_ips = os.environ.get("FACEMATCH_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"  # the workers' heartbeat files: never block on a slow disk
# gunicorn >= 25 opens a control socket under $HOME by default; opt in only.
control_socket_disable = not os.environ.get("FACEMATCH_WEB_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["FACEMATCH_WEB_CONTROL_SOCKET"]

# -- logging -----------------------------------------------------------------------------
accesslog = os.environ.get("FACEMATCH_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("FACEMATCH_LOG_LEVEL", "info").lower()
# path without query string (signed photo URLs and tokens stay out of logs), status,
# bytes, duration, request id
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'
limit_request_line = 8190


# -- hooks -------------------------------------------------------------------------------
def on_starting(server) -> None:
    """Master start: drop metric files of a previous run (their pids are gone)."""
    for path in glob.glob(os.path.join(METRICS_DIR, "*.db")):
        os.remove(path)


def post_worker_init(worker) -> None:
    """Load the engines in the fresh worker, before it accepts requests."""
    if not _flag("FACEMATCH_WEB_WARMUP", True):
        return
    app = getattr(worker, "wsgi", None)
    services = getattr(app, "extensions", {}).get("facematch") if app is not None else None
    if services is not None:
        ready = services.engines.ready_spaces()
        worker.log.info("worker %s ready: engines %s", worker.pid, ",".join(ready) or "none")


def child_exit(server, worker) -> None:
    """A worker is gone: its live gauges must not be summed any more."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, METRICS_DIR)


def on_exit(server) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
