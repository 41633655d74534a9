"""The web app's Firestore client, for the dashboard's retry of Firestore photos.

It uses the same configuration as the worker and the CLI (``FACEMATCH_FIREBASE_CONFIG``,
``FACEMATCH_FIREBASE_PROJECT``, or ``GOOGLE_APPLICATION_CREDENTIALS`` / the emulator), and is
opened on the first retry only: a web app without Firebase never imports firebase-admin.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from . import errors
from .sources import claims

_lock = threading.Lock()
_client: dict[int, Any] = {}


def client() -> Any:
    pid = os.getpid()  # gRPC channels do not survive fork: one client per process
    with _lock:
        if pid not in _client:
            from .sources.firestore import FirestoreConfigError, connect

            try:
                _client[pid] = connect(os.environ.get("FACEMATCH_FIREBASE_CONFIG") or None,
                                       os.environ.get("FACEMATCH_FIREBASE_PROJECT") or None)
            except FirestoreConfigError as exc:
                raise errors.firestore_unavailable(str(exc)) from None
        return _client[pid]


def retry_pending(origin: str) -> None:
    try:
        claims.retry_pending(client(), origin)
    except errors.ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - Firestore unreachable, document gone: say so
        raise errors.firestore_unavailable(f"{type(exc).__name__}: {exc}"[:300]) from None
