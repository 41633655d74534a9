"""The organizer dashboard's JSON: the events a key may see with their counts, and the
attendee link's QR code (``/admin`` is the page, flask_backend/web/admin.py)."""

from __future__ import annotations

import io
from urllib.parse import quote, urlencode

from flask import Blueprint, Response, jsonify, request

from .. import dashboard
from ..store.ids import validate_event_id
from .fields import Fields, require_api_key, services

bp = Blueprint("dashboard", __name__, url_prefix="/api/v2/events")


@bp.get("")
@require_api_key
def list_events():
    """Every event the key may see, with photos, faces, photos without faces, failed photos
    and stale spaces (the dashboard polls it while an ingest runs)."""
    svc = services()
    events = dashboard.known_events(svc)
    return jsonify({"events": dashboard.events_stats(svc, events)})


def attendee_link(event_id: str, code: str | None) -> str:
    link = request.url_root.rstrip("/") + "/e/" + quote(event_id, safe="")
    return link + ("?" + urlencode({"code": code}) if code else "")


@bp.post("/<event_id>/qr")
@require_api_key
def qr(event_id: str):
    """The attendee link (``/e/<event_id>``, with ``?code=`` when given) as a printable SVG QR code.
    POST so that the code travels in the body, never in an address or a log line."""
    import segno

    validate_event_id(event_id)
    fields = Fields()
    code = fields.text("code", max_len=128)
    link = attendee_link(event_id, code)
    buf = io.BytesIO()
    segno.make(link, error="m").save(buf, kind="svg", scale=8, border=4, xmldecl=False, svgclass="qr",
                                     title=f"FaceMatch: photos of {event_id}")
    response = Response(buf.getvalue(), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Attendee-Link-Has-Code"] = "1" if code else "0"
    return response
