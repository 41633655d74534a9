"""Thumbnails and ingest outcomes: tables in the store's database, next to the photos.

They live in the same database as the faces (SQLite or PostgreSQL: portable SQL, the
PostgreSQL DDL is in store/postgres.py), so every host serving the store has the
thumbnails, and a delete of a photo or an event removes them in the same transaction as
its faces (``FaceStore.delete_photo`` / ``delete_event`` call ``delete_photo_rows`` /
``delete_event_rows``). Every function takes an open connection; callers choose the
transaction (``Database.read()`` / ``write()``).

``ingest_outcomes`` holds what happened to every photo the pipeline was asked to ingest
(API, worker, CLI): the organizer dashboard's failed photos and their reasons. It is one
row per (event, photo), replaced at each attempt.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS thumbnails (
    event_id    TEXT NOT NULL,
    photo_id    TEXT NOT NULL,
    mime        TEXT NOT NULL,            -- image/webp | image/jpeg
    data        BLOB NOT NULL,
    etag        TEXT NOT NULL,            -- sha256 prefix of data
    width       INTEGER NOT NULL,         -- the thumbnail's size
    height      INTEGER NOT NULL,
    src_width   INTEGER NOT NULL,         -- the original's (EXIF-oriented) size: bboxes are in it
    src_height  INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (event_id, photo_id)
);
CREATE TABLE IF NOT EXISTS ingest_outcomes (
    event_id    TEXT NOT NULL,
    photo_id    TEXT NOT NULL,
    status      TEXT NOT NULL,            -- done | no_face | failed | retrying | pending
    code        TEXT,                     -- error code of a failure
    message     TEXT,
    source_url  TEXT,
    via         TEXT NOT NULL,            -- api | worker | cli
    origin      TEXT,                     -- e.g. firestore:events/x/photos/y (retry sets it pending)
    faces       INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (event_id, photo_id)
);
CREATE INDEX IF NOT EXISTS ingest_outcomes_status ON ingest_outcomes (event_id, status, updated_at);
"""

OUTCOME_STATUSES = ("done", "no_face", "failed", "retrying", "pending")


@dataclass(frozen=True)
class Thumbnail:
    mime: str
    data: bytes
    etag: str
    width: int
    height: int
    src_width: int
    src_height: int


@dataclass(frozen=True)
class ThumbInfo:
    """A thumbnail without its bytes: what match rows need."""

    etag: str
    src_width: int
    src_height: int


@dataclass(frozen=True)
class Outcome:
    event_id: str
    photo_id: str
    status: str
    code: str | None
    message: str | None
    source_url: str | None
    via: str
    origin: str | None
    faces: int
    attempts: int
    updated_at: float

    def to_json(self) -> dict:
        return {"photo_id": self.photo_id, "status": self.status, "code": self.code, "message": self.message,
                "source_url": self.source_url, "via": self.via, "faces": self.faces, "attempts": self.attempts,
                "updated_at": round(self.updated_at, 3)}


# -- thumbnails ---------------------------------------------------------------------------------
def put_thumbnail(c: sqlite3.Connection, event_id: str, photo_id: str, thumb: Thumbnail) -> None:
    c.execute(
        "INSERT INTO thumbnails (event_id, photo_id, mime, data, etag, width, height, src_width, "
        "src_height, created_at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (event_id, photo_id) DO UPDATE SET "
        "mime=excluded.mime, data=excluded.data, etag=excluded.etag, width=excluded.width, height=excluded.height, "
        "src_width=excluded.src_width, src_height=excluded.src_height, created_at=excluded.created_at",
        (event_id, photo_id, thumb.mime, thumb.data, thumb.etag, thumb.width, thumb.height, thumb.src_width,
         thumb.src_height, time.time()),
    )


def etag_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def get_thumbnail(c: sqlite3.Connection, event_id: str, photo_id: str) -> Thumbnail | None:
    row = c.execute(
        "SELECT mime, data, etag, width, height, src_width, src_height FROM thumbnails WHERE event_id=? AND photo_id=?",
        (event_id, photo_id),
    ).fetchone()
    return Thumbnail(row[0], bytes(row[1]), row[2], int(row[3]), int(row[4]), int(row[5]), int(row[6])) if row else None


