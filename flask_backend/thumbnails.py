"""Thumbnails: made by the ingest pipeline from the decoded image, stored with the photo,
served to attendees instead of the multi-megabyte originals.

- ``make_for(services, img)`` / ``save(...)``: the two calls ``ingest.ingest_photo`` makes.
- ``row_fields(...)``: the ``thumbnail_url`` (and original size) of many match rows, one query.
- Photos ingested by vector only have no thumbnail: their rows carry ``thumbnail_url: null``
  and the page shows the source URL. With ``FACEMATCH_CLOUDINARY_THUMBNAILS=1`` a Cloudinary
  source URL gets a derived ``/upload/w_<side>,c_limit/`` URL instead (Cloudinary resizes).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from urllib.parse import quote

from .imaging import DecodedImage
from .imaging.thumbnail import make_thumbnail
from .services import Services
from .store import thumbnails_db
from .store.thumbnails_db import ThumbInfo, Thumbnail

log = logging.getLogger(__name__)

_CLOUDINARY = re.compile(r"^(https://res\.cloudinary\.com/[^/?#]+/image/upload/)(.+)$")


def make_for(services: Services, img: DecodedImage) -> Thumbnail | None:
    """The photo's thumbnail from its decoded image (None when thumbnails are off or it fails:
    a thumbnail is a convenience, never a reason to refuse a photo)."""
    s = services.settings
    if s.thumbnail_side <= 0:
        return None
    try:
        return make_thumbnail(img, s.thumbnail_side, s.thumbnail_format, s.thumbnail_quality)
    except Exception:
        log.exception("thumbnail failed")
        return None


def save(services: Services, event_id: str, photo_id: str, thumb: Thumbnail | None) -> None:
    if thumb is None:
        return
    with services.store.db.write() as c:
        thumbnails_db.put_thumbnail(c, event_id, photo_id, thumb)


def get(services: Services, event_id: str, photo_id: str) -> Thumbnail | None:
    with services.store.db.read() as c:
        return thumbnails_db.get_thumbnail(c, event_id, photo_id)


def infos(services: Services, event_id: str, photo_ids: Sequence[str]) -> dict[str, ThumbInfo]:
    with services.store.db.read() as c:
        return thumbnails_db.thumbnail_infos(c, event_id, photo_ids)


def thumbnail_path(event_id: str, photo_id: str, etag: str) -> str:
    """Relative URL of a stored thumbnail; ``v`` (its ETag) changes when the photo is re-ingested."""
    return f"/api/v2/events/{quote(event_id, safe='')}/photos/{quote(photo_id, safe='')}/thumbnail?v={etag[:12]}"


def cloudinary_url(source_url: str | None, side: int) -> str | None:
    """``.../image/upload/<rest>`` → ``.../image/upload/w_<side>,c_limit/<rest>`` (None if not Cloudinary)."""
    m = _CLOUDINARY.match(source_url or "")
    return f"{m.group(1)}w_{side},c_limit/{m.group(2)}" if m else None


def row_fields(services: Services, event_id: str, rows: Sequence[dict]) -> list[dict]:
    """``rows`` (match rows with ``photo_id`` and ``url``) plus ``thumbnail_url``, ``image_width`` and
    ``image_height`` (the original's size, in which ``bbox`` is; null when unknown): one query."""
    found = infos(services, event_id, [r["photo_id"] for r in rows])
    side = services.settings.thumbnail_side or 480
    out = []
    for r in rows:
        info = found.get(r["photo_id"])
        if info is not None:
            url = thumbnail_path(event_id, r["photo_id"], info.etag)
        elif services.settings.cloudinary_thumbnails:
            url = cloudinary_url(r.get("url"), side)
        else:
            url = None
        out.append({**r, "thumbnail_url": url, "image_width": info.src_width if info else None,
                    "image_height": info.src_height if info else None})
    return out
