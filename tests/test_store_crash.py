"""kill -9 a writer at random moments, many times; the store must always come back consistent.

Each round a writer process runs a deterministic plan of operations on one shared event (new
photos, re-puts with a different face count, deletes, bulk puts of several photos in one call,
plus searches and explicit snapshot writes so the kill also lands in snapshot I/O) and prints
the index of every operation AFTER the store call returned. The test kills it with SIGKILL at
a random moment. Then a NEW process opens the store and checks that:

- it loads (SQLite: integrity check ok; stale temp files swept);

Run on both backends (SQLite, PostgreSQL: tests/pg_fixtures.py).
- the round's photos are exactly the plan's state after the acknowledged operations, or after
  one more (the one in flight may or may not have committed); never anything in between;
- every earlier round's photos are exactly as that round's check found them;
- a search (snapshot + catch-up from the database) returns exactly the faces in the database, each
  photo with its full face count, and each stored vector finds its own photo.

This file is also the worker program: ``python tests/test_store_crash.py ROLE ...``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EVENT = "crash-event"
DIM = 24
ROUNDS = 15
MAX_OPS = 100_000


def space():
    from flask_backend.store import Space

    return Space("v2", "insightface", "det500m_mbf128", DIM)


def vectors(round_no: int, version: int, k: int) -> np.ndarray:
    v = np.random.default_rng([round_no, version]).standard_normal((k, DIM))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def plan(round_no: int):
    """Deterministic operations of a round: ("put", [(photo_id, k, version), ...]) or ("del", photo_id)."""
    rng = random.Random(round_no)
    live: list[str] = []
    for j in range(MAX_OPS):
        x = rng.random()
        if x < 0.15 and live:
            yield ("del", live.pop(rng.randrange(len(live))))
        elif x < 0.35 and live:
            yield ("put", [(live[rng.randrange(len(live))], rng.randrange(0, 5), j * 10)])
        elif x < 0.45:
            batch = [(f"r{round_no}-{j}-{b}", rng.randrange(0, 4), j * 10 + b) for b in range(rng.randrange(2, 6))]
            live.extend(p for p, _, _ in batch)
            yield ("put", batch)
        else:
            photo_id = f"r{round_no}-{j}"
            live.append(photo_id)
            yield ("put", [(photo_id, rng.randrange(0, 4), j * 10)])


def state_after(round_no: int, n_ops: int) -> dict[str, tuple[int, int]]:
    """photo_id -> (faces, version) after the first ``n_ops`` operations of the round."""
    state: dict[str, tuple[int, int]] = {}
    for _, op in zip(range(n_ops), plan(round_no), strict=False):
        if op[0] == "del":
            del state[op[1]]
        else:
            for photo_id, k, version in op[1]:
                state[photo_id] = (k, version)
    return state


# --------------------------------------------------------------------------- worker roles
def role_writer(data_dir: str, round_no: int, url: str) -> None:
    from flask_backend.store import FaceRecord, FaceStore

    store = FaceStore(data_dir, store_url=url or None, snapshot_min_faces=20, snapshot_refresh_fraction=0.1)
    for j, op in enumerate(plan(round_no)):
        if op[0] == "del":
            store.delete_photo(EVENT, op[1])
        else:
            batch = [
                (photo_id, [FaceRecord(v, (1.0, 2.0, 3.0, 4.0), 0.9) for v in vectors(round_no, version, k)], None)
                for photo_id, k, version in op[1]
            ]
            store.put_photos(EVENT, space(), batch)
        print(j, flush=True)  # the acknowledgement: the store call has returned
        if j % 10 == 5:
            store.search(EVENT, space(), np.ones(DIM), limit=5)
        if j % 25 == 12:
            store.write_snapshot(EVENT, "v2")


def _db_face_ids(data: Path, url: str, problems: list[str]) -> set[int]:
    if url:  # PostgreSQL: the server checks its own pages; the rows are what count here
        import psycopg

        with psycopg.connect(url) as conn:
            return {r[0] for r in conn.execute("SELECT face_id FROM faces")}
    conn = sqlite3.connect(f"file:{data / 'facestore.sqlite3'}?mode=ro", uri=True)
    if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
        problems.append("sqlite integrity_check failed")
    ids = {r[0] for r in conn.execute("SELECT face_id FROM faces")}
    conn.close()
    return ids


def role_check(data_dir: str, spec_json: str, url: str) -> None:
    """spec: {"round": r, "acked": A, "decided": {earlier round: applied ops}} -> prints applied ops."""
    from flask_backend.store import FaceStore

    spec = json.loads(spec_json)
    data = Path(data_dir)
    problems: list[str] = []
    store = FaceStore(data, store_url=url or None)
    leftovers = [p.name for p in data.rglob("*.tmp")]
    if leftovers:
        problems.append(f"temp files survived the sweep: {leftovers}")
    db_face_ids = _db_face_ids(data, url, problems)

    listed = {p.photo_id: p.faces for p in store.list_photos(EVENT, "v2")} if store.event_exists(EVENT) else {}
    hits = store.search(EVENT, space(), np.ones(DIM)) if listed else []
    per_photo: dict[str, int] = {}
    for h in hits:
        per_photo[h.photo_id] = per_photo.get(h.photo_id, 0) + 1
    if {h.face_id for h in hits} != db_face_ids or len(hits) != len(db_face_ids):
        problems.append("search (snapshot + catch-up) disagrees with the faces in the database")
    if {p: n for p, n in listed.items() if n} != per_photo:
        problems.append("photo face counts disagree with the searchable faces")
    if listed:
        summary = store.event_summary(EVENT)["spaces"]["v2"]
        if (summary["photos"], summary["faces"]) != (len(listed), sum(listed.values())):
            problems.append(f"summary counters {summary} disagree with the photos")

    rounds = {int(r): n for r, n in spec["decided"].items()}
    current, acked = spec["round"], spec["acked"]
    def holds(candidate: int) -> bool:
        """The round's photos are in the state after ``candidate`` operations. Face counts
        alone cannot tell a re-put with the same count from no re-put, so the photos whose
        version differs between the two candidates are told apart by their vectors."""
        want = state_after(current, candidate)
        got = {p: n for p, n in listed.items() if p.startswith(f"r{current}-")}
        if got != {p: k for p, (k, _) in want.items()}:
            return False
        other = state_after(current, acked + acked + 1 - candidate)
        for photo_id, (k, version) in want.items():
            if k and other.get(photo_id) != (k, version):
                (best,) = store.search(EVENT, space(), vectors(current, version, k)[0], limit=1)
                if best.photo_id != photo_id or best.score < 0.9999:
                    return False
        return True

    applied = next((c for c in (acked, acked + 1) if holds(c)), None)
    if applied is None:
        problems.append(f"round {current}: state matches neither {acked} nor {acked + 1} operations")
    else:
        rounds[current] = applied
    for r, n_ops in rounds.items():
        want = state_after(r, n_ops)
        got = {p: n for p, n in listed.items() if p.startswith(f"r{r}-")}
        if got != {p: k for p, (k, _) in want.items()}:
            problems.append(f"round {r} changed after its check")
            continue
        sample = list(want.items()) if r == current else random.Random(r).sample(list(want.items()), min(10, len(want)))
        for photo_id, (k, version) in sample:
            if k:
                (best,) = store.search(EVENT, space(), vectors(r, version, k)[0], limit=1)
                if best.photo_id != photo_id or best.score < 0.9999:
                    problems.append(f"{photo_id} v{version}: own vector found {best.photo_id} ({best.score:.4f})")
    store.close()
    print(json.dumps({"applied": applied, "problems": problems, "photos": len(listed)}), flush=True)


# --------------------------------------------------------------------------- the test
def _python(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, *args], env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, **kw
    )


def test_kill_9_at_random_moments(tmp_path: Path, store_backend):
    data = tmp_path / "data"
    decided: dict[int, int] = {}
    rnd = random.Random(20240601)
    acked_total = 0
    for round_no in range(ROUNDS):
        writer = _python("writer", str(data), str(round_no), *store_backend.argv(), stdout=subprocess.PIPE, text=True)
        acks: list[int] = []
        first = threading.Event()

        def pump(proc=writer, acks=acks, first=first) -> None:
            for line in proc.stdout:
                acks.append(int(line))
                first.set()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        assert first.wait(timeout=60), "writer never acknowledged an operation"
        time.sleep(rnd.uniform(0.02, 0.5))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        reader.join(timeout=30)
        assert writer.returncode == -signal.SIGKILL, "the writer was supposed to be killed mid-run"
        assert acks == list(range(len(acks)))
        acked_total += len(acks)

        spec = json.dumps({"round": round_no, "acked": len(acks), "decided": decided})
        check = _python("check", str(data), spec, *store_backend.argv(), stdout=subprocess.PIPE, text=True)
        out, _ = check.communicate(timeout=120)
        assert check.returncode == 0
        result = json.loads(out.strip().splitlines()[-1])
        assert result["problems"] == [], f"round {round_no} after {len(acks)} acks: {result['problems']}"
        decided[round_no] = result["applied"]
    assert acked_total >= ROUNDS * 5  # the kills landed mid-run, not before the work started


if __name__ == "__main__":
    role, rest = sys.argv[1], sys.argv[2:]
    if role == "writer":
        role_writer(rest[0], int(rest[1]), rest[2])
    elif role == "check":
        role_check(rest[0], rest[1], rest[2])
    else:
        raise SystemExit(f"unknown role {role}")
