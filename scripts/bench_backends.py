"""SQLite vs PostgreSQL store backends, side by side (``bench_store --backend sqlite,postgres``).

    .venv/bin/python -m scripts.bench_store --backend sqlite,postgres [--backend-sizes 10000,100000]
                                            [--store-url postgresql://…]

Without ``--store-url`` a private PostgreSQL cluster is started in a temp dir (Debian's
package, as the tests do: tests/pg_fixtures.py). Per backend, dim 128, events of synthetic
unit vectors (3 faces per photo, bulk ``put_photos``):

  put p50/p99 empty | big   put_photo of one 3-face photo into an empty event / the largest one
  search p50/p99 @N         FaceStore.search(limit=20) on an N-face event (catch-up included),
                            200 queries (``--queries``) after 10 warm-up ones
  match p50/p99 @N          FaceStore.match(top_k 20, threshold 0.35, thumbnails): the store's
                            part of POST /api/v2/match, same queries (each finds its photo)
  catch-up p50              the per-request check when nothing changed (one read transaction:
                            the space's seq), i.e. what every match adds to a scan
  cold db / cold snap       a NEW process (a new host): FaceStore() + first search of the
                            largest event, from the database alone / from its snapshot
  delete                    delete_event of the largest event (SQLite: + WAL checkpoint;
                            PostgreSQL: + VACUUM)

The backends run on the same data and the timed loops alternate between them call by call,
so on a shared machine load slows both alike. Targets: search and match p50 on PostgreSQL <= 1.2x
SQLite at the largest size (the difference in ms is printed per size too); cold start < 2 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DIM = 128
MATCH_THRESHOLD = 0.35  # buffalo_l's; each query is a stored face plus noise: it finds its photo

_COLD = r"""
import sys, time, numpy as np
t0 = time.perf_counter()
from flask_backend.store import FaceStore, Space
store = FaceStore(sys.argv[1], store_url=sys.argv[2] or None)
store.search("big", Space("v2", "bench", "bench_model", int(sys.argv[3])), np.ones(int(sys.argv[3])), limit=20)
print(time.perf_counter() - t0)
"""


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, p))


def _cold(data_dir: Path, url: str | None) -> float:
    out = subprocess.run([sys.executable, "-c", _COLD, str(data_dir), url or "", str(DIM)], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=600)
    return float(out.stdout.strip().splitlines()[-1])


def _faces(rng, n: int):
    from flask_backend.store import FaceRecord

    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return [FaceRecord(v, (0.0, 0.0, 1.0, 1.0), 0.9) for v in x]


def _catch_up(store, sql) -> float:
    """The search path's per-request check of the space's seq, in a read transaction as a search
    does it (PostgreSQL: BEGIN, the seq, COMMIT)."""
    t = time.perf_counter()
    with store.db.read() as c:
        sql.space_row(c, "big", "v2")
    return time.perf_counter() - t


def run_backends(urls: dict[str, str | None], sizes: list[int], queries: int, puts: int) -> list[dict]:
    """Every backend on the same data; the timed loops alternate between the backends call by
    call, so a busy moment on a shared machine slows them alike and the ratios stay fair."""
    from flask_backend.store import FaceStore, Space, sql
    from flask_backend.store.ranking import RankSpec

    space = Space("v2", "bench", "bench_model", DIM)
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    rows: dict[str, dict] = {name: {"backend": name} for name in urls}
    try:
        stores = {name: FaceStore(root / name / "host1", store_url=url, snapshot_min_faces=10_000)
                  for name, url in urls.items()}
        for n in sizes:
            ev = "big" if n == max(sizes) else f"ev{n}"
            faces = _faces(rng, n)
            for name, store in stores.items():
                t0 = time.perf_counter()
                for start in range(0, n, 9000):
                    chunk = faces[start:start + 9000]
                    store.put_photos(ev, space, [(f"p{start + i}", chunk[i:i + 3], None)
                                                 for i in range(0, len(chunk), 3)])
                rows[name][f"build@{n}"] = time.perf_counter() - t0
            qs = [faces[i].embedding + 0.05 * rng.standard_normal(DIM) for i in rng.integers(0, n, queries + 10)]
            for store in stores.values():
                for q in qs[:10]:  # load the cache (and write the snapshot), warm statements up
                    store.search(ev, space, q, limit=20)
            for name in stores:
                rows[name][f"search@{n}"], rows[name][f"match@{n}"] = [], []
            for q in qs[10:]:
                for name, store in stores.items():
                    t = time.perf_counter()
                    store.search(ev, space, q, limit=20)
                    rows[name][f"search@{n}"].append(time.perf_counter() - t)
                    t = time.perf_counter()  # what POST /api/v2/match asks of the store
                    store.match(ev, space, q, RankSpec(MATCH_THRESHOLD), limit=20, thumbnails=True)
                    rows[name][f"match@{n}"].append(time.perf_counter() - t)
        for name in stores:
            rows[name]["put empty"], rows[name]["put big"], rows[name]["catch-up"] = [], [], []
        for i in range(puts):
            for name, store in stores.items():
                for ev, key in (("empty", "put empty"), ("big", "put big")):
                    f = _faces(rng, 3)
                    t = time.perf_counter()
                    store.put_photo(ev, f"put{i}", space, f)
                    rows[name][key].append(time.perf_counter() - t)
        for store in stores.values():
            store.search("big", space, np.ones(DIM), limit=20)
            store.write_snapshot("big", "v2")
        for _ in range(queries):
            for name, store in stores.items():
                rows[name]["catch-up"].append(_catch_up(store, sql))
        for name, store in stores.items():
            store.close()
            url, row, host = urls[name], rows[name], root / name / "host1"
            # a new host: its own data dir. SQLite's truth lives in the data dir, so its "new host"
            # is the same files without the snapshot.
            if url:
                row["cold db"] = _cold(root / name / "host2", url)
                snap = root / name / "host3"
                shutil.copytree(host / "v2", snap / "v2")
                row["cold snap"] = _cold(snap, url)
            else:
                row["cold snap"] = _cold(host, None)
                for p in (host / "v2").glob("big.*"):
                    p.unlink()
                row["cold db"] = _cold(host, None)
            store = FaceStore(host, store_url=url)
            t = time.perf_counter()
            store.delete_event("big")
            row["delete"] = time.perf_counter() - t
            store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return list(rows.values())


def _start_cluster():
    sys.path.insert(0, str(REPO))
    from tests.pg_fixtures import PostgresCluster

    cluster = PostgresCluster()
    cluster.start()
    return cluster


def main(backends: list[str], sizes: list[int], url: str | None, queries: int = 200, puts: int = 30) -> int:
    cluster = None
    try:
        if "postgres" in backends and not url:
            cluster = _start_cluster()
            url = cluster.new_database()
        rows = run_backends({name: url if name == "postgres" else None for name in backends}, sizes, queries, puts)
    finally:
        if cluster is not None:
            cluster.close()
    big = max(sizes)

    def pp(v) -> str:
        return f"{_pct(v, 50):7.2f} / {_pct(v, 99):7.2f}"

    print(f"\nstore backends, dim {DIM}, times in ms (p50 / p99), cold starts and delete in s")
    cols = (["put empty", "put big"] + [f"search@{n}" for n in sizes] + [f"match@{n}" for n in sizes]
            + ["catch-up"])
    print(f"{'backend':10}" + "".join(f"{c:>20}" for c in cols) + f"{'cold db':>10}{'cold snap':>10}{'delete':>9}")
    for r in rows:
        print(f"{r['backend']:10}" + "".join(f"{pp(r[c]):>20}" for c in cols)
              + f"{r['cold db']:10.2f}{r['cold snap']:10.2f}{r['delete']:9.2f}")
    ok = True
    by = {r["backend"]: r for r in rows}
    if "sqlite" in by and "postgres" in by:
        for what in ("search", "match"):
            for n in sizes:
                extra = _pct(by["postgres"][f"{what}@{n}"], 50) - _pct(by["sqlite"][f"{what}@{n}"], 50)
                print(f"{what} p50 at {n} faces, PostgreSQL - SQLite: {extra:+.2f} ms")
            ratio = _pct(by["postgres"][f"{what}@{big}"], 50) / _pct(by["sqlite"][f"{what}@{big}"], 50)
            passed = ratio <= 1.2
            ok &= passed
            print(f"{what} p50 at {big} faces, PostgreSQL / SQLite: {ratio:.2f} (target <= 1.2): "
                  f"{'ok' if passed else 'MISSED'}")
    for r in rows:
        cold = max(r["cold db"], r["cold snap"])
        passed = cold < 2.0
        ok &= passed
        print(f"{r['backend']}: new host's first match of the {big}-face event: db {r['cold db']:.2f}s, "
              f"snapshot {r['cold snap']:.2f}s (target < 2 s): {'ok' if passed else 'MISSED'}")
    print(json.dumps({r["backend"]: {k: (v if isinstance(v, float) else _pct(v, 50)) for k, v in r.items()
                                     if k != "backend"} for r in rows}))
    return 0 if ok else 1
