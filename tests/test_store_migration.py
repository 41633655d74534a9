"""A store file written before face quality (schema 1) opens, migrates in place and keeps its faces."""

from __future__ import annotations

import sqlite3

import numpy as np

from flask_backend.store import FaceQualityRow, FaceRecord, FaceStore, Space
from flask_backend.store.db import DB_FILE, SCHEMA_VERSION

SPACE = Space("v2", "insightface", "det500m_mbf128", 8)

# The faces table exactly as schema 1 created it (the other tables did not change).
SCHEMA_1 = """
CREATE TABLE spaces (
    sid INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, name TEXT NOT NULL, engine TEXT NOT NULL,
    model_id TEXT NOT NULL, dim INTEGER NOT NULL, seq INTEGER NOT NULL DEFAULT 0,
    tomb_floor INTEGER NOT NULL DEFAULT 0, snap_seq INTEGER NOT NULL DEFAULT 0,
    n_photos INTEGER NOT NULL DEFAULT 0, n_faces INTEGER NOT NULL DEFAULT 0, n_empty INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (event_id, name));
CREATE TABLE photos (
    pid INTEGER PRIMARY KEY AUTOINCREMENT, sid INTEGER NOT NULL, photo_id TEXT NOT NULL, source_url TEXT,
    faces INTEGER NOT NULL, ingested_at REAL NOT NULL, UNIQUE (sid, photo_id));
CREATE TABLE faces (
    face_id INTEGER PRIMARY KEY AUTOINCREMENT, sid INTEGER NOT NULL, pid INTEGER NOT NULL, seq INTEGER NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    det_score REAL NOT NULL, norm REAL NOT NULL, embedding BLOB NOT NULL);
CREATE TABLE tombstones (
    sid INTEGER NOT NULL, seq INTEGER NOT NULL, face_id INTEGER NOT NULL, kind INTEGER NOT NULL,
    created_at REAL NOT NULL);
"""


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(SPACE.dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _schema_1_file(path) -> np.ndarray:
    old = _unit(1)
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.execute("INSERT INTO spaces (event_id, name, engine, model_id, dim, seq, n_photos, n_faces, created_at, "
               "updated_at) VALUES ('ev', 'v2', 'insightface', 'det500m_mbf128', 8, 1, 1, 1, 0, 0)")
    db.execute("INSERT INTO photos (sid, photo_id, faces, ingested_at) VALUES (1, 'old.jpg', 1, 0)")
    db.execute("INSERT INTO faces (sid, pid, seq, x1, y1, x2, y2, det_score, norm, embedding) "
               "VALUES (1, 1, 1, 1, 2, 30, 40, 0.9, 1.0, ?)", (old.astype("<f4").tobytes(),))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    return old


def test_schema_1_file_is_migrated_and_keeps_its_faces(tmp_path):
    old = _schema_1_file(tmp_path / DB_FILE)
    store = FaceStore(tmp_path)
    try:
        hits = store.search("ev", SPACE, old, min_score=0.99)
        assert [h.photo_id for h in hits] == ["old.jpg"]
        new = _unit(2)
        q = FaceQualityRow(size_px=39.0, sharpness=321.5, yaw=-4.0, pitch=7.5, score=0.77)
        store.put_photo("ev", "new.jpg", SPACE, [FaceRecord(new, (5, 6, 44, 45), 0.8, quality=q)])
        assert [h.photo_id for h in store.search("ev", SPACE, new, min_score=0.99)] == ["new.jpg"]
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / DB_FILE)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        rows = db.execute("SELECT p.photo_id, size_px, sharpness, yaw, pitch, quality FROM faces f "
                          "JOIN photos p ON p.pid = f.pid ORDER BY face_id").fetchall()
    finally:
        db.close()
    assert rows == [("old.jpg", None, None, None, None, None), ("new.jpg", 39.0, 321.5, -4.0, 7.5, 0.77)]


def test_migrated_file_opens_again_unchanged(tmp_path):
    _schema_1_file(tmp_path / DB_FILE)
    for _ in range(2):
        FaceStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_FILE)
    try:
        columns = [r[1] for r in db.execute("PRAGMA table_info(faces)")]
    finally:
        db.close()
    assert columns[-5:] == ["size_px", "sharpness", "yaw", "pitch", "quality"]
    assert len(columns) == len(set(columns))
