"""What happened to every photo the pipeline was asked to ingest: API, worker and CLI alike.

One row per (event, photo) in the store's ``ingest_outcomes`` table, replaced at each
attempt: ``done`` / ``no_face`` with the face count, ``failed`` (final) or ``retrying`` (the
worker will try again) with the error code and message, ``pending`` after an organizer's
retry of a Firestore photo. The organizer dashboard reads it; Firestore status fields are
written as before (sources/claims.py), this is in addition to them.

A record is best effort: a photo is never refused because its outcome could not be written.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from .errors import ApiError
from .services import Services
from .store import thumbnails_db
from .store.ids import validate_event_id, validate_photo_id
from .store.thumbnails_db import Outcome

log = logging.getLogger(__name__)

MAX_MESSAGE = 1000


def record(
    services: Services,
    event_id: str,
    photo_id: str,
    status: str,
    *,
    via: str,
    faces: int = 0,
    code: str | None = None,
    message: str | None = None,
    source_url: str | None = None,
    origin: str | None = None,
    attempts: int = 1,
) -> None:
    try:
        validate_event_id(event_id)
        validate_photo_id(photo_id)
    except ApiError:  # ids the store refuses cannot have a row (the caller got the 400)
        return
    outcome = Outcome(event_id, photo_id, status, code, (message or "")[:MAX_MESSAGE] or None, source_url, via,
                      origin, int(faces), int(attempts), time.time())
    try:
        with services.store.db.write() as c:
            thumbnails_db.put_outcome(c, outcome)
    except sqlite3.Error:
        log.exception("could not record the outcome of event=%s photo=%s", event_id, photo_id)


def record_result(services: Services, event_id: str, photo_id: str, faces: int, *, via: str,
                  source_url: str | None, origin: str | None = None, attempts: int = 1) -> None:
    record(services, event_id, photo_id, "done" if faces else "no_face", via=via, faces=faces,
           source_url=source_url, origin=origin, attempts=attempts)


def record_error(services: Services, event_id: str, photo_id: str, exc: ApiError, *, via: str,
                 source_url: str | None, origin: str | None = None, attempts: int = 1,
                 status: str = "failed") -> None:
    if exc.status == 503:  # the engine, not the photo: nothing to show as the photo's failure
        return
    record(services, event_id, photo_id, status, via=via, code=exc.code, message=exc.message,
           source_url=source_url, origin=origin, attempts=attempts)


def get(services: Services, event_id: str, photo_id: str) -> Outcome | None:
    with services.store.db.read() as c:
        return thumbnails_db.get_outcome(c, event_id, photo_id)


def listed(services: Services, event_id: str, status: str | None, limit: int) -> list[Outcome]:
    with services.store.db.read() as c:
        return thumbnails_db.list_outcomes(c, event_id, status, limit)


def counts(services: Services, event_id: str | None = None) -> dict[str, dict[str, int]]:
    with services.store.db.read() as c:
        return thumbnails_db.outcome_counts(c, event_id)
