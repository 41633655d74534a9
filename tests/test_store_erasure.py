"""Deleted embeddings are gone for good: no file under the data dir still holds their bytes.

Embeddings are biometric data. After delete_photo / delete_faces / delete_event / drop_space
(with no manual checkpoint: a delete is final by itself), the exact float32 bytes the store kept for a deleted face must not appear
in the SQLite file, its -wal, or any snapshot, while a kept face's bytes still do (which
proves the scan can see them).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flask_backend.store import FaceRecord, FaceStore, Space
from tests.erasure_fixtures import assert_gone, files_holding, stored_blobs

REPO = Path(__file__).resolve().parent.parent
DIM = 64
V2 = Space("v2", "insightface", "det500m_mbf128", DIM)
V1 = Space("v1", "dlib", "dlib_resnet_v1", DIM)


def faces(seed: int, n: int) -> list[FaceRecord]:
    rng = np.random.default_rng(seed)
    return [FaceRecord(rng.standard_normal(DIM), (1, 2, 3, 4), 0.9) for _ in range(n)]


def build(tmp_path: Path) -> tuple[FaceStore, Path]:
    data = tmp_path / "data"
    store = FaceStore(data, snapshot_min_faces=1)
    for p in range(150):
        store.put_photo("ev", f"p{p}", V2, faces(p, 1 + p % 3))
        store.put_photo("ev", f"p{p}", V1, faces(10_000 + p, 1))
    store.put_photo("other", "keep", V2, faces(99_999, 2))
    store.search("ev", V2, np.ones(DIM))  # writes the v2 snapshot
    store.search("ev", V1, np.ones(DIM))  # and the v1 one
    assert (data / "v2" / "ev.faiss").exists() and (data / "v1" / "ev.faiss").exists()
    return store, data


def test_delete_photo_erases_db_wal_and_snapshots(tmp_path: Path):
    store, data = build(tmp_path)
    target = stored_blobs(data, "ev", "p7")
    control = stored_blobs(data, "ev", "p8")
    assert len(target) == 2 + 1  # two v2 faces, one v1 face
    for blob in target:  # the snapshots held them
        assert any(f.endswith("ev.faiss") for f in files_holding(data, blob))
    assert store.delete_photo("ev", "p7") == {"v2": 2, "v1": 1}
    # final by itself: no manual checkpoint
    assert os.path.getsize(data / "facestore.sqlite3-wal") == 0
    assert_gone(data, target)
    assert "facestore.sqlite3" in files_holding(data, control[0])
    # the next search rebuilds a snapshot from its (already purged) cache: still clean
    store.search("ev", V2, np.ones(DIM))
    assert (data / "v2" / "ev.faiss").exists()
    assert any("v2/ev.faiss" in files_holding(data, b) for b in control)
    assert_gone(data, target)
    store.close()


def test_delete_faces_erases_only_those_faces(tmp_path: Path):
    store, data = build(tmp_path)
    blobs = stored_blobs(data, "ev", "p11")  # 3 v2 faces + 1 v1
    hits = [h for h in store.search("ev", V2, np.ones(DIM)) if h.photo_id == "p11"]
    assert len(hits) == 3
    victim = hits[0]
    victim_blob = [b for b in blobs if files_holding(data, b) and _blob_score(b) == pytest.approx(victim.score, abs=1e-5)]
    assert len(victim_blob) == 1
    assert store.delete_faces("ev", "v2", [victim.face_id]) == 1
    assert_gone(data, victim_blob)
    survivors = [b for b in blobs if b not in victim_blob]
    for b in survivors:
        assert "facestore.sqlite3" in files_holding(data, b)
    store.close()


def _blob_score(blob: bytes) -> float:
    v = np.frombuffer(blob, dtype="<f4")
    q = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    return float(v @ q)


def test_delete_event_and_drop_space_erase_everything(tmp_path: Path):
    store, data = build(tmp_path)
    v1_blobs = [b for p in range(0, 150, 10) for b in stored_blobs(data, "ev", f"p{p}")]
    keep = stored_blobs(data, "other", "keep")
    assert store.drop_space("ev", "v1") == 150
    assert not (data / "v1" / "ev.faiss").exists() and not (data / "v1" / "ev.json").exists()
    gone_v1 = [b for b in v1_blobs if np.frombuffer(b, "<f4").size == DIM and not files_holding(data, b)]
    # every v1 embedding is gone; the v2 ones of the same photos are still there
    assert len(gone_v1) == 15
    all_v2 = [b for p in range(150) for b in stored_blobs(data, "ev", f"p{p}")]
    assert len(all_v2) == sum(1 + p % 3 for p in range(150))
    assert store.delete_event("ev") == {"v2": len(all_v2)}
    assert_gone(data, all_v2)
    assert sorted(p.name for p in (data / "v2").iterdir()) == []
    assert "facestore.sqlite3" in files_holding(data, keep[0])
    # free pages of the deleted event were zeroed, not just unlinked (secure_delete)
    conn = sqlite3.connect(data / "facestore.sqlite3")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    store.close()


_WARM_READER = r"""
import sys, numpy as np
from flask_backend.store import FaceStore, Space
store = FaceStore(sys.argv[1], snapshot_min_faces=1)
space = Space("v2", "insightface", "det500m_mbf128", 64)
print(len(store.search("ev", space, np.ones(64))), flush=True)   # warm: loads the snapshot
sys.stdin.readline()                                            # ... the test deletes a photo ...
hits = store.search("ev", space, np.ones(64))                    # catches up, rewrites the snapshot
print(len(hits), store.stats()["counters"].get("snapshot_writes", 0), flush=True)
"""


def test_warm_process_never_writes_deleted_faces_back(tmp_path: Path):
    store, data = build(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", _WARM_READER, str(data)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        before = int(proc.stdout.readline())
        target = stored_blobs(data, "ev", "p20")
        removed = store.delete_photo("ev", "p20")["v2"]
        proc.stdin.write("go\n")
        proc.stdin.flush()
        after, writes = proc.stdout.readline().split()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert int(after) == before - removed
    assert int(writes) == 1  # it did write a fresh snapshot...
    assert (data / "v2" / "ev.faiss").exists()
    assert_gone(data, target)  # ...without the deleted faces
    store.close()


_HELD_READ = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
print(conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0], flush=True)  # the read transaction is open
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
sys.stdin.readline()  # keeps its connection open: only the transaction ended
"""


