"""Where photos come from: Firestore, a local folder, or a CSV/JSON list of URLs.

Every source yields ``PhotoRef``s; the bulk CLI and the photo worker feed them to
``runner.IngestRunner``, which calls THE ingest pipeline (``flask_backend.ingest``).
Sources that can record progress (Firestore) also provide a ``Tracker`` that claims
photos before work and writes their status back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class PhotoRef:
    """One photo to ingest: a URL or a local file, plus what the source knows about it."""

    event_id: str
    photo_id: str
    url: str | None = None
    path: Path | None = None
    state: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def source_url(self) -> str | None:
        """What the store records as the photo's source (a file:// URI for local files)."""
        if self.url:
            return self.url
        if self.path is not None:
            return self.path.absolute().as_uri()
        return None


class PhotoSource(Protocol):
    name: str

    def events(self) -> list[str]:
        """Every event this source knows."""
        ...

    def photos(self, event_id: str) -> Iterator[PhotoRef]:
        """Every photo of ``event_id`` (documents without a usable URL included, url=None)."""
        ...


def url_hash(url: str | None) -> str:
    """A short, stable fingerprint of a photo URL (tells a changed URL from the indexed one)."""
    return hashlib.sha256((url or "").encode()).hexdigest()[:16]


__all__ = ["PhotoRef", "PhotoSource", "url_hash"]
