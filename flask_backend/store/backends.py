"""Which database holds the truth: SQLite in the data dir (default) or PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import Health


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and str(url).split(":", 1)[0] in ("postgresql", "postgres")


def open_backend(data_dir: Path, store_url: str | None, *, busy_timeout_s: float, health: Health,
                 pool_max: int = 4, connect_timeout_s: float = 5.0) -> Any:
    """A backend: ``read()`` / ``write()`` transactions whose connections speak store/sql.py,
    ``erase()`` after deletes, ``close()``."""
    if not store_url:
        from .sqlite import SqliteBackend

        return SqliteBackend(data_dir, busy_timeout_s=busy_timeout_s, health=health)
    if not is_postgres_url(store_url):
        raise ValueError("FACEMATCH_STORE_URL must be a postgresql:// URL (or unset for SQLite)")
    from .postgres import PostgresBackend  # psycopg is imported only when PostgreSQL is used

    return PostgresBackend(store_url, health=health, pool_max=pool_max, statement_timeout_s=busy_timeout_s,
                           connect_timeout_s=connect_timeout_s)
