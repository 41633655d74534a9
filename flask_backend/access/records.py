"""The forget-me log: event, time, photos and faces removed, and a keyed hash of the client
address. No image, no embedding, no score, no address: the hash only tells an organizer that
two requests came from one client. The HMAC secret is created in the store on first use, so
every host on one store hashes alike; without the store's secret the hash says nothing.
"""

from __future__ import annotations

import threading

from ..services import Services
from ..store import access_db
from .addresses import client_hash

SECRET_NAME = "forget_client_hash"
_secret: dict[str, bytes] = {}  # per store file
_lock = threading.Lock()


def _hash_secret(services: Services) -> bytes:
    key = services.store.db.path
    with _lock:
        if key not in _secret:
            with services.store.db.write() as c:
                _secret[key] = access_db.secret(c, SECRET_NAME)
        return _secret[key]


def record_forget(services: Services, event_id: str, address: str, result: dict) -> int:
    photos = sorted({row["photo_id"] for rows in result["removed"].values() for row in rows})
    digest = client_hash(_hash_secret(services), address)
    with services.store.db.write() as c:
        return access_db.add_forget_record(c, event_id, digest, dict(result["faces_removed"]), photos)


def list_forgets(services: Services, event_id: str, *, limit: int, before: int | None) -> list[dict]:
    with services.store.db.read() as c:
        return access_db.forget_records(c, event_id, limit=limit, before=before)
