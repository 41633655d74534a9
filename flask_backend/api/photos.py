"""Photos of an event for attendees and organizers: thumbnails, "download all", outcomes, retry."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from .. import errors, outcomes, photo_zip, thumbnails
from ..access import codes, keys
from ..errors import ApiError
from ..imaging import sniff_format
from ..ingest import fetch_bytes, ingest_photo
from ..sources.claims import FIRESTORE_ORIGIN
from ..store.ids import validate_event_id, validate_photo_id
from ..store.thumbnails_db import OUTCOME_STATUSES
from .fields import Fields, services

bp = Blueprint("photos", __name__, url_prefix="/api/v2/events")

MAX_LISTED = 1000


@bp.get("/<event_id>/photos/<path:photo_id>/thumbnail")
def thumbnail(event_id: str, photo_id: str):
    svc = services()
    validate_event_id(event_id)
    validate_photo_id(photo_id)
    thumbnails.require_viewer(svc, event_id, photo_id, request.args.get("exp"), request.args.get("sig"))
    thumb = thumbnails.get(svc, event_id, photo_id)
    if thumb is None:
        raise errors.no_thumbnail(event_id, photo_id)
    response = Response(thumb.data, mimetype=thumb.mime)
    response.set_etag(thumb.etag)
    response.headers["Cache-Control"] = f"private, max-age={svc.settings.thumbnail_max_age}"
    return response.make_conditional(request)


def _photo_ids(fields: Fields, limit: int) -> list[str]:
    value = fields.raw("photo_ids", None)
    if isinstance(value, str) and not fields.is_json:  # one form field
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise errors.invalid_field("'photo_ids' must be a non-empty list of photo ids")
    ids = list(dict.fromkeys(value))
    if len(ids) > limit:
        raise errors.too_many_photos(len(ids), limit)
    for pid in ids:
        validate_photo_id(pid)
    return ids


def source_urls(event_id: str, photo_ids: list[str]) -> dict[str, str | None]:
    """{photo_id: source URL} of the photos the event holds (any space), one query per space."""
    svc = services()
    found: dict[str, str | None] = {}
    for space in ("v2", "v1"):
        for pid, state in svc.store.photo_states(event_id, space, photo_ids).items():
            found[pid] = found.get(pid) or state.source_url
    return found


@bp.post("/<event_id>/photos.zip")
def photos_zip(event_id: str):
    """The originals of ``photo_ids`` as one zip (JSON body, or a form post from the page)."""
    svc = services()
    validate_event_id(event_id)
    fields = Fields()
    codes.require_attendee(svc, event_id, fields.event_code())
    ids = _photo_ids(fields, svc.settings.zip_max_photos)
    if not svc.store.event_exists(event_id):
        raise errors.unknown_event(event_id)
    urls = source_urls(event_id, ids)
    photos = [(pid, urls[pid]) for pid in ids if pid in urls]
    missing = [(pid, "not a photo of this event") for pid in ids if pid not in urls]
    response = Response(photo_zip.stream_zip(svc, photos, missing), mimetype="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="{event_id}-photos.zip"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/<event_id>/photos/<path:photo_id>/download")
def download(event_id: str, photo_id: str):
    """One original, as a download (the page's viewer): fetched through the SSRF-safe fetcher,
    since the browser may not download from the photo host itself (other origin, CSP)."""
    svc = services()
    validate_event_id(event_id)
    validate_photo_id(photo_id)
    fields = Fields()
    codes.require_attendee(svc, event_id, fields.event_code())
    urls = source_urls(event_id, [photo_id])
    if photo_id not in urls:
        raise errors.unknown_photo(event_id, photo_id)
    url = urls[photo_id]
    if not url or not url.lower().startswith(("http://", "https://")):
        raise errors.retry_unavailable(photo_id)
    data = fetch_bytes(svc, url)
    name = photo_zip.entry_name(photo_id, data, set())
    response = Response(data, mimetype=photo_zip.MIME.get(sniff_format(data) or "", "application/octet-stream"))
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/<event_id>/photos")
def list_photos(event_id: str):
    """What the pipeline did with the event's photos, newest first; ``?status=failed`` for failures."""
    svc = services()
    validate_event_id(event_id)
    keys.require(svc, keys.STATS, event_id)
    status = request.args.get("status") or None
    if status is not None and status not in OUTCOME_STATUSES:
        raise errors.invalid_query("status", f"'status' must be one of {', '.join(OUTCOME_STATUSES)}")
    try:
        limit = int(request.args.get("limit", 100))
    except ValueError:
        raise errors.invalid_query("limit", "'limit' must be an integer") from None
    if not 1 <= limit <= MAX_LISTED:
        raise errors.invalid_query("limit", f"'limit' must be between 1 and {MAX_LISTED}")
    rows = outcomes.listed(svc, event_id, status, limit)
    return jsonify({"event_id": event_id, "status": status, "photos": [o.to_json() for o in rows]})


@bp.post("/<event_id>/photos/<path:photo_id>/retry")
def retry(event_id: str, photo_id: str):
    """Ingest a recorded photo again from its stored URL; a Firestore photo goes back to
    ``pending`` for the worker instead (its status lives there)."""
    svc = services()
    validate_event_id(event_id)
    keys.require(svc, keys.WRITE, event_id)
    validate_photo_id(photo_id)
    known = outcomes.get(svc, event_id, photo_id)
    if known is None:
        raise errors.unknown_photo(event_id, photo_id)
    if known.origin and known.origin.startswith(FIRESTORE_ORIGIN):
        from .. import firestore_admin

        firestore_admin.retry_pending(known.origin)
        outcomes.record(svc, event_id, photo_id, "pending", via=known.via, source_url=known.source_url,
                        origin=known.origin, attempts=0)
    else:
        url = known.source_url
        if not url or not url.lower().startswith(("http://", "https://")):
            raise errors.retry_unavailable(photo_id)
        try:
            result = ingest_photo(svc, event_id, photo_id, image_url=url)
        except ApiError as exc:
            if exc.status == 503:
                raise
            outcomes.record_error(svc, event_id, photo_id, exc, via="api", source_url=url, origin=known.origin,
                                  attempts=known.attempts + 1)
        else:
            outcomes.record_result(svc, event_id, photo_id, result.faces_indexed, via="api", source_url=url,
                                   attempts=known.attempts + 1)
    now = outcomes.get(svc, event_id, photo_id) or known  # recording is best effort
    return jsonify({"event_id": event_id, **now.to_json()})
