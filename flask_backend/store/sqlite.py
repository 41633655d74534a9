"""The SQLite backend: the embedded default, one file in the data dir (db.py holds the schema).

The statements are in store/sql.py (shared with PostgreSQL); this module adds what only
SQLite needs after a delete: a WAL checkpoint, so deleted rows leave the -wal file too.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .db import DB_FILE, Database
from .errors import Health


class SqliteBackend(Database):
    dialect = "sqlite"

    def __init__(self, data_dir: Path, *, busy_timeout_s: float, health: Health) -> None:
        super().__init__(data_dir / DB_FILE, busy_timeout_s=busy_timeout_s, health=health)

    def erase(self, wait_s: float, event_deleted: bool = False) -> bool:
        """Make a committed delete final on disk (secure_delete zeroed the pages; the WAL
        still holds their old images until a checkpoint). False if a reader held it up."""
        try:
            return self.checkpoint(wait_s)
        except sqlite3.OperationalError:
            return False
