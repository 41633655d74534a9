"""Move an installation's store from SQLite to PostgreSQL.

    python -m scripts.migrate_store --to postgresql://facematch@db:5432/facematch
    python -m scripts.migrate_store --to postgresql://… --data-dir /srv/facematch/indexes --sample 50

Copies every table of the configured SQLite store (``FACEMATCH_DATA_DIR``, or ``--data-dir``):
events/spaces, photos, faces with their embeddings, the change log, API keys, event access,
the forget-me log and the server secrets — ids kept, in ONE transaction (a failed run leaves
the destination as it was). Then verifies: row counts per table, and that a sample of
searches (stored vectors as queries) return identical results from both stores.

Re-runnable: a second run replaces what the previous run copied with the source's current
state. It refuses to touch a database that holds anything else (a store some host already
wrote to since the last copy) unless ``--replace`` is given. Stop the services writing to
the SQLite store first (or run again right before the switch); then set
``FACEMATCH_STORE_URL`` on every host. Exit status: 0 copied and verified, 1 verification
failed, 2 refused / bad usage.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from flask_backend.config import Settings
from flask_backend.store import FaceStore, Space
from flask_backend.store.db import DB_FILE
from flask_backend.store.postgres import TABLES, PostgresBackend, redact


def _columns_sqlite(src: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in src.execute(f"PRAGMA table_info({table})")]


def _columns_pg(c, table: str) -> list[str]:
    rows = c.execute("SELECT column_name FROM information_schema.columns WHERE table_name=%s "
                     "AND table_schema=current_schema() ORDER BY ordinal_position", (table,)).fetchall()
    return [r[0] for r in rows]


def _check_destination(c, source: str, replace: bool) -> str | None:
    """Why the destination must not be overwritten, or None."""
    c.execute("CREATE TABLE IF NOT EXISTS facematch_migrations (source TEXT NOT NULL, finished_at DOUBLE PRECISION NOT NULL)")
    if replace:
        return None
    last = c.execute("SELECT source, finished_at FROM facematch_migrations ORDER BY finished_at DESC LIMIT 1").fetchone()
    newest = c.execute("SELECT MAX(updated_at) FROM spaces").fetchone()[0]
    rows = sum(c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES)
    if rows == 0:
        return None
    if last is None:
        return "the destination already holds a store that was not copied by this script (use --replace)"
    if last[0] != source:
        return f"the destination was copied from another store ({last[0]}) (use --replace)"
    if newest is not None and newest > last[1]:
        return "hosts wrote to the destination since the last copy: a re-run would lose that (use --replace)"
    return None


def copy_tables(src: sqlite3.Connection, url: str, source: str, replace: bool) -> dict[str, int]:
    import psycopg

    PostgresBackend(url).close()  # schema created / migrated like a starting host does
    counts: dict[str, int] = {}
    with psycopg.connect(url) as c:  # one transaction: all tables or nothing
        why = _check_destination(c, source, replace)
        if why:
            raise click.UsageError(why)
        c.execute("TRUNCATE " + ", ".join(TABLES))
        for table, ident in TABLES.items():
            src_cols, dst_cols = _columns_sqlite(src, table), _columns_pg(c, table)
            missing = [col for col in src_cols if col not in dst_cols]
            if missing:
                raise click.UsageError(f"PostgreSQL's {table} lacks columns {missing}: update the code on this host")
            cols = ", ".join(src_cols)
            n = 0
            with c.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for row in src.execute(f"SELECT {cols} FROM {table}"):
                    copy.write_row(row)
                    n += 1
            counts[table] = n
            if ident:  # new rows written by hosts continue after the copied ids
                c.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{ident}'), "
                          f"COALESCE((SELECT MAX({ident}) FROM {table}), 0) + 1, false)")
        c.execute("INSERT INTO facematch_migrations (source, finished_at) VALUES (%s, %s)", (source, time.time()))
    return counts


def verify(src: sqlite3.Connection, data_dir: Path, url: str, sample: int, seed: int = 0) -> list[str]:
    """Problems found: counts per table, then identical answers to a sample of searches."""
    import psycopg

    problems = []
    with psycopg.connect(url) as c:
        for table in TABLES:
            a = src.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            b = c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            if a != b:
                problems.append(f"{table}: {a} rows in SQLite, {b} in PostgreSQL")
    spaces = src.execute("SELECT sid, event_id, name, engine, model_id, dim FROM spaces WHERE n_faces > 0").fetchall()
    if not spaces or sample <= 0:
        return problems
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as cache:
        sqlite_store = FaceStore(data_dir)  # the source, as its hosts see it (snapshot + catch-up)
        pg_store = FaceStore(cache, store_url=url)  # a new host: a fresh cache, everything from PostgreSQL
        try:
            for _ in range(sample):
                sid, event_id, name, engine, model_id, dim = rng.choice(spaces)
                blob = src.execute("SELECT embedding FROM faces WHERE sid=? ORDER BY random() LIMIT 1", (sid,)).fetchone()[0]
                q = np.frombuffer(blob, dtype="<f4") + np.float32(0.01)
                space = Space(name, engine, model_id, int(dim))
                a = [(h.face_id, h.photo_id, round(h.score, 5)) for h in sqlite_store.search(event_id, space, q, limit=50)]
                b = [(h.face_id, h.photo_id, round(h.score, 5)) for h in pg_store.search(event_id, space, q, limit=50)]
                if a != b:
                    problems.append(f"search in {event_id}/{name} differs: {a[:3]} vs {b[:3]}")
        finally:
            sqlite_store.close()
            pg_store.close()
    return problems


@click.command()
@click.option("--to", "url", required=True, help="postgresql://user@host:port/db")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="the SQLite store's data dir (default: FACEMATCH_DATA_DIR)")
@click.option("--sample", default=20, show_default=True, help="searches compared after the copy")
@click.option("--replace", is_flag=True, help="overwrite a destination that holds another store")
def main(url: str, data_dir: Path | None, sample: int, replace: bool) -> None:
    if not url.startswith(("postgresql://", "postgres://")):
        raise click.UsageError("--to must be a postgresql:// URL")
    data_dir = data_dir or Settings.from_env().data_dir
    path = data_dir / DB_FILE
    if not path.exists():
        raise click.UsageError(f"no SQLite store at {path}")
    FaceStore(data_dir).close()  # the source at this code's schema version first
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        src.execute("BEGIN")  # one snapshot of the source for the copy
        started = time.monotonic()
        counts = copy_tables(src, url, str(path.resolve()), replace)
        copied = time.monotonic() - started
        click.echo(f"copied to {redact(url)} in {copied:.1f} s: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        problems = verify(src, data_dir, url, sample)
    finally:
        src.close()
    if problems:
        for p in problems:
            click.echo("MISMATCH " + p, err=True)
        sys.exit(1)
    click.echo(f"verified: row counts equal, {sample} sample searches identical")


if __name__ == "__main__":
    main()
