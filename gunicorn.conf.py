"""gunicorn settings, each from the environment with a default for one small box.

Nothing heavy happens in the master: the app factory builds only lazy objects, and the
engines, onnxruntime sessions, FAISS and SQLite open in each worker on first use (FAISS
and onnxruntime thread pools do not survive fork). workers x threads x FACEMATCH_ONNX_THREADS
should not exceed the cores by much.
"""

from __future__ import annotations

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


bind = os.environ.get("FACEMATCH_BIND", "127.0.0.1:5000")
workers = _int("FACEMATCH_WEB_WORKERS", max(2, multiprocessing.cpu_count()))
worker_class = "gthread"
threads = _int("FACEMATCH_WEB_THREADS", 2)
timeout = _int("FACEMATCH_WEB_TIMEOUT", 120)
graceful_timeout = _int("FACEMATCH_WEB_GRACEFUL_TIMEOUT", 30)
keepalive = 5
max_requests = _int("FACEMATCH_WEB_MAX_REQUESTS", 2000)
max_requests_jitter = _int("FACEMATCH_WEB_MAX_REQUESTS_JITTER", 200)
preload_app = False  # each worker builds its own app, engines and store
accesslog = os.environ.get("FACEMATCH_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("FACEMATCH_LOG_LEVEL", "info").lower()
# No query strings in the access log (signed photo URLs can carry tokens).
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'
limit_request_line = 8190