def test_delete_while_another_process_reads_is_erased_once_the_reader_is_done(tmp_path: Path):
    """A read transaction in another process (a search in a gunicorn worker, say) blocks the
    WAL checkpoint: the delete is committed and invisible at once, but its old bytes can only
    leave the database file once that reader is done. The store finishes the job by itself."""
    store, data = build(tmp_path)
    store.checkpoint_wait_s = 0.2
    target = stored_blobs(data, "ev", "p30")
    reader = subprocess.Popen([sys.executable, "-c", _HELD_READ, str(data / "facestore.sqlite3")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert int(reader.stdout.readline()) > 0
        assert store.delete_photo("ev", "p30") == {"v2": 1, "v1": 1}
        assert [h for h in store.search("ev", V2, np.ones(DIM), min_score=-1) if h.photo_id == "p30"] == []
        # the checkpoint cannot overwrite pages the reader's snapshot still reads
        assert files_holding(data, target[0]) != []
        reader.stdin.write("done\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "released"
        deadline = time.monotonic() + 30
        while files_holding(data, target[0]) and time.monotonic() < deadline:
            time.sleep(0.1)  # no manual checkpoint: the store retries on its own
        assert_gone(data, target)
        assert os.path.getsize(data / "facestore.sqlite3-wal") == 0
        assert reader.poll() is None  # the reader is still connected
    finally:
        reader.kill()
        reader.wait()
    store.close()
