"""PostgreSQL as the store's truth for several hosts (each with its own data dir): what only
PostgreSQL has (a server that can go away and come back, VACUUM), on a private cluster."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from flask_backend.store import FaceRecord, FaceStore, Space, StorageUnavailable, result_rows
from flask_backend.store.ranking import RankSpec
from tests.pg_fixtures import PostgresCluster

DIM = 32
V2 = Space("v2", "insightface", "det500m_mbf128", DIM)


def faces(seed: int, n: int = 1) -> list[FaceRecord]:
    rng = np.random.default_rng(seed)
    return [FaceRecord(rng.standard_normal(DIM), (1, 2, 3, 4), 0.9) for _ in range(n)]


def blobs(url: str, event_id: str, photo_id: str | None = None) -> list[bytes]:
    sql = ("SELECT f.embedding FROM faces f JOIN photos p ON p.pid = f.pid JOIN spaces s ON s.sid = p.sid "
           "WHERE s.event_id=%s" + (" AND p.photo_id=%s" if photo_id else ""))
    with psycopg.connect(url) as c:
        return [bytes(r[0]) for r in c.execute(sql, (event_id, photo_id) if photo_id else (event_id,))]


def files_holding(data_dir: Path, needle: bytes) -> list[str]:
    return [str(p.relative_to(data_dir)) for p in sorted(data_dir.rglob("*")) if p.is_file() and needle in p.read_bytes()]


def test_delete_on_one_host_removes_embeddings_from_the_database_and_every_hosts_snapshot(postgres_cluster, tmp_path):
    url = postgres_cluster.new_database()
    a = FaceStore(tmp_path / "a", store_url=url, snapshot_min_faces=1)
    b = FaceStore(tmp_path / "b", store_url=url, snapshot_min_faces=1)
    for p in range(60):
        a.put_photo("ev", f"p{p}", V2, faces(p, 1 + p % 2))
    a.put_photo("keep", "k", V2, faces(999, 2))
    q = np.ones(DIM)
    assert len(b.search("ev", V2, q)) == sum(1 + p % 2 for p in range(60))  # B's own snapshot now
    assert (tmp_path / "b" / "v2" / "ev.faiss").exists()
    target = blobs(url, "ev", "p7")
    assert len(target) == 2 and all(files_holding(tmp_path / "b", t) for t in target)

    assert a.delete_photo("ev", "p7") == {"v2": 2}
    assert blobs(url, "ev", "p7") == []
    assert "p7" not in {h.photo_id for h in b.search("ev", V2, q)}  # B's next answer
    for t in target:  # B's next search also dropped the snapshot holding them (and rewrote a clean one)
        assert files_holding(tmp_path / "b", t) == []
        assert files_holding(tmp_path / "a", t) == []

    everything = blobs(url, "ev")
    assert a.delete_event("ev") == {"v2": len(everything)}
    with psycopg.connect(url) as c:
        assert c.execute("SELECT COUNT(*) FROM faces f JOIN spaces s ON s.sid = f.sid WHERE s.event_id='ev'"
                         ).fetchone()[0] == 0
        # VACUUM ran after the event delete: no dead row version of a face is left in the table
        c.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        pages = c.execute("SELECT pg_relation_size('faces') / current_setting('block_size')::int").fetchone()[0]
        dead = 0
        for page in range(pages):
            dead += c.execute(
                "SELECT COUNT(*) FROM heap_page_items(get_raw_page('faces', %s)) "
                "WHERE t_data IS NOT NULL AND t_xmax <> 0", (page,)).fetchone()[0]
        assert dead == 0
    assert blobs(url, "keep") and len(b.search("keep", V2, q)) == 2
    with pytest.raises(Exception) as exc:
        b.search("ev", V2, q)
    assert getattr(exc.value, "code", "") == "unknown_event"
    assert not (tmp_path / "b" / "v2" / "ev.faiss").exists()
    a.close()
    b.close()


class _Recorder:
    """Takes store/sql.py's statements as a PostgreSQL connection would and keeps them."""

    dialect = "postgres"

    def __init__(self, conn) -> None:
        self.conn, self.statements = conn, []

    def execute(self, stmt: str, args=()):
        self.statements.append((stmt, args))
        return self.conn.execute(stmt, args)


def _plan_nodes(node: dict) -> list[dict]:
    return [node] + [n for child in node.get("Plans", []) for n in _plan_nodes(child)]


