"""Several real OS processes on one data dir: writers, a deleter and searching readers at once.

Writers put photos (and re-put some: same faces, new face ids), a deleter puts photos and
deletes them again, readers (each with a warm cache, writing snapshots as they go) search in
a loop. Every process logs what it did to its own ack file AFTER the store call returned.
A reader checks, for every search, that:

- every photo acknowledged before the search started is found, with exactly its faces
  (so: visible at once, far inside the 1 s bound; nothing duplicated by re-puts);
- every photo whose deletion was acknowledged before the search is absent;
- no face id appears twice, and a stored vector finds its own photo with score ~1.

This file is also the worker program: ``python tests/test_store_multiprocess.py ROLE ...``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EVENT = "mp-event"
DIM = 32
WRITERS = 3
READERS = 3  # like 3 gunicorn workers
PHOTOS_PER_WRITER = 120
DELETER_PHOTOS = 40


_URL_VAR = "FACEMATCH_TEST_STORE_URL"  # set by the test: PostgreSQL (tests/pg_fixtures.py), empty: SQLite


def _open(data_dir: str, **kw):
    """The store of a helper process; on PostgreSQL each process is its own host (own data dir)."""
    from flask_backend.store import FaceStore

    url = os.environ.get(_URL_VAR) or None
    if url:
        data_dir = f"{data_dir}-host{os.getpid()}"
    return FaceStore(data_dir, store_url=url, **kw)


def space():
    from flask_backend.store import Space

    return Space("v2", "insightface", "det500m_mbf128", DIM)


def n_faces(photo_id: str) -> int:
    return 1 + sum(map(ord, photo_id)) % 3


def face_vectors(photo_id: str) -> np.ndarray:
    seed = int.from_bytes(photo_id.encode(), "little") % (2**63)
    v = np.random.default_rng(seed).standard_normal((n_faces(photo_id), DIM))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def records(photo_id: str):
    from flask_backend.store import FaceRecord

    return [FaceRecord(v, (0.0, 0.0, 10.0, 10.0), 0.9) for v in face_vectors(photo_id)]


class AckLog:
    def __init__(self, path: Path) -> None:
        self.fh = open(path, "a", buffering=1)  # noqa: SIM115 - kept open for the process's life

    def write(self, *fields: object) -> None:
        self.fh.write(" ".join(map(str, fields)) + "\n")
        self.fh.flush()


def read_acks(directory: Path) -> dict[str, tuple[str, float]]:
    """photo_id -> (last action, time): PUT, INTENT (a delete is about to start) or DEL."""
    state: dict[str, tuple[str, float]] = {}
    for path in sorted(directory.glob("*.ack")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:  # a torn last line is skipped
                state[parts[1]] = (parts[0], float(parts[2]))
    return state


# --------------------------------------------------------------------------- worker roles
def role_writer(data_dir: str, acks: str, idx: int) -> None:

    store = _open(data_dir)
    log = AckLog(Path(acks) / f"writer{idx}.ack")
    rng = np.random.default_rng(idx)
    done: list[str] = []
    for i in range(PHOTOS_PER_WRITER):
        photo_id = f"w{idx}-{i:04d}"
        store.put_photo(EVENT, photo_id, space(), records(photo_id))
        log.write("PUT", photo_id, time.time())
        done.append(photo_id)
        if i % 7 == 3:  # idempotent re-put of an earlier photo: same faces, new face ids
            again = done[int(rng.integers(len(done)))]
            store.put_photo(EVENT, again, space(), records(again))
            log.write("PUT", again, time.time())
        time.sleep(float(rng.uniform(0, 0.004)))


def role_deleter(data_dir: str, acks: str) -> None:

    store = _open(data_dir)
    log = AckLog(Path(acks) / "deleter.ack")
    for i in range(DELETER_PHOTOS):
        photo_id = f"d-{i:04d}"
        store.put_photo(EVENT, photo_id, space(), records(photo_id))
        log.write("PUT", photo_id, time.time())
        time.sleep(0.01)
        if i % 2 == 0:
            log.write("INTENT", photo_id, time.time())
            store.delete_photo(EVENT, photo_id)
            log.write("DEL", photo_id, time.time())


def role_reader(data_dir: str, acks: str, stop_file: str) -> None:
    from flask_backend.errors import ApiError

    store = _open(data_dir, snapshot_min_faces=50, snapshot_refresh_fraction=0.2)
    ack_dir, stop = Path(acks), Path(stop_file)
    report = {"searches": 0, "violations": [], "max_faces_seen": 0, "vector_checks": 0}
    rng = np.random.default_rng(os.getpid())
    final_round = False
    while True:
        final_round = stop.exists()
        before = read_acks(ack_dir)
        started = time.time()
        try:
            hits = store.search(EVENT, space(), np.ones(DIM))
        except ApiError as exc:
            if exc.code != "unknown_event":
                raise
            hits = []
        after = read_acks(ack_dir)
        report["searches"] += 1
        report["max_faces_seen"] = max(report["max_faces_seen"], len(hits))
        ids = [h.face_id for h in hits]
        if len(ids) != len(set(ids)):
            report["violations"].append("duplicate face ids")
        per_photo: dict[str, int] = {}
        for h in hits:
            per_photo[h.photo_id] = per_photo.get(h.photo_id, 0) + 1
        for photo_id, (action, when) in before.items():
            untouched = after.get(photo_id, (action, when))[0] == action
            if action == "PUT" and untouched and per_photo.get(photo_id) != n_faces(photo_id):
                report["violations"].append(
                    f"{photo_id} acked at {when:.3f} has {per_photo.get(photo_id)} faces "
                    f"(want {n_faces(photo_id)}) in a search started at {started:.3f}"
                )
            if action == "DEL" and photo_id in per_photo:
                report["violations"].append(f"{photo_id} deleted at {when:.3f} still found at {started:.3f}")
        for photo_id, count in per_photo.items():
            if count != n_faces(photo_id):
                report["violations"].append(f"{photo_id} has {count} faces, never {n_faces(photo_id)}")
        present = [p for p, (a, _) in before.items() if a == "PUT" and after[p][0] == "PUT"]
        if present:
            photo_id = present[int(rng.integers(len(present)))]
            (best,) = store.search(EVENT, space(), face_vectors(photo_id)[0], limit=1)
            report["vector_checks"] += 1
            if best.photo_id != photo_id or best.score < 0.9999:
                report["violations"].append(f"{photo_id}'s own vector found {best.photo_id} at {best.score}")
        if final_round:
            break
    report["counters"] = store.stats()["counters"]
    print(json.dumps(report), flush=True)


def role_first_open(data_dir: str, idx: int, go_file: str) -> None:
    """Wait for the signal, then open a store that may not exist yet and write at once."""

    while not Path(go_file).exists():
        time.sleep(0.001)
    store = _open(data_dir)
    photo_id = f"first-{idx}"
    store.put_photo(EVENT, photo_id, space(), records(photo_id))
    print(len(store.search(EVENT, space(), np.ones(DIM))), flush=True)


def _spawn(*args: str, stdout=None, url: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        env={**os.environ, "PYTHONPATH": str(REPO), _URL_VAR: url or ""},
        cwd=REPO,
        stdout=stdout,
    )


# --------------------------------------------------------------------------- the test
def test_writers_deleter_and_readers_in_separate_processes(tmp_path: Path, store_backend):
    data, acks, stop = tmp_path / "data", tmp_path / "acks", tmp_path / "stop"
    acks.mkdir()
    store_backend.open(data).close()  # create the schema once, like a deploy step would
    readers = [_spawn("reader", str(data), str(acks), str(stop), stdout=subprocess.PIPE, url=store_backend.url) for _ in range(READERS)]
    writers = [_spawn("writer", str(data), str(acks), str(i), url=store_backend.url) for i in range(WRITERS)]
    writers.append(_spawn("deleter", str(data), str(acks), url=store_backend.url))
    try:
        for w in writers:
            assert w.wait(timeout=120) == 0
        stop.touch()
        reports = []
        for r in readers:
            out, _ = r.communicate(timeout=60)
            assert r.returncode == 0
            reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for p in writers + readers:
            if p.poll() is None:
                p.kill()

    expected = {f"w{w}-{i:04d}": n_faces(f"w{w}-{i:04d}") for w in range(WRITERS) for i in range(PHOTOS_PER_WRITER)}
    expected.update({f"d-{i:04d}": n_faces(f"d-{i:04d}") for i in range(1, DELETER_PHOTOS, 2)})
    total = sum(expected.values())
    for report in reports:
        assert report["violations"] == []
        assert report["searches"] >= 20  # the readers really ran alongside the writers
        assert report["vector_checks"] >= 10
        assert report["max_faces_seen"] >= total * 0.9

    # Final state, seen by a fresh process: exact counts, nothing duplicated or lost.
    store = store_backend.open(data)
    listed = {p.photo_id: p.faces for p in store.list_photos(EVENT, "v2")}
    assert listed == expected
    hits = store.search(EVENT, space(), np.ones(DIM))
    assert len(hits) == total and len({h.face_id for h in hits}) == total
    per_photo: dict[str, int] = {}
    for h in hits:
        per_photo[h.photo_id] = per_photo.get(h.photo_id, 0) + 1
    assert per_photo == expected
    summary = store.event_summary(EVENT)["spaces"]["v2"]
    assert (summary["photos"], summary["faces"]) == (len(expected), total)
    store.close()


def test_many_processes_create_the_store_at_once(tmp_path: Path, store_backend):
    data, go = tmp_path / "fresh", tmp_path / "go"
    procs = [_spawn("first_open", str(data), str(i), str(go), stdout=subprocess.PIPE, url=store_backend.url) for i in range(6)]
    time.sleep(0.5)  # let every interpreter start and wait on the signal
    go.touch()
    try:
        for p in procs:
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0 and int(out.decode().split()[-1]) >= n_faces("first-0")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    store = store_backend.open(data)
    assert {p.photo_id for p in store.list_photos(EVENT)} == {f"first-{i}" for i in range(6)}
    store.close()


if __name__ == "__main__":
    role, rest = sys.argv[1], sys.argv[2:]
    if role == "writer":
        role_writer(rest[0], rest[1], int(rest[2]))
    elif role == "deleter":
        role_deleter(rest[0], rest[1])
    elif role == "reader":
        role_reader(rest[0], rest[1], rest[2])
    elif role == "first_open":
        role_first_open(rest[0], int(rest[1]), rest[2])
    else:
        raise SystemExit(f"unknown role {role}")
