"""The face store's SQL: functions that take an open connection, one per question asked.

Shared by both backends (store/sqlite.py, store/postgres.py): the statements are written
once, in SQL both engines accept (``?`` placeholders, ``RETURNING``, ``ON CONFLICT``),
and the few spots where they differ are asked of the connection's ``dialect``
(a list of ids as one parameter, row locks, index hints). Callers choose the transaction
(``backend.read()`` / ``write()``); nothing here commits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import errors
from ..errors import ApiError
from .db import TOMB_DELETED, TOMB_REPLACED
from .models import PhotoState, Space

FETCH_CHUNK = 8192
PRUNE_EVERY = 64  # try pruning old tombstones once per this many writes to a space
PRUNE_SCAN = 20_000

# A face's stored fields by how many prepare_faces gives: the box, det_score and norm; plus
# the face quality columns once faces carry them (schema 2 on both backends).
_FACE_COLUMNS = {
    6: "x1, y1, x2, y2, det_score, norm",
    11: "x1, y1, x2, y2, det_score, norm, size_px, sharpness, yaw, pitch, quality",
}

_SPACE_KEYS = ("sid", "engine", "model_id", "dim", "seq", "tomb_floor", "n_faces")


class Delta:
    """Counter changes of one write transaction to one space."""

    __slots__ = ("empty", "faces", "photos")

    def __init__(self) -> None:
        self.photos = self.faces = self.empty = 0


# -- dialect spots ------------------------------------------------------------
def _postgres(c: Any) -> bool:
    return getattr(c, "dialect", "sqlite") == "postgres"


def in_ids(c: Any, col: str, values: Iterable[int]) -> tuple[str, Any]:
    """``(condition, param)``: ``col`` is one of a list of integers passed as ONE parameter.

    PostgreSQL: ``= ANY(array)`` (an index scan per element; an ``IN (SELECT unnest …)``
    may be planned as a scan of the whole table). SQLite: a JSON array through json_each."""
    if _postgres(c):
        return f"{col} = ANY(?::bigint[])", [int(v) for v in values]
    return f"{col} IN (SELECT value FROM json_each(?))", "[" + ",".join(str(int(v)) for v in values) + "]"


def in_texts(c: Any, col: str, values: Iterable[str]) -> tuple[str, Any]:
    if _postgres(c):
        return f"{col} = ANY(?::text[])", list(values)
    return f"{col} IN (SELECT value FROM json_each(?))", json.dumps(list(values))


def _for_update(c: Any) -> str:
    # SQLite writers hold the whole database (BEGIN IMMEDIATE); PostgreSQL writers lock the
    # space rows they bump, so two hosts writing one space take turns and seq stays a sequence.
    return " FOR UPDATE" if _postgres(c) else ""


# -- writes -------------------------------------------------------------------
def space_for_write(c: Any, event_id: str, space: Space, now: float) -> tuple[int, int]:
    """The space's sid (created when new) and the seq this write stamps; locks the space row."""
    sql = "SELECT sid, engine, model_id, dim, seq FROM spaces WHERE event_id=? AND name=?" + _for_update(c)
    row = c.execute(sql, (event_id, space.name)).fetchone()
    if row is None:
        c.execute(
            "INSERT INTO spaces (event_id, name, engine, model_id, dim, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (event_id, name) DO NOTHING",
            (event_id, space.name, space.engine, space.model_id, int(space.dim), now, now),
        )
        row = c.execute(sql, (event_id, space.name)).fetchone()  # ours, or a racing host's
    sid, engine, model_id, dim, seq = row
    if (engine, model_id, int(dim)) != (space.engine, space.model_id, int(space.dim)):
        raise errors.space_mismatch(event_id, Space(space.name, engine, model_id, int(dim)), space)
    return int(sid), int(seq) + 1