def photos_without_thumbnail(c: sqlite3.Connection, event_id: str) -> list[tuple[str, str]]:
    """(photo_id, source_url) of the event's photos with a source URL and no thumbnail (backfill)."""
    rows = c.execute(
        "SELECT p.photo_id, MAX(p.source_url) FROM spaces s JOIN photos p ON p.sid = s.sid "
        "WHERE s.event_id=? AND p.source_url IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM thumbnails t WHERE t.event_id=s.event_id AND t.photo_id=p.photo_id) "
        "GROUP BY p.photo_id ORDER BY p.photo_id",
        (event_id,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


# -- outcomes -----------------------------------------------------------------------------------
def put_outcome(c: sqlite3.Connection, o: Outcome) -> None:
    c.execute(
        "INSERT INTO ingest_outcomes (event_id, photo_id, status, code, message, source_url, via, origin, "
        "faces, attempts, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (event_id, photo_id) DO UPDATE SET "
        "status=excluded.status, code=excluded.code, message=excluded.message, source_url=excluded.source_url, "
        "via=excluded.via, origin=excluded.origin, faces=excluded.faces, attempts=excluded.attempts, "
        "updated_at=excluded.updated_at",
        (o.event_id, o.photo_id, o.status, o.code, o.message, o.source_url, o.via, o.origin, o.faces, o.attempts,
         o.updated_at),
    )


_OUTCOME_COLS = "event_id, photo_id, status, code, message, source_url, via, origin, faces, attempts, updated_at"


def _outcome(row: tuple) -> Outcome:
    return Outcome(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], int(row[8]), int(row[9]),
                   float(row[10]))


def get_outcome(c: sqlite3.Connection, event_id: str, photo_id: str) -> Outcome | None:
    row = c.execute(f"SELECT {_OUTCOME_COLS} FROM ingest_outcomes WHERE event_id=? AND photo_id=?",
                    (event_id, photo_id)).fetchone()
    return _outcome(row) if row else None


def list_outcomes(c: sqlite3.Connection, event_id: str, status: str | None, limit: int) -> list[Outcome]:
    sql = f"SELECT {_OUTCOME_COLS} FROM ingest_outcomes WHERE event_id=?"
    args: tuple = (event_id,)
    if status is not None:
        sql += " AND status=?"
        args += (status,)
    sql += " ORDER BY updated_at DESC, photo_id LIMIT ?"
    return [_outcome(r) for r in c.execute(sql, (*args, int(limit))).fetchall()]


def outcome_counts(c: sqlite3.Connection, event_id: str | None = None) -> dict[str, dict[str, int]]:
    """{event_id: {status: count}} (one event, or all)."""
    sql = "SELECT event_id, status, COUNT(*) FROM ingest_outcomes"
    args: tuple = ()
    if event_id is not None:
        sql += " WHERE event_id=?"
        args = (event_id,)
    out: dict[str, dict[str, int]] = {}
    for ev, status, n in c.execute(sql + " GROUP BY event_id, status", args).fetchall():
        out.setdefault(ev, {})[status] = int(n)
    return out


# -- deletes (called inside FaceStore's delete transactions) -------------------------------------
def delete_photo_rows(c: sqlite3.Connection, event_id: str, photo_id: str) -> None:
    c.execute("DELETE FROM thumbnails WHERE event_id=? AND photo_id=?", (event_id, photo_id))
    c.execute("DELETE FROM ingest_outcomes WHERE event_id=? AND photo_id=?", (event_id, photo_id))


def delete_event_rows(c: sqlite3.Connection, event_id: str) -> None:
    c.execute("DELETE FROM thumbnails WHERE event_id=?", (event_id,))
    c.execute("DELETE FROM ingest_outcomes WHERE event_id=?", (event_id,))


def event_has_rows(c: sqlite3.Connection, event_id: str) -> bool:
    """An event known only by its outcomes (every photo failed) can still be deleted."""
    return c.execute("SELECT 1 FROM ingest_outcomes WHERE event_id=? UNION ALL SELECT 1 FROM thumbnails "
                     "WHERE event_id=? LIMIT 1", (event_id, event_id)).fetchone() is not None
