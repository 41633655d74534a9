"""Access tables in the store's database: API keys, event access, forget records, secrets.

The SQL is portable (SQLite and PostgreSQL, store/sql.py's conventions; the PostgreSQL
DDL is in store/postgres.py). They live in the same database as the faces (so every host on one store shares keys, codes
and the forget log, and a move to another database takes them along). Every function takes
an open connection; callers choose the transaction (``Database.read()`` / ``write()``).
Nothing here ever holds a key, a code or an address in clear: only their hashes.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name        TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,     -- sha256 hex of the key (keys are 256-bit random)
    role        TEXT NOT NULL,            -- admin | organizer | reader
    patterns    TEXT NOT NULL,            -- JSON list of fnmatch patterns over event ids
    created_at  REAL NOT NULL,
    revoked_at  REAL
);
CREATE TABLE IF NOT EXISTS event_access (
    event_id    TEXT PRIMARY KEY,
    mode        TEXT NOT NULL,            -- open | code
    code_hash   TEXT,                     -- "scrypt$n$r$p$salt_hex$hash_hex"
    updated_at  REAL NOT NULL,
    updated_by  TEXT
);
CREATE TABLE IF NOT EXISTS forget_requests (
    rid           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT NOT NULL,
    created_at    REAL NOT NULL,
    client_hash   TEXT NOT NULL,          -- keyed HMAC of the client address, never the address
    faces_removed TEXT NOT NULL,          -- JSON {space: count}
    photos        TEXT NOT NULL           -- JSON sorted list of photo ids that lost a face
);
CREATE INDEX IF NOT EXISTS forget_requests_event ON forget_requests (event_id, rid);
CREATE TABLE IF NOT EXISTS access_secrets (
    name        TEXT PRIMARY KEY,
    value       BLOB NOT NULL,
    created_at  REAL NOT NULL
);
"""


class AccessDbError(Exception):
    """A key/access write the database refused (e.g. a duplicate key name)."""


@dataclass(frozen=True)
class KeyRow:
    name: str
    role: str
    patterns: tuple[str, ...]
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class AccessRow:
    event_id: str
    mode: str
    code_hash: str | None
    updated_at: float


def _key_row(row: sqlite3.Row | tuple) -> KeyRow:
    name, role, patterns, created_at, revoked_at = row
    return KeyRow(name, role, tuple(json.loads(patterns)), float(created_at),
                  None if revoked_at is None else float(revoked_at))


# -- keys -----------------------------------------------------------------------------------
def insert_key(c: sqlite3.Connection, name: str, key_hash: str, role: str, patterns: list[str]) -> None:
    """A new key; a revoked key's name may be reused, an active one may not."""
    row = c.execute("SELECT revoked_at FROM api_keys WHERE name=?", (name,)).fetchone()
    if row is not None and row[0] is None:
        raise AccessDbError(f"a key named {name!r} exists (revoke it first)")
    c.execute("DELETE FROM api_keys WHERE name=?", (name,))
    c.execute("INSERT INTO api_keys (name, key_hash, role, patterns, created_at) VALUES (?,?,?,?,?)",
              (name, key_hash, role, json.dumps(patterns), time.time()))


def key_by_hash(c: sqlite3.Connection, key_hash: str) -> KeyRow | None:
    row = c.execute("SELECT name, role, patterns, created_at, revoked_at FROM api_keys WHERE key_hash=?",
                    (key_hash,)).fetchone()
    return None if row is None else _key_row(row)


def list_keys(c: sqlite3.Connection) -> list[KeyRow]:
    rows = c.execute("SELECT name, role, patterns, created_at, revoked_at FROM api_keys ORDER BY name").fetchall()
    return [_key_row(r) for r in rows]


def revoke_key(c: sqlite3.Connection, name: str) -> bool:
    cur = c.execute("UPDATE api_keys SET revoked_at=? WHERE name=? AND revoked_at IS NULL", (time.time(), name))
    return cur.rowcount > 0


def any_active_key(c: sqlite3.Connection) -> bool:
    return c.execute("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1").fetchone() is not None


# -- event access ------------------------------------------------------------------------------
def get_access(c: sqlite3.Connection, event_id: str) -> AccessRow | None:
    row = c.execute("SELECT event_id, mode, code_hash, updated_at FROM event_access WHERE event_id=?",
                    (event_id,)).fetchone()
    return None if row is None else AccessRow(row[0], row[1], row[2], float(row[3]))


def set_access(c: sqlite3.Connection, event_id: str, mode: str, code_hash: str | None, by: str | None) -> None:
    c.execute(
        "INSERT INTO event_access (event_id, mode, code_hash, updated_at, updated_by) VALUES (?,?,?,?,?) "
        "ON CONFLICT (event_id) DO UPDATE SET mode=excluded.mode, code_hash=excluded.code_hash, "
        "updated_at=excluded.updated_at, updated_by=excluded.updated_by",
        (event_id, mode, code_hash, time.time(), by),
    )


# -- forget records ----------------------------------------------------------------------------
def add_forget_record(c: sqlite3.Connection, event_id: str, client_hash: str, faces_removed: dict[str, int],
                      photos: list[str]) -> int:
    row = c.execute(
        "INSERT INTO forget_requests (event_id, created_at, client_hash, faces_removed, photos) VALUES (?,?,?,?,?) "
        "RETURNING rid",
        (event_id, time.time(), client_hash, json.dumps(faces_removed, sort_keys=True), json.dumps(sorted(photos))),
    ).fetchone()
    return int(row[0])


def forget_records(c: sqlite3.Connection, event_id: str, *, limit: int, before: int | None = None) -> list[dict]:
    rows = c.execute(
        "SELECT rid, created_at, client_hash, faces_removed, photos FROM forget_requests "
        "WHERE event_id=? AND rid < ? ORDER BY rid DESC LIMIT ?",
        (event_id, before if before is not None else 2**62, limit),
    ).fetchall()
    return [
        {"id": rid, "event_id": event_id, "created_at": created_at, "client_hash": client_hash,
         "faces_removed": json.loads(faces), "photos": json.loads(photos)}
        for rid, created_at, client_hash, faces, photos in rows
    ]


# -- secrets -------------------------------------------------------------------------------------
def secret(c: sqlite3.Connection, name: str, nbytes: int = 32) -> bytes:
    """The named server secret, created on first use (the first writer wins; all hosts agree)."""
    c.execute("INSERT INTO access_secrets (name, value, created_at) VALUES (?,?,?) ON CONFLICT (name) DO NOTHING",
              (name, secrets.token_bytes(nbytes), time.time()))
    return bytes(c.execute("SELECT value FROM access_secrets WHERE name=?", (name,)).fetchone()[0])