def put_one(
    c: Any, sid: int, seq: int, photo_id: str, emb: np.ndarray, meta: list[tuple[float, ...]],
    source_url: str | None, now: float, delta: Delta,
) -> int:
    """Store (or replace: old faces tombstoned) one photo's faces; returns the face count."""
    k = len(meta)
    row = c.execute("SELECT pid, faces FROM photos WHERE sid=? AND photo_id=?", (sid, photo_id)).fetchone()
    if row is not None:
        pid, old = int(row[0]), int(row[1])
        if old:
            c.execute(
                "INSERT INTO tombstones (sid, seq, face_id, kind, created_at) "
                "SELECT sid, ?, face_id, ?, ? FROM faces WHERE pid=?",
                (seq, TOMB_REPLACED, now, pid),
            )
            c.execute("DELETE FROM faces WHERE pid=?", (pid,))
        c.execute("UPDATE photos SET source_url=?, faces=?, ingested_at=? WHERE pid=?", (source_url, k, now, pid))
        delta.faces -= old
        delta.empty -= old == 0
    else:
        pid = int(c.execute(
            "INSERT INTO photos (sid, photo_id, source_url, faces, ingested_at) VALUES (?,?,?,?,?) RETURNING pid",
            (sid, photo_id, source_url, k, now),
        ).fetchone()[0])
        delta.photos += 1
    if k:
        emb = emb.astype("<f4", copy=False)
        cols = _FACE_COLUMNS[len(meta[0])]
        c.executemany(
            f"INSERT INTO faces (sid, pid, seq, {cols}, embedding) VALUES ({','.join('?' * (len(meta[0]) + 4))})",
            [(sid, pid, seq, *m, emb[i].tobytes()) for i, m in enumerate(meta)],
        )
    delta.faces += k
    delta.empty += k == 0
    return k


def finish_write(c: Any, sid: int, seq: int, now: float, delta: Delta, retention_s: float) -> None:
    c.execute(
        "UPDATE spaces SET seq=?, updated_at=?, n_photos=n_photos+?, n_faces=n_faces+?, n_empty=n_empty+? "
        "WHERE sid=?",
        (seq, now, delta.photos, delta.faces, delta.empty, sid),
    )
    if seq % PRUNE_EVERY == 0:
        prune_tombstones(c, sid, now, retention_s)


def prune_tombstones(c: Any, sid: int, now: float, retention_s: float) -> None:
    """Forget tombstones older than the retention (and than the newest snapshot).

    A cache or snapshot older than ``tomb_floor`` can no longer catch up incrementally
    and is rebuilt, so this only trims history nobody should still need.
    """
    floor, snap_seq = c.execute("SELECT tomb_floor, snap_seq FROM spaces WHERE sid=?", (sid,)).fetchone()
    bound = c.execute(
        "SELECT MAX(seq) FROM (SELECT seq, created_at FROM tombstones WHERE sid=? AND seq>? "
        "ORDER BY seq LIMIT ?) t WHERE created_at < ?",
        (sid, floor, PRUNE_SCAN, now - retention_s),
    ).fetchone()[0]
    if bound is None:
        return
    if snap_seq:
        bound = min(bound, snap_seq)
    if bound > floor:
        c.execute("DELETE FROM tombstones WHERE sid=? AND seq<=?", (sid, bound))
        c.execute("UPDATE spaces SET tomb_floor=? WHERE sid=?", (bound, sid))


def note_snapshot(c: Any, sid: int, seq: int) -> None:
    c.execute("UPDATE spaces SET snap_seq=? WHERE sid=? AND snap_seq<?", (seq, sid, seq))


