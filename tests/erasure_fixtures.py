"""Finding a deleted embedding's bytes in the data directory (SQLite file, -wal, snapshots)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def stored_blobs(data_dir: Path, event_id: str, photo_id: str) -> list[bytes]:
    """The exact bytes the store keeps for a photo's embeddings (read-only peek at the DB)."""
    conn = sqlite3.connect(f"file:{data_dir / 'facestore.sqlite3'}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT f.embedding FROM faces f JOIN photos p ON p.pid = f.pid JOIN spaces s ON s.sid = p.sid "
            "WHERE s.event_id=? AND p.photo_id=?",
            (event_id, photo_id),
        ).fetchall()
    finally:
        conn.close()
    return [bytes(r[0]) for r in rows]


def files_holding(data_dir: Path, needle: bytes) -> list[str]:
    """Every file under ``data_dir`` whose bytes contain ``needle`` (relative paths)."""
    hits = []
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and needle in path.read_bytes():
            hits.append(str(path.relative_to(data_dir)))
    return hits


def assert_gone(data_dir: Path, blobs: list[bytes]) -> None:
    assert blobs, "no stored bytes to look for"
    for blob in blobs:
        held = files_holding(data_dir, blob)
        assert held == [], f"a deleted embedding is still in {held}"
        held = files_holding(data_dir, blob[:24])
        assert held == [], f"a fragment of a deleted embedding is still in {held}"  # not even a fragment
