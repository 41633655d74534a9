"""The organizer dashboard's JSON: the events a key may see with their counts, and the
attendee link's QR code (``/admin`` is the page, flask_backend/web/admin.py)."""

from __future__ import annotations

import io
from urllib.parse import quote, urlencode

from flask import Blueprint, Response, jsonify, request

from .. import dashboard, errors
from ..access import codes, keys
from ..store.ids import validate_event_id
from .fields import Fields, services

bp = Blueprint("dashboard", __name__, url_prefix="/api/v2/events")


@bp.get("")
def list_events():
    """Every event the key may see, with photos, faces, photos without faces, failed photos
    and stale spaces (the dashboard polls it while an ingest runs). Needs a key whenever keys
    exist; a scoped key sees only the events its patterns match."""
    svc = services()
    principal = keys.require(svc, keys.STATS, keys.ANY_EVENT)
    events = [ev for ev in dashboard.known_events(svc) if principal.may(keys.STATS, ev)]
    return jsonify({"events": dashboard.events_stats(svc, events)})


def _code_matches(svc, event_id: str, code: str) -> bool:
    mode, row = codes.event_mode(svc, event_id)
    stored = row.code_hash if row is not None else None
    return mode == "code" and bool(stored) and codes.VERIFIED.check(stored, code)


def attendee_link(event_id: str, code: str | None) -> str:
    link = request.url_root.rstrip("/") + "/e/" + quote(event_id, safe="")
    return link + ("?" + urlencode({"code": code}) if code else "")


@bp.post("/<event_id>/qr")
def qr(event_id: str):
    """The attendee link (``/e/<event_id>``, with ``?code=`` when given) as a printable SVG QR code.
    POST so that the code travels in the body, never in an address or a log line."""
    import segno

    svc = services()
    validate_event_id(event_id)
    keys.require(svc, keys.RECORDS, event_id)
    fields = Fields()
    code = fields.text("code", max_len=128)
    if code is not None and not _code_matches(svc, event_id, code):
        raise errors.event_code_invalid(event_id)  # never print a QR code that would not open the event
    link = attendee_link(event_id, code)
    buf = io.BytesIO()
    segno.make(link, error="m").save(buf, kind="svg", scale=8, border=4, xmldecl=False, svgclass="qr",
                                     title=f"FaceMatch: photos of {event_id}")
    response = Response(buf.getvalue(), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Attendee-Link-Has-Code"] = "1" if code else "0"
    return response