# -- deletes ------------------------------------------------------------------
def delete_photo(c: Any, event_id: str, photo_id: str, now: float, retention_s: float) -> dict[str, int]:
    """Remove a photo from every space: {space_name: faces_removed}. 404 unknown_photo if absent."""
    rows = c.execute(
        "SELECT s.sid, s.name, s.seq, p.pid, p.faces FROM spaces s JOIN photos p ON p.sid = s.sid "
        "WHERE s.event_id=? AND p.photo_id=? ORDER BY s.sid" + (" FOR UPDATE OF s" if _postgres(c) else ""),
        (event_id, photo_id),
    ).fetchall()
    if not rows:
        raise errors.unknown_photo(event_id, photo_id)
    out: dict[str, int] = {}
    for sid, name, seq, pid, faces in rows:
        seq = int(seq) + 1
        c.execute(
            "INSERT INTO tombstones (sid, seq, face_id, kind, created_at) "
            "SELECT sid, ?, face_id, ?, ? FROM faces WHERE pid=?",
            (seq, TOMB_DELETED, now, pid),
        )
        c.execute("DELETE FROM faces WHERE pid=?", (pid,))
        c.execute("DELETE FROM photos WHERE pid=?", (pid,))
        delta = Delta()
        delta.photos, delta.faces, delta.empty = -1, -int(faces), -(int(faces) == 0)
        finish_write(c, sid, seq, now, delta, retention_s)
        out[name] = int(faces)
    return out


def delete_faces(c: Any, event_id: str, space_name: str, ids: list[int], now: float, retention_s: float) -> int:
    """Remove individual faces of one space (their photos stay, with fewer faces). Returns count."""
    row = c.execute(
        "SELECT sid, seq FROM spaces WHERE event_id=? AND name=?" + _for_update(c), (event_id, space_name)
    ).fetchone()
    if row is None:
        raise missing(c, event_id, space_name)
    if not ids:
        return 0
    sid, seq = int(row[0]), int(row[1]) + 1
    frag, param = in_ids(c, "face_id", ids)
    found = c.execute(f"SELECT face_id, pid FROM faces WHERE {frag} AND sid=?", (param, sid)).fetchall()
    if not found:
        return 0
    frag, param = in_ids(c, "face_id", [f for f, _ in found])
    c.execute(
        f"INSERT INTO tombstones (sid, seq, face_id, kind, created_at) SELECT ?, ?, face_id, ?, ? FROM faces "
        f"WHERE {frag}",
        (sid, seq, TOMB_DELETED, now, param),
    )
    c.execute(f"DELETE FROM faces WHERE {frag}", (param,))
    per_photo: dict[int, int] = {}
    for _f, pid in found:
        per_photo[pid] = per_photo.get(pid, 0) + 1
    delta = Delta()
    for pid, n in per_photo.items():
        left = c.execute("UPDATE photos SET faces=faces-? WHERE pid=? RETURNING faces", (n, pid)).fetchone()[0]
        delta.empty += left == 0
    delta.faces = -len(found)
    finish_write(c, sid, seq, now, delta, retention_s)
    return len(found)


def space_sid(c: Any, event_id: str, space_name: str) -> int | None:
    row = c.execute("SELECT sid FROM spaces WHERE event_id=? AND name=?", (event_id, space_name)).fetchone()
    return None if row is None else int(row[0])


def event_sids(c: Any, event_id: str) -> list[tuple[int, str]]:
    rows = c.execute("SELECT sid, name FROM spaces WHERE event_id=? ORDER BY sid", (event_id,)).fetchall()
    return [(int(r[0]), r[1]) for r in rows]


def drop_sid(c: Any, sid: int) -> int:
    """Remove one space with all its photos, faces and change log; returns faces removed."""
    removed = c.execute("SELECT COUNT(*) FROM faces WHERE sid=?", (sid,)).fetchone()[0]
    c.execute("DELETE FROM faces WHERE sid=?", (sid,))
    c.execute("DELETE FROM photos WHERE sid=?", (sid,))
    c.execute("DELETE FROM tombstones WHERE sid=?", (sid,))
    c.execute("DELETE FROM spaces WHERE sid=?", (sid,))
    return int(removed)


