"""Thumbnails: made by the ingest pipeline from the decoded image, stored with the photo,
served to attendees instead of the multi-megabyte originals.

- ``make_for(services, img)`` / ``save(...)``: the two calls ``ingest.ingest_photo`` makes.
- ``row_fields(...)``: the ``thumbnail_url`` (and original size) of many match rows.
- On a ``code`` event a thumbnail needs the code, like match. An ``<img>`` cannot send a header,
  so the match answer (which already passed the code check) signs each ``thumbnail_url``:
  ``exp`` + an HMAC under a server secret kept in the store (every host agrees), valid
  ``FACEMATCH_THUMBNAIL_URL_TTL`` to twice that; the URL stays the same within a window so the
  browser's cache keeps working. The code itself never goes into a URL.
- Photos ingested by vector only have no thumbnail: their rows carry ``thumbnail_url: null``
  and the page shows the source URL. With ``FACEMATCH_CLOUDINARY_THUMBNAILS=1`` a Cloudinary
  source URL gets a derived ``/upload/w_<side>,c_limit/`` URL instead (Cloudinary resizes).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Sequence
from urllib.parse import quote

from .access import codes
from .imaging import DecodedImage
from .imaging.thumbnail import make_thumbnail
from .services import Services
from .store import access_db, thumbnails_db
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


def thumbnail_path(event_id: str, photo_id: str, etag: str, signed: str = "") -> str:
    """Relative URL of a stored thumbnail; ``v`` (its ETag) changes when the photo is re-ingested."""
    path = f"/api/v2/events/{quote(event_id, safe='')}/photos/{quote(photo_id, safe='')}/thumbnail?v={etag[:12]}"
    return path + signed


_secrets: dict[str, bytes] = {}
_secret_lock = threading.Lock()


def _secret(services: Services) -> bytes:
    key = str(services.settings.data_dir)
    with _secret_lock:
        if key not in _secrets:
            with services.store.db.write() as c:
                _secrets[key] = access_db.secret(c, "thumbnail_urls")
        return _secrets[key]


def _signature(services: Services, event_id: str, photo_id: str, exp: int) -> str:
    msg = f"{event_id}\0{photo_id}\0{exp}".encode()
    return hmac.new(_secret(services), msg, hashlib.sha256).hexdigest()[:32]


def signed_query(services: Services, event_id: str, photo_id: str, now: float | None = None) -> str:
    ttl = max(60, services.settings.thumbnail_url_ttl)
    exp = (int((now if now is not None else time.time()) // ttl) + 2) * ttl  # valid ttl..2*ttl, stable meanwhile
    return f"&exp={exp}&sig={_signature(services, event_id, photo_id, exp)}"


def valid_signature(services: Services, event_id: str, photo_id: str, exp: str | None, sig: str | None) -> bool:
    if not exp or not sig or not exp.isdigit() or int(exp) < time.time():
        return False
    return hmac.compare_digest(_signature(services, event_id, photo_id, int(exp)), sig)


def require_viewer(services: Services, event_id: str, photo_id: str, exp: str | None, sig: str | None) -> None:
    """A thumbnail is an attendee read: open events are free; a ``code`` event needs the code
    (header), a key that may read the event, or a URL signed by a match answer."""
    mode, _row = codes.event_mode(services, event_id)
    if mode == "open" or valid_signature(services, event_id, photo_id, exp, sig):
        return
    codes.require_attendee(services, event_id, codes.given_code())


def cloudinary_url(source_url: str | None, side: int) -> str | None:
    """``.../image/upload/<rest>`` → ``.../image/upload/w_<side>,c_limit/<rest>`` (None if not Cloudinary)."""
    m = _CLOUDINARY.match(source_url or "")
    return f"{m.group(1)}w_{side},c_limit/{m.group(2)}" if m else None


def row_fields(services: Services, event_id: str, rows: Sequence[dict], found: dict[str, ThumbInfo]) -> list[dict]:
    """``rows`` (match rows with ``photo_id`` and ``url``) plus ``thumbnail_url``, ``image_width`` and
    ``image_height`` (the original's size, in which ``bbox`` is; null when unknown), from ``found``
    (the rows' thumbnail infos, read by the store with the rows: FaceStore.match(thumbnails=True))."""
    side = services.settings.thumbnail_side or 480
    sign = bool(found) and codes.event_mode(services, event_id)[0] != "open"
    out = []
    for r in rows:
        info = found.get(r["photo_id"])
        if info is not None:
            signed = signed_query(services, event_id, r["photo_id"]) if sign else ""
            url = thumbnail_path(event_id, r["photo_id"], info.etag, signed)
        elif services.settings.cloudinary_thumbnails:
            url = cloudinary_url(r.get("url"), side)
        else:
            url = None
        out.append({**r, "thumbnail_url": url, "image_width": info.src_width if info else None,
                    "image_height": info.src_height if info else None})
    return out
