"""Snapshots are a cache: a cold start from one (+ the DB changes since) equals the database.

Also: damaged, mismatched or stale snapshot files are ignored and cleaned up, the file is a
real faiss index, put_photo never rewrites it (its cost does not grow with the event), and
pruned change history forces a correct full reload.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flask_backend.store import FaceRecord, FaceStore, Space

REPO = Path(__file__).resolve().parent.parent
DIM = 32
V2 = Space("v2", "insightface", "det500m_mbf128", DIM)
QUERIES = np.random.default_rng(99).standard_normal((6, DIM))


def photo(seed: int, k: int = 3) -> list[FaceRecord]:
    v = np.random.default_rng(seed).standard_normal((k, DIM))
    return [FaceRecord(x, (1.0, 2.0, 3.0, 4.0), 0.8) for x in v]


def fill(store: FaceStore, first: int, count: int, *, k: int = 3, event: str = "ev") -> None:
    store.put_photos(event, V2, [(f"p{i}", photo(i, k), None) for i in range(first, first + count)])


def db_truth(data: Path, event: str = "ev") -> tuple[np.ndarray, np.ndarray]:
    """(face ids, unit vectors) straight from SQLite: the ground truth."""
    conn = sqlite3.connect(f"file:{data / 'facestore.sqlite3'}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT f.face_id, f.embedding FROM faces f JOIN spaces s ON s.sid = f.sid "
        "WHERE s.event_id=? AND s.name='v2' ORDER BY f.face_id",
        (event,),
    ).fetchall()
    conn.close()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), DIM)
    return ids, vecs


def expected_top(data: Path, q: np.ndarray, limit: int, event: str = "ev") -> list[int]:
    ids, vecs = db_truth(data, event)
    s = vecs @ (q / np.linalg.norm(q)).astype(np.float32)
    return ids[np.lexsort((ids, -s))][:limit].tolist()


_COLD = r"""
import json, sys, numpy as np
from flask_backend.store import FaceStore, Space
store = FaceStore(sys.argv[1], snapshot_min_faces=int(sys.argv[2]))
space = Space("v2", "insightface", "det500m_mbf128", 32)
queries = np.asarray(json.loads(sys.argv[3]))
out = [[h.face_id for h in store.search("ev", space, q, limit=25)] for q in queries]
n_all = len(store.search("ev", space, queries[0]))
print(json.dumps({"top": out, "all": n_all, "counters": store.stats()["counters"]}))
"""


def cold_start(data: Path, snapshot_min_faces: int = 100) -> dict:
    """A brand-new process: open the store, search, report what it did."""
    out = subprocess.run(
        [sys.executable, "-c", _COLD, str(data), str(snapshot_min_faces), json.dumps(QUERIES.tolist())],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def assert_matches_db(data: Path, result: dict) -> None:
    ids, _ = db_truth(data)
    assert result["all"] == len(ids)
    for q, got in zip(QUERIES, result["top"], strict=True):
        assert got == expected_top(data, q, 25)


def test_cold_start_from_snapshot_plus_later_changes(tmp_path: Path):
    data = tmp_path / "data"
    a = FaceStore(data, snapshot_min_faces=100)
    fill(a, 0, 400)
    a.search("ev", V2, QUERIES[0])
    assert a.stats()["counters"]["snapshot_writes"] == 1
    snap = data / "v2" / "ev.faiss"
    before = snap.stat()

    b = FaceStore(data, snapshot_min_faces=100)  # another writer, no cache of its own
    fill(b, 400, 50)  # new photos
    for i in range(0, 60, 2):  # re-puts with other faces (fewer, more)
        b.put_photo("ev", f"p{i}", V2, photo(10_000 + i, k=1 + i % 4))
    b.put_photo("ev", "empty", V2, [])
    after = snap.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)

    result = cold_start(data)
    assert result["counters"].get("snapshot_loads") == 1 and "db_loads" not in result["counters"]
    assert_matches_db(data, result)

    # The warm process (a) catches up incrementally and agrees too.
    for q in QUERIES:
        assert [h.face_id for h in a.search("ev", V2, q, limit=25)] == expected_top(data, q, 25)

    # A delete removes the snapshot (it held the deleted faces): the next cold start rebuilds
    # from SQLite and writes a fresh snapshot, which the one after that uses.
    for i in range(100, 120):
        b.delete_photo("ev", f"p{i}")
    b.delete_faces("ev", "v2", [h.face_id for h in b.search("ev", V2, QUERIES[1], limit=5)])
    assert not snap.exists()
    result = cold_start(data)
    assert result["counters"].get("db_loads") == 1 and result["counters"].get("snapshot_writes") == 1
    assert_matches_db(data, result)
    result = cold_start(data)
    assert result["counters"].get("snapshot_loads") == 1
    assert_matches_db(data, result)
    a.close()
    b.close()


def test_snapshot_file_is_a_faiss_index(tmp_path: Path):
    faiss = pytest.importorskip("faiss")
    data = tmp_path / "data"
    store = FaceStore(data, snapshot_min_faces=1)
    fill(store, 0, 50)
    store.delete_photo("ev", "p3")
    assert store.write_snapshot("ev", "v2")
    index = faiss.read_index(str(data / "v2" / "ev.faiss"))
    ids, vecs = db_truth(data)
    assert isinstance(index, faiss.IndexIDMap) and index.ntotal == len(ids) == 147
    assert faiss.vector_to_array(index.id_map).tolist() == ids.tolist()
    inner = faiss.downcast_index(index.index)
    assert isinstance(inner, faiss.IndexFlatIP)
    stored = faiss.rev_swig_ptr(inner.get_xb(), len(ids) * DIM).reshape(len(ids), DIM)
    assert np.array_equal(stored, vecs)
    # faiss answers like the store does
    q = (QUERIES[0] / np.linalg.norm(QUERIES[0])).astype(np.float32)
    _, labels = index.search(q[None, :], 10)
    assert labels[0].tolist() == [h.face_id for h in store.search("ev", V2, q, limit=10)]
    meta = json.loads((data / "v2" / "ev.json").read_text())
    assert meta["ntotal"] == 147 and meta["event_id"] == "ev" and meta["space"] == "v2"
    store.close()


def _damage_truncate(snap: Path, meta: Path) -> None:
    with open(snap, "r+b") as fh:
        fh.truncate(snap.stat().st_size // 2)


def _damage_garbage_json(snap: Path, meta: Path) -> None:
    meta.write_text("{not json")


def _damage_vectors(snap: Path, meta: Path) -> None:
    raw = bytearray(snap.read_bytes())
    start = 2 * (4 + 33) + 8
    raw[start : start + (len(raw) - start) // 2] = bytes((len(raw) - start) // 2)  # zero many rows
    snap.write_bytes(bytes(raw))


def _damage_old_meta(snap: Path, meta: Path) -> None:
    data = json.loads(meta.read_text())
    data["ids_sha256"] = "0" * 64  # as if the json belonged to another version of the file
    meta.write_text(json.dumps(data))


def _damage_other_sid(snap: Path, meta: Path) -> None:
    data = json.loads(meta.read_text())
    data["sid"] += 1000  # a snapshot of a space that was dropped and rebuilt
    meta.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage", [_damage_truncate, _damage_garbage_json, _damage_vectors, _damage_old_meta, _damage_other_sid]
)
def test_damaged_or_foreign_snapshots_are_ignored_and_replaced(tmp_path: Path, damage):
    data = tmp_path / "data"
    store = FaceStore(data, snapshot_min_faces=100)
    fill(store, 0, 200)
    assert store.write_snapshot("ev", "v2")
    fill(store, 200, 10)
    store.close()
    damage(data / "v2" / "ev.faiss", data / "v2" / "ev.json")
    result = cold_start(data)
    assert "snapshot_loads" not in result["counters"] and result["counters"]["db_loads"] == 1
    assert_matches_db(data, result)
    # ...and the bad file was replaced by a good one
    result = cold_start(data)
    assert result["counters"].get("snapshot_loads") == 1
    assert_matches_db(data, result)


def test_leftovers_of_a_crashed_delete_are_swept(tmp_path: Path):
    """A crash between committing a delete and removing the snapshot leaves a file that still
    holds the deleted faces; the next store to open removes it."""
    data = tmp_path / "data"
    store = FaceStore(data, snapshot_min_faces=1)
    fill(store, 0, 30)
    store.put_photo("gone", "x", V2, photo(1))
    store.search("ev", V2, QUERIES[0])
    store.search("gone", V2, QUERIES[0])
    saved = tmp_path / "saved"
    shutil.copytree(data / "v2", saved)
    store.delete_photo("ev", "p5")
    store.delete_event("gone")
    store.close()
    for name in ("ev.faiss", "ev.json", "gone.faiss", "gone.json"):  # as if the unlinks never happened
        shutil.copy(saved / name, data / "v2" / name)
    (data / "v2" / "ev.faiss.tmp").write_bytes(b"half a snapshot")
    reopened = FaceStore(data, snapshot_min_faces=1)
    assert sorted(p.name for p in (data / "v2").iterdir()) == []
    assert "p5" not in {h.photo_id for h in reopened.search("ev", V2, QUERIES[0])}
    reopened.close()


def test_put_photo_cost_does_not_grow_with_the_event(tmp_path: Path):
    """A put does the same work in a 30k-face event as in an empty one. Work is counted in
    SQLite virtual-machine steps (deterministic, unlike fsync'd wall times on a busy box),
    and the event's snapshot is not touched."""
    data = tmp_path / "data"
    store = FaceStore(data, snapshot_min_faces=1000)
    for start in range(0, 10_000, 2500):
        fill(store, start, 2500, event="big")  # 30k faces
    store.search("big", V2, QUERIES[0])
    snap = data / "v2" / "big.faiss"
    before = snap.stat()
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn = store._db.conn()  # this thread's connection: the one put_photo writes with
    conn.set_progress_handler(count, 1)

    def puts(event: str, prefix: str) -> list[int]:
        out = []
        for i in range(20):
            faces = photo(50_000 + i)
            steps[0] = 0
            store.put_photo(event, f"{prefix}{i}", V2, faces)
            out.append(steps[0])
        return out

    puts("warm", "w")  # statement cache, first-write setup
    small, big = puts("small", "s"), puts("big", "n")
    conn.set_progress_handler(None, 0)
    print(f"\nSQLite VM steps per put: empty event median {np.median(small):.0f}, 30k faces {np.median(big):.0f}")
    assert max(small) > 0 and np.median(big) < 1.5 * np.median(small), (small, big)
    after = snap.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)  # not rewritten
    store.close()


