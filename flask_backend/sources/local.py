"""Sources for users without Firebase: a local folder of photos, or a CSV/JSON list of URLs.

Folder: ``photo_id`` is the file's path relative to the event folder (``sub/a.jpg``); the
event is the folder's name unless given. With ``all_events`` every sub-folder is an event.

List: CSV with a header ``photo_id,url`` (optionally ``event_id``; ``id``, ``imageUrl``,
``image_url`` and ``secure_url`` are accepted too) or headerless ``photo_id,url`` rows;
JSON as a list of such objects, ``{"photos": [...]}``, or ``{photo_id: url}``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from . import PhotoRef

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"})
URL_FIELDS = ("url", "imageUrl", "image_url", "secure_url")
PHOTO_ID_FIELDS = ("photo_id", "photoId", "id")
EVENT_ID_FIELDS = ("event_id", "eventId", "event")


class SourceError(ValueError):
    """The source itself is unusable (missing folder, unreadable list)."""


def _image_files(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            files.append(path)
    return sorted(files)


class DirectorySource:
    name = "dir"

    def __init__(self, root: Path, *, event_id: str | None = None, all_events: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{self.root} is not a directory")
        self.all_events = all_events
        self.event_id = event_id or (None if all_events else self.root.resolve().name)

    def events(self) -> list[str]:
        if not self.all_events:
            return [self.event_id] if self.event_id else []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _event_root(self, event_id: str) -> Path:
        return self.root / event_id if self.all_events else self.root

    def photos(self, event_id: str) -> Iterator[PhotoRef]:
        base = self._event_root(event_id)
        for path in _image_files(base):
            yield PhotoRef(event_id, path.relative_to(base).as_posix(), path=path)


def _first(row: Mapping[str, Any], names: Iterable[str]) -> str | None:
    for name in names:
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


class ListSource:
    """Photos listed in a CSV or JSON file; rows without an event_id belong to ``event_id``."""

    name = "list"

    def __init__(self, path: Path, *, event_id: str | None = None) -> None:
        self.path = Path(path)
        self.default_event = event_id
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror}") from exc
        rows = self._parse_json(text) if self.path.suffix.lower() == ".json" else self._parse_csv(text)
        self._refs: list[PhotoRef] = []
        seen: set[tuple[str, str]] = set()
        for n, row in enumerate(rows, start=1):
            photo_id, url = _first(row, PHOTO_ID_FIELDS), _first(row, URL_FIELDS)
            event = _first(row, EVENT_ID_FIELDS) or self.default_event
            if not photo_id or not url:
                raise SourceError(f"{self.path}: entry {n} needs a photo_id and a url")
            if not event:
                raise SourceError(f"{self.path}: entry {n} has no event_id (add the column or pass --event-id)")
            if event_id and event != event_id:
                continue  # a list of several events, filtered to the one asked for
            if (event, photo_id) in seen:
                raise SourceError(f"{self.path}: photo {photo_id!r} of event {event!r} is listed twice")
            seen.add((event, photo_id))
            self._refs.append(PhotoRef(event, photo_id, url=url))

    @staticmethod
    def _parse_csv(text: str) -> list[dict[str, Any]]:
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not lines:
            return []
        header = [h.strip() for h in next(csv.reader([lines[0]]))]
        known = set(URL_FIELDS) | set(PHOTO_ID_FIELDS) | set(EVENT_ID_FIELDS)
        if known & set(header):
            return [{k.strip(): v for k, v in row.items() if k} for row in csv.DictReader(lines, fieldnames=header)][1:]
        return [{"photo_id": r[0], "url": r[1]} for r in csv.reader(lines) if len(r) >= 2]

    def _parse_json(self, text: str) -> list[dict[str, Any]]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{self.path} is not valid JSON: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("photos"), list):
            data = data["photos"]
        if isinstance(data, dict):
            return [{"photo_id": k, "url": v} for k, v in data.items()]
        if isinstance(data, list) and all(isinstance(x, dict) for x in data):
            return data
        raise SourceError(f"{self.path}: expected a list of {{photo_id, url}} objects or a {{photo_id: url}} map")

    def events(self) -> list[str]:
        return sorted({r.event_id for r in self._refs})

    def photos(self, event_id: str) -> Iterator[PhotoRef]:
        return (r for r in self._refs if r.event_id == event_id)