def test_result_rows_are_read_by_primary_key_even_before_statistics_exist(postgres_cluster, tmp_path):
    """A match reads the rows it returns face by face: with a plain join PostgreSQL scans the
    whole photos table while it is small or not yet analyzed (seen at 3k photos: 0.3 ms)."""
    url = postgres_cluster.new_database()
    store = FaceStore(tmp_path / "a", store_url=url)
    with psycopg.connect(url, autocommit=True) as c:  # no autovacuum analyze during the test either
        for table in ("faces", "photos", "thumbnails"):
            c.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((9000, DIM))
    store.put_photos("ev", V2, [(f"p{i}", [FaceRecord(v, (1, 2, 3, 4), 0.9) for v in vecs[i:i + 3]], None)
                                for i in range(0, len(vecs), 3)])
    hits = store.search("ev", V2, vecs[0], limit=20)
    ids = [h.face_id for h in hits]
    with store.db.read() as c:
        assert c.execute("SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE relname='photos'"
                         ).fetchone() == (None, None)  # the case: no statistics yet
        rec = _Recorder(c)
        assert sorted(result_rows.page_rows(rec, ids)) == sorted(ids)
        assert sorted(result_rows.page_rows(rec, ids, "ev")) == sorted(ids)  # with the photos' thumbnails
        assert sorted(result_rows.hit_rows(rec, ids)) == sorted(ids)
        pids = [int(r[0]) for r in c.execute("SELECT pid FROM photos ORDER BY pid LIMIT 20").fetchall()]
        assert sorted(int(r[0]) for r in result_rows.photo_names(rec, pids)) == pids  # ties at a page's cut
        for stmt, args in rec.statements:
            (plan,) = c.execute("EXPLAIN (FORMAT JSON) " + stmt, args).fetchone()[0]
            scans = {(n["Node Type"], n.get("Relation Name")) for n in _plan_nodes(plan["Plan"])
                     if n.get("Relation Name")}
            want = {("Index Scan", "faces"), ("Index Scan", "photos")} if "faces" in stmt else {("Index Scan", "photos")}
            if "thumbnails" in stmt:
                want.add(("Index Scan", "thumbnails"))
            assert scans == want, stmt
    store.close()


def test_a_match_on_an_unchanged_cache_is_one_statement_and_any_change_anywhere_is_caught_up(
        postgres_cluster, tmp_path, monkeypatch):
    """The usual match (cache loaded, nothing changed) reads the space row and its page in one
    statement; a write or delete through another host moves the seq, so the next match takes
    the full path and sees it; the path rests a moment after such a miss, then is one statement
    again."""
    from flask_backend.store import searching

    monkeypatch.setattr(searching, "_STALE_BACKOFF_S", 0.3)
    url = postgres_cluster.new_database()
    a, b = FaceStore(tmp_path / "a", store_url=url), FaceStore(tmp_path / "b", store_url=url)
    rng = np.random.default_rng(4)
    vecs = rng.standard_normal((30, DIM))
    a.put_photos("ev", V2, [(f"p{i}", [FaceRecord(vecs[i], (1, 2, 3, 4), 0.9)], f"https://x/{i}.jpg") for i in range(30)])

    def match(q, store=a):
        return store.match("ev", V2, q, RankSpec(0.9), limit=5)

    def at_once() -> int:
        return a.stats()["counters"].get("one_statement_matches", 0)

    assert [r.photo_id for r in match(vecs[3]).rows] == ["p3"] and at_once() == 0  # loads the cache
    page = match(vecs[3])
    assert [(r.photo_id, r.source_url) for r in page.rows] == [("p3", "https://x/3.jpg")] and at_once() == 1
    new = rng.standard_normal(DIM)
    b.put_photo("ev", "new", V2, [FaceRecord(new, (1, 2, 3, 4), 0.9)])  # another host writes
    assert [r.photo_id for r in match(new).rows] == ["new"] and at_once() == 1  # caught up, full path
    assert [r.photo_id for r in match(new).rows] == ["new"] and at_once() == 1  # resting after the miss
    time.sleep(0.35)
    assert [r.photo_id for r in match(new).rows] == ["new"] and at_once() == 2
    b.delete_photo("ev", "p3")  # another host deletes
    assert match(vecs[3]).rows == [] and at_once() == 2
    time.sleep(0.35)
    assert match(vecs[3]).rows == [] and at_once() == 3
    b.delete_event("ev")
    with pytest.raises(Exception) as gone:
        match(vecs[3])
    assert getattr(gone.value, "code", None) == "unknown_event"
    a.close()
    b.close()


@pytest.fixture()
def own_cluster():
    """A cluster this test may stop and restart (the session one is shared)."""
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.close()