def test_pruned_history_forces_a_correct_reload(tmp_path: Path):
    data = tmp_path / "data"
    reader = FaceStore(data, snapshot_min_faces=10**9)  # never snapshots: only the change log helps it
    writer = FaceStore(data, snapshot_min_faces=10**9, tombstone_retention_s=0.0)
    fill(writer, 0, 100)
    reader.search("ev", V2, QUERIES[0])
    for round_no in range(3):
        for i in range(100):  # re-puts: tombstones, pruned as they age past the (zero) retention
            writer.put_photo("ev", f"p{i}", V2, photo(1000 * (round_no + 1) + i, k=2))
    conn = sqlite3.connect(f"file:{data / 'facestore.sqlite3'}?mode=ro", uri=True)
    floor = conn.execute("SELECT tomb_floor FROM spaces WHERE event_id='ev'").fetchone()[0]
    conn.close()
    assert floor > 1
    for q in QUERIES:
        assert [h.face_id for h in reader.search("ev", V2, q, limit=25)] == expected_top(data, q, 25)
    assert reader.stats()["counters"]["db_loads"] == 2  # the cache was older than the floor
    reader.close()
    writer.close()


def test_write_snapshot_only_if_due_follows_the_search_rule(tmp_path: Path):
    """Writers refresh snapshots after a run without rewriting a big event for every photo."""
    data = tmp_path / "d"
    store = FaceStore(data, snapshot_min_faces=100, snapshot_refresh_fraction=0.25)
    fill(store, 0, 20)  # 60 faces: below the minimum, no file
    assert store.write_snapshot("ev", V2.name, only_if_due=True)
    assert not list(data.rglob("*.faiss"))
    fill(store, 20, 30)  # 150 faces: due (no snapshot yet)
    store.write_snapshot("ev", V2.name, only_if_due=True)
    writes = store.stats()["counters"].get("snapshot_writes", 0)
    assert writes == 1 and len(list(data.rglob("*.faiss"))) == 1
    fill(store, 50, 2)  # 6 changes < max(100, 25% of 156): not due
    store.write_snapshot("ev", V2.name, only_if_due=True)
    assert store.stats()["counters"].get("snapshot_writes", 0) == 1
    fill(store, 52, 40)  # 126 more changes: due again
    store.write_snapshot("ev", V2.name, only_if_due=True)
    assert store.stats()["counters"].get("snapshot_writes", 0) == 2
    assert_matches_db(data, cold_start(data))