# -- queries ------------------------------------------------------------------
def space_row(c: Any, event_id: str, name: str) -> dict[str, Any] | None:
    row = c.execute(
        "SELECT sid, engine, model_id, dim, seq, tomb_floor, n_faces FROM spaces WHERE event_id=? AND name=?",
        (event_id, name),
    ).fetchone()
    return None if row is None else dict(zip(_SPACE_KEYS, row, strict=True))


def missing(c: Any, event_id: str, name: str) -> ApiError:
    if c.execute("SELECT 1 FROM spaces WHERE event_id=? LIMIT 1", (event_id,)).fetchone() is None:
        return errors.unknown_event(event_id)
    return errors.not_indexed(event_id, name)


def space_of(c: Any, event_id: str, space_name: str) -> Space | None:
    row = c.execute(
        "SELECT name, engine, model_id, dim FROM spaces WHERE event_id=? AND name=?", (event_id, space_name)
    ).fetchone()
    return Space(row[0], row[1], row[2], int(row[3])) if row else None


def event_exists(c: Any, event_id: str) -> bool:
    return c.execute("SELECT 1 FROM spaces WHERE event_id=? LIMIT 1", (event_id,)).fetchone() is not None


_PHOTO_STATE = (
    "SELECT p.photo_id, p.source_url, p.faces, p.ingested_at, s.model_id FROM spaces s "
    "JOIN photos p ON p.sid = s.sid WHERE s.event_id=?"
)


def _state(r: Sequence[Any]) -> PhotoState:
    return PhotoState(r[0], r[1], int(r[2]), float(r[3]), r[4])


def photo_state(c: Any, event_id: str, photo_id: str, space_name: str) -> PhotoState | None:
    row = c.execute(_PHOTO_STATE + " AND s.name=? AND p.photo_id=?", (event_id, space_name, photo_id)).fetchone()
    return _state(row) if row else None


def photo_states(c: Any, event_id: str, space_name: str, photo_ids: Sequence[str]) -> dict[str, PhotoState]:
    frag, param = in_texts(c, "p.photo_id", photo_ids)
    rows = c.execute(_PHOTO_STATE + f" AND s.name=? AND {frag}", (event_id, space_name, param)).fetchall()
    return {r[0]: _state(r) for r in rows}


def list_photos(c: Any, event_id: str, space_name: str | None) -> list[PhotoState]:
    sql, args = _PHOTO_STATE, [event_id]
    if space_name is not None:
        sql += " AND s.name=?"
        args.append(space_name)
    return [_state(r) for r in c.execute(sql + " ORDER BY p.photo_id, s.name", args).fetchall()]


def totals(c: Any) -> dict[str, dict[str, int]]:
    rows = c.execute(
        "SELECT name, COUNT(*), SUM(n_photos), SUM(n_faces) FROM spaces GROUP BY name ORDER BY name"
    ).fetchall()
    return {r[0]: {"events": int(r[1]), "photos": int(r[2] or 0), "faces": int(r[3] or 0)} for r in rows}


def list_events(c: Any) -> list[str]:
    return [r[0] for r in c.execute("SELECT DISTINCT event_id FROM spaces ORDER BY event_id").fetchall()]


def event_summary(c: Any, event_id: str) -> dict | None:
    rows = c.execute(
        "SELECT name, engine, model_id, dim, n_photos, n_faces, n_empty, updated_at, sid "
        "FROM spaces WHERE event_id=? ORDER BY name",
        (event_id,),
    ).fetchall()
    if not rows:
        return None
    if len(rows) == 1:
        photos = rows[0][4]
    else:  # a merge of the spaces' (sid, photo_id) index ranges, no temp b-tree
        photos = c.execute(
            "SELECT COUNT(*) FROM (" + " UNION ".join(["SELECT photo_id FROM photos WHERE sid=?"] * len(rows)) + ") u",
            [r[8] for r in rows],
        ).fetchone()[0]
    return {
        "event_id": event_id,
        "photos": int(photos),
        "spaces": {
            r[0]: {
                "engine": r[1], "model_id": r[2], "dim": int(r[3]), "photos": int(r[4]), "faces": int(r[5]),
                "photos_without_faces": int(r[6]), "updated_at": float(r[7]),
            }
            for r in rows
        },
    }