def test_database_down_is_storage_unavailable_fast_and_recovery_needs_no_restart(own_cluster, tmp_path):
    url = own_cluster.new_database()
    store = FaceStore(tmp_path / "host", store_url=url, connect_timeout_s=2.0)
    acked = []
    for p in range(20):
        store.put_photo("ev", f"p{p}", V2, faces(p))
        acked.append(f"p{p}")
    assert len(store.search("ev", V2, np.ones(DIM))) == 20

    own_cluster.stop("immediate")  # a crash of the database host, not a clean shutdown
    for call in (lambda: store.put_photo("ev", "during", V2, faces(77)),
                 lambda: store.search("ev", V2, np.ones(DIM)),
                 lambda: store.event_summary("ev")):
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as exc:
            call()
        assert time.monotonic() - started < 10  # the connect timeout, never a hang
        assert exc.value.code == "storage_unavailable"
    assert store.health.status()["reason"].startswith("storage_unavailable")

    own_cluster.start()  # crash recovery replays the WAL: every acknowledged commit is back
    deadline = time.monotonic() + 30
    while True:
        try:
            store.put_photo("ev", "after", V2, faces(78))
            break
        except StorageUnavailable:
            assert time.monotonic() < deadline, "the store did not recover by itself"
            time.sleep(0.2)
    listed = {p.photo_id for p in store.list_photos("ev")}
    assert set(acked) | {"after"} <= listed and "during" not in listed
    assert len(store.search("ev", V2, np.ones(DIM))) == 21
    assert store.health.status()["ok"]
    store.close()


def test_restart_under_traffic_answers_unavailable_then_recovers_losing_nothing(own_cluster, tmp_path):
    url = own_cluster.new_database()
    writer = FaceStore(tmp_path / "w", store_url=url, connect_timeout_s=2.0, pool_max=2)
    reader = FaceStore(tmp_path / "r", store_url=url, connect_timeout_s=2.0, pool_max=2)
    acked: list[str] = []
    outcomes: dict[str, int] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def note(kind: str) -> None:
        with lock:
            outcomes[kind] = outcomes.get(kind, 0) + 1

    def write() -> None:
        i = 0
        while not stop.is_set():
            try:
                writer.put_photo("ev", f"w{i}", V2, faces(i))
                acked.append(f"w{i}")
                note("write_ok")
                i += 1
            except StorageUnavailable:
                note("write_unavailable")
                time.sleep(0.05)

    def read() -> None:
        while not stop.is_set():
            try:
                reader.search("ev", V2, np.ones(DIM), limit=3)
                note("read_ok")
            except StorageUnavailable:
                note("read_unavailable")
                time.sleep(0.05)
            except Exception as exc:  # noqa: BLE001 - anything else is a failure of the test
                if getattr(exc, "code", "") != "unknown_event":
                    note(f"other:{type(exc).__name__}")

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    own_cluster.restart()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not [k for k in outcomes if k.startswith("other")], outcomes
    assert outcomes.get("write_ok", 0) > 5 and outcomes.get("read_ok", 0) > 5
    fresh = FaceStore(tmp_path / "fresh", store_url=url)
    listed = {p.photo_id for p in fresh.list_photos("ev")}
    fresh.close()
    assert set(acked) <= listed  # nothing acknowledged was lost
    after = len(acked)
    writer.put_photo("ev", "final", V2, faces(10**6))
    assert len(reader.search("ev", V2, np.ones(DIM))) >= after + 1
    writer.close()
    reader.close()


def test_sessions_a_restart_ended_are_replaced_without_failing_the_next_requests(own_cluster, tmp_path):
    """Pooled sessions the server ended fail their BEGIN (sent through libpq, store/postgres.py
    ``_command``) and are swapped for fresh ones inside the same call: no 503 once it is back."""
    url = own_cluster.new_database()
    store = FaceStore(tmp_path / "host", store_url=url, connect_timeout_s=2.0, pool_max=3)
    store.put_photo("ev", "p0", V2, faces(0))
    barrier = threading.Barrier(3)

    def hold_one() -> None:  # three concurrent reads: three pooled sessions
        with store.db.read() as c:
            barrier.wait(timeout=10)
            c.execute("SELECT 1").fetchone()

    threads = [threading.Thread(target=hold_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(url, autocommit=True) as c:
        before = {r[0] for r in c.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                          "AND pid <> pg_backend_pid()").fetchall()}
    assert len(before) >= 3

    own_cluster.restart()  # fast: every session is terminated
    assert [h.photo_id for h in store.search("ev", V2, np.ones(DIM))] == ["p0"]
    store.put_photo("ev", "p1", V2, faces(1))
    assert store.event_summary("ev")["photos"] == 2
    for _ in range(3):
        assert {h.photo_id for h in store.search("ev", V2, np.ones(DIM))} == {"p0", "p1"}
    assert store.health.status()["ok"]
    store.close()
