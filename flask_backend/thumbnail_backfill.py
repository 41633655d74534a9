"""Backfill: thumbnails for photos indexed before thumbnails existed (``bulk_ingest --thumbnails-only``).

The store knows each photo's source URL, so no photo source is needed: every photo of the
chosen events without a thumbnail is fetched again (SSRF-safe fetcher; ``file://`` sources of
``--from-dir`` ingests are read from disk), decoded like at ingest and thumbnailed. Faces are
left untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import errors, thumbnails
from .errors import ApiError
from .ingest import fetch_bytes
from .services import Services
from .store import thumbnails_db

log = logging.getLogger(__name__)


@dataclass
class BackfillStats:
    made: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (event, photo, reason)


def _read(services: Services, url: str) -> bytes:
    if url.startswith("file://"):
        path = Path(unquote(urlsplit(url).path))
        if path.stat().st_size > services.settings.max_image_bytes:
            raise errors.too_large(services.settings.max_image_bytes)
        return path.read_bytes()
    return fetch_bytes(services, url)


def todo(services: Services, event_ids: Sequence[str]) -> list[tuple[str, str, str]]:
    """(event, photo, source URL) of every photo of ``event_ids`` without a thumbnail."""
    with services.store.db.read() as c:
        return [(ev, pid, url) for ev in event_ids for pid, url in thumbnails_db.photos_without_thumbnail(c, ev)]


def backfill(services: Services, event_ids: Sequence[str], *, concurrency: int = 4,
             on_photo: Callable[[str, str, str | None], None] | None = None) -> BackfillStats:
    stats = BackfillStats()

    def one(item: tuple[str, str, str]) -> None:
        ev, pid, url = item
        try:
            img = services.decode(_read(services, url))
            thumb = thumbnails.make_for(services, img)
            if thumb is None:
                raise ValueError("thumbnails are off (FACEMATCH_THUMBNAIL_SIDE=0)")
            thumbnails.save(services, ev, pid, thumb)
            stats.made += 1
            reason = None
        except (ApiError, OSError, ValueError) as exc:
            reason = f"{exc.code}: {exc.message}" if isinstance(exc, ApiError) else str(exc)
            stats.failed.append((ev, pid, reason))
        if on_photo is not None:
            on_photo(ev, pid, reason)

    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="thumbs") as pool:
        list(pool.map(one, todo(services, event_ids)))
    return stats
