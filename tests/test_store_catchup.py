"""Catch-up and read consistency of the search path, on SQLite and PostgreSQL alike.

- Catch-up reads only the changes up to the seq of the space row it was given, so a cache
  holds exactly what the database vouched for at that seq, even when the connection sees
  later commits (store/sql.py ``face_chunks`` / ``tombstoned_since``); what came later is
  applied, once, by the next search.
- A search sees the space's seq and the rows it returns in one snapshot: a photo being
  re-ingested (its faces deleted and written again) while other hosts search stays
  visible to every search with exactly its faces, and nothing is ever invented.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from flask_backend.errors import ApiError
from flask_backend.store import FaceRecord, Space, sql

DIM = 16
V2 = Space("v2", "insightface", "det500m_mbf128", DIM)


def records(seed: int, n: int) -> list[FaceRecord]:
    rng = np.random.default_rng(seed)
    return [FaceRecord(rng.standard_normal(DIM), (seed, i, seed + 10, i + 10), 0.9) for i in range(n)]


def face_ids(store, photo_id: str) -> list[int]:
    """The photo's face ids as the database holds them now (not through any cache)."""
    with store.db.read() as c:
        rows = c.execute("SELECT f.face_id FROM faces f JOIN photos p ON p.pid = f.pid WHERE p.photo_id=?",
                         (photo_id,)).fetchall()
    return sorted(int(r[0]) for r in rows)


def test_catch_up_stops_at_the_space_rows_seq_and_the_next_search_applies_the_rest_once(tmp_path: Path, store_backend):
    store = store_backend.open(tmp_path / "a", snapshot_min_faces=10**9)
    store.put_photo("ev", "p1", V2, records(1, 2))
    store.search("ev", V2, np.ones(DIM))  # this process's cache: at p1's seq
    store.put_photo("ev", "p2", V2, records(2, 3))
    with store.db.read() as c:
        row = sql.space_row(c, "ev", "v2")  # the seq a search would have read: p1 and p2
    old_p1, p2 = face_ids(store, "p1"), face_ids(store, "p2")
    # committed after that row was read: p1 replaced (old faces tombstoned), p3 added
    store.put_photo("ev", "p1", V2, records(11, 2))
    store.put_photo("ev", "p3", V2, records(3, 1))

    with store._cache.locked(("ev", "v2")) as entry, store.db.read() as c:  # sees all four writes
        assert entry.seq == row["seq"] - 1
        store._sync(entry, c, row)
        assert entry.seq == row["seq"]
        held = sorted(entry.flat.live_ids().tolist())
    assert held == sorted(old_p1 + p2)  # exactly the state at row's seq: nothing from later

    with store.db.read() as c:  # the bound, as the SQL sees it
        assert sorted(i for ids, *_ in sql.face_chunks(c, row["sid"], row["seq"] - 1, DIM, upto=row["seq"])
                      for i in ids.tolist()) == p2
        assert sql.tombstoned_since(c, row["sid"], row["seq"], upto=row["seq"]) == ([], False)
        gone, deleted = sql.tombstoned_since(c, row["sid"], row["seq"], upto=row["seq"] + 2)
        assert sorted(gone) == old_p1 and not deleted  # replaced, not deleted

    hits = store.search("ev", V2, np.ones(DIM))  # the next search: the rest, each face once
    ids = [h.face_id for h in hits]
    assert len(ids) == len(set(ids)) == 2 + 3 + 1
    assert {h.photo_id for h in hits} == {"p1", "p2", "p3"}
    assert sorted(ids) == sorted(face_ids(store, "p1") + p2 + face_ids(store, "p3"))
    assert not set(old_p1) & set(ids)
    with store._cache.locked(("ev", "v2")) as entry:
        assert sorted(entry.flat.live_ids().tolist()) == sorted(ids)
    store.close()


def test_photos_being_reingested_and_deleted_stay_consistent_for_searches_on_another_host(tmp_path: Path,
                                                                                         store_backend):
    writer = store_backend.open(tmp_path / "writer", snapshot_min_faces=10**9)
    # PostgreSQL: another host (its own data dir and cache); SQLite: another store on the same file
    reader = store_backend.open(tmp_path / "writer" if store_backend.url is None else tmp_path / "reader",
                                snapshot_min_faces=10**9)
    stored = {"steady": records(1, 3), "churn": records(2, 2), "static": records(3, 1)}
    boxes = {p: {tuple(float(v) for v in f.bbox) for f in fs} for p, fs in stored.items()}
    for photo_id, faces in stored.items():
        writer.put_photo("ev", photo_id, V2, faces)
    stop = threading.Event()
    problems: list[str] = []
    counts = {"searches": 0, "reingests": 0, "churn_absent": 0}

    def write() -> None:
        try:
            while not stop.is_set():
                writer.put_photo("ev", "steady", V2, stored["steady"])  # re-ingest: same faces, new face ids
                counts["reingests"] += 1
                if counts["reingests"] % 3 == 0:
                    writer.delete_photo("ev", "churn")
                    writer.put_photo("ev", "churn", V2, stored["churn"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            problems.append(f"writer: {exc!r}")

    def search() -> None:
        try:
            while not stop.is_set():
                hits = reader.search("ev", V2, np.ones(DIM))
                counts["searches"] += 1
                per_photo: dict[str, int] = {}
                for h in hits:
                    per_photo[h.photo_id] = per_photo.get(h.photo_id, 0) + 1
                    if h.photo_id not in boxes or tuple(h.bbox) not in boxes[h.photo_id]:
                        problems.append(f"invented row {h}")
                if len({h.face_id for h in hits}) != len(hits):
                    problems.append("a face twice")
                if per_photo.get("steady") != 3 or per_photo.get("static") != 1:
                    problems.append(f"an acknowledged photo missing or partial: {per_photo}")
                if per_photo.get("churn") not in (None, 2):
                    problems.append(f"churn partial: {per_photo}")
                counts["churn_absent"] += "churn" not in per_photo
        except BaseException as exc:  # noqa: BLE001 - reported below
            problems.append(f"reader: {exc!r}")

    threads = [threading.Thread(target=write)] + [threading.Thread(target=search) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert problems == []
    assert counts["searches"] >= 50 and counts["reingests"] >= 20  # they really overlapped

    # converged: the reader's cache holds what the database holds, once
    hits = reader.search("ev", V2, np.ones(DIM))
    truth = {p.photo_id: p.faces for p in writer.list_photos("ev", "v2")}
    assert truth == {"steady": 3, "churn": 2, "static": 1}
    assert sorted(h.photo_id for h in hits) == sorted(p for p, n in truth.items() for _ in range(n))
    try:
        writer.delete_photo("ev", "churn")
    except ApiError:
        raise AssertionError("churn must exist after the writer stopped") from None
    assert "churn" not in {h.photo_id for h in reader.search("ev", V2, np.ones(DIM))}
    writer.close()
    if reader is not writer:
        reader.close()