# -- change log (catch-up) ----------------------------------------------------
# Catch-up reads the changes in (since, upto], ``upto`` being the seq of the space row the
# caller read: a cache brought to ``upto`` then holds exactly what the database vouched for
# at ``upto``, less faces deleted since (their tombstones have a later seq and are applied
# by the next catch-up), even on a connection that sees later commits than that row; a
# change committed after the row was read is left for the next search, never applied
# ahead of its seq. (Searches still read in one snapshot: the rows they return must be
# those of the faces they scored; see store/postgres.py.)
def tombstoned_since(c: Any, sid: int, since: int, *, upto: int) -> tuple[list[int], bool]:
    """Faces removed in (since, upto], and whether any was deleted (not just replaced)."""
    rows = c.execute(
        "SELECT face_id, kind FROM tombstones WHERE sid=? AND seq>? AND seq<=?", (sid, since, upto)
    ).fetchall()
    return [int(r[0]) for r in rows], any(int(r[1]) == TOMB_DELETED for r in rows)


def face_chunks(
    c: Any, sid: int, since: int, dim: int, *, upto: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(ids, pids, norms, vectors) of the space's faces stamped in (since, upto], in chunks, in seq order."""
    cur = c.execute(
        "SELECT face_id, pid, norm, embedding FROM faces WHERE sid=? AND seq>? AND seq<=? ORDER BY seq, face_id",
        (sid, since, upto),
    )
    while True:
        chunk = cur.fetchmany(FETCH_CHUNK)
        if not chunk:
            return
        n = len(chunk)
        ids = np.fromiter((r[0] for r in chunk), dtype=np.int64, count=n)
        pids = np.fromiter((r[1] for r in chunk), dtype=np.int64, count=n)
        norms = np.fromiter((r[2] for r in chunk), dtype=np.float64, count=n)
        vecs = np.frombuffer(b"".join(bytes(r[3]) for r in chunk), dtype="<f4").reshape(n, dim)
        yield ids, pids, norms, vecs


def face_meta(c: Any, sid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every face's (ids, pids, norms) of a space, without the embeddings (snapshot loads)."""
    hint = "" if _postgres(c) else " INDEXED BY faces_sid_meta"  # the covering index, not the table
    rows = c.execute(f"SELECT face_id, pid, norm FROM faces{hint} WHERE sid=?", (sid,)).fetchall()
    n = len(rows)
    return (
        np.fromiter((r[0] for r in rows), dtype=np.int64, count=n),
        np.fromiter((r[1] for r in rows), dtype=np.int64, count=n),
        np.fromiter((r[2] for r in rows), dtype=np.float64, count=n),
    )


def embeddings(c: Any, sid: int, face_ids: list[int]) -> dict[int, bytes]:
    frag, param = in_ids(c, "face_id", face_ids)
    rows = c.execute(f"SELECT face_id, embedding FROM faces WHERE {frag} AND sid=?", (param, sid)).fetchall()
    return {int(r[0]): bytes(r[1]) for r in rows}


def deleted_since(c: Any, sid: int, seq: int) -> bool:
    """True if a face was deleted (not just replaced) after ``seq``: a snapshot that old must go."""
    sql = "SELECT 1 FROM tombstones WHERE sid=? AND seq>? AND kind=? LIMIT 1"
    return c.execute(sql, (sid, seq, TOMB_DELETED)).fetchone() is not None


def changes_since(c: Any, sid: int, seq: int) -> int:
    added = c.execute("SELECT COUNT(*) FROM faces WHERE sid=? AND seq>?", (sid, seq)).fetchone()[0]
    removed = c.execute("SELECT COUNT(*) FROM tombstones WHERE sid=? AND seq>?", (sid, seq)).fetchone()[0]
    return int(added) + int(removed)
