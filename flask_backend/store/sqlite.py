"""The SQLite backend: the embedded default, one file in the data dir (db.py holds the schema).

The statements are in store/sql.py (shared with PostgreSQL); this module adds what only
SQLite needs after a delete: a WAL checkpoint, so deleted rows leave the -wal file too. A
read transaction in another process (a search in another gunicorn worker) can block it;
then a background thread retries until it completes, so the deleted bytes leave the files
as soon as that reader is done, with no later delete needed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from .db import DB_FILE, Database
from .errors import Health


class SqliteBackend(Database):
    dialect = "sqlite"

    def __init__(self, data_dir: Path, *, busy_timeout_s: float, health: Health) -> None:
        super().__init__(data_dir / DB_FILE, busy_timeout_s=busy_timeout_s, health=health)
        self._eraser: threading.Thread | None = None
        self._eraser_pid = 0
        self._erase_again = threading.Event()
        self._closing = threading.Event()
        self.deferred = 0  # checkpoints a reader held up (retried in the background)

    def checkpoint_now(self, wait_s: float) -> bool:
        try:
            return self.checkpoint(wait_s)
        except sqlite3.OperationalError:
            return False

    def erase(self, wait_s: float, event_deleted: bool = False) -> bool:
        """Make a committed delete final on disk (secure_delete zeroed the pages; the WAL
        still holds their old images until a checkpoint). False if a reader held it up:
        the retry thread then finishes it."""
        if self.checkpoint_now(wait_s):
            return True
        self.deferred += 1
        with self._lock:
            if self._eraser is not None and self._eraser.is_alive() and self._eraser_pid == os.getpid():
                self._erase_again.set()
                return False
            self._erase_again.clear()
            self._eraser_pid = os.getpid()
            self._eraser = threading.Thread(target=self._retry, name="erasure-checkpoint", daemon=True)
            self._eraser.start()
        return False

    def _retry(self) -> None:
        delay = 0.1
        while not self._closing.wait(delay):
            self._erase_again.clear()
            try:
                if self.checkpoint_now(0.0) and not self._erase_again.is_set():
                    return
            except RuntimeError:  # closed meanwhile
                return
            delay = min(2 * delay, 2.0)

    def close(self) -> None:
        self._closing.set()
        eraser = self._eraser
        if eraser is not None and eraser.is_alive() and self._eraser_pid == os.getpid():
            eraser.join(timeout=5)
        super().close()
