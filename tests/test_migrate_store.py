"""scripts/migrate_store.py: SQLite → PostgreSQL copies every table, verifies, and re-runs safely."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg

from flask_backend.store import FaceRecord, FaceStore, Space, access_db, thumbnails_db
from flask_backend.store.postgres import TABLES

REPO = Path(__file__).resolve().parent.parent
V2 = Space("v2", "insightface", "det500m_mbf128", 32)
V1 = Space("v1", "dlib", "dlib_resnet_v1", 16)


def faces(seed: int, n: int, dim: int) -> list[FaceRecord]:
    rng = np.random.default_rng(seed)
    return [FaceRecord(rng.standard_normal(dim), (1, 2, 3, 4), 0.9, norm=1.5) for _ in range(n)]


def migrate(data: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.migrate_store", "--to", url, "--data-dir", str(data),
                           "--sample", "15", *extra], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as c:
        return {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


def test_copies_every_table_verifies_and_reruns_safely(postgres_cluster, tmp_path: Path):
    data = tmp_path / "data"
    store = FaceStore(data)
    for e in range(3):
        for p in range(40):
            store.put_photo(f"ev{e}", f"p{p}", V2, faces(e * 1000 + p, p % 3, 32), source_url=f"https://x/{p}.jpg")
            store.put_photo(f"ev{e}", f"p{p}", V1, faces(e * 1000 + p + 500, 1, 16))
    store.put_photo("ev0", "p1", V2, faces(7, 2, 32))  # a re-put: tombstones in the change log
    store.delete_photo("ev1", "p3")
    with store.db.write() as c:
        access_db.insert_key(c, "org", "h" * 64, "organizer", ["ev*"])
        access_db.set_access(c, "ev0", "code", "scrypt$x", "org")
        access_db.add_forget_record(c, "ev0", "client", {"v2": 1}, ["p2"])
        access_db.secret(c, "forget")
        data_bytes = b"\x00thumb\xff"
        thumbnails_db.put_thumbnail(c, "ev0", "p2", thumbnails_db.Thumbnail(
            "image/webp", data_bytes, thumbnails_db.etag_of(data_bytes), 4, 3, 400, 300))
        thumbnails_db.put_outcome(c, thumbnails_db.Outcome("ev0", "bad", "failed", "fetch_failed", "404", None,
                                                           "worker", None, 0, 2, 1.0))
    store.close()

    url = postgres_cluster.new_database()
    first = migrate(data, url)
    assert first.returncode == 0, first.stderr
    assert "verified" in first.stdout
    with store_sqlite(data) as src:
        want = {t: src.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
    assert counts(url) == want and all(want[t] > 0 for t in TABLES)

    # the copy serves: a new host on PostgreSQL answers like the old store, and can write
    pg = FaceStore(tmp_path / "newhost", store_url=url)
    old = FaceStore(data)
    q = np.random.default_rng(1).standard_normal(32)
    assert [(h.face_id, h.photo_id) for h in pg.search("ev2", V2, q)] == [(h.face_id, h.photo_id) for h in old.search("ev2", V2, q)]
    with pg.db.read() as c:
        assert access_db.get_access(c, "ev0").mode == "code"
        assert thumbnails_db.get_thumbnail(c, "ev0", "p2").data == b"\x00thumb\xff"
        assert thumbnails_db.get_outcome(c, "ev0", "bad").code == "fetch_failed"
    old.put_photo("ev0", "late", V2, faces(9, 1, 32))  # the source moved on before the switch
    old.close()

    again = migrate(data, url)  # re-run: replaces the previous copy with the current state
    assert again.returncode == 0, again.stderr
    assert "late" in {p.photo_id for p in pg.list_photos("ev0")}
    pg.put_photo("ev0", "written-on-postgres", V2, faces(10, 1, 32))  # after the switch
    ids = [h.face_id for h in pg.search("ev0", V2, q)]
    assert len(ids) == len(set(ids))  # new ids continue after the copied ones
    pg.close()

    refused = migrate(data, url)  # would lose what a host wrote to PostgreSQL since
    assert refused.returncode == 2 and "--replace" in refused.stderr
    host = FaceStore(tmp_path / "h2", store_url=url)
    assert "written-on-postgres" in {p.photo_id for p in host.list_photos("ev0")}
    host.close()


class store_sqlite:
    def __init__(self, data: Path) -> None:
        import sqlite3

        self.conn = sqlite3.connect(data / "facestore.sqlite3")

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
