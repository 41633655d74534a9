"""Events API: what an event holds, deletes (for good), and "forget me".

Who may: stats are an attendee read (free on an ``open`` event, the code on a ``code``
event) unless a key is sent, which must then cover the event; deletes need a write key;
forget needs the event's code and leaves a record (access/records.py).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import errors
from ..access import codes, keys, limits, records
from ..forget import forget_person
from ..store.ids import validate_event_id, validate_photo_id
from .fields import Fields, require_api_key, services

bp = Blueprint("events", __name__, url_prefix="/api/v2/events")


@bp.get("/<event_id>")
def show(event_id: str):
    svc = services()
    validate_event_id(event_id)
    if request.headers.get("X-API-Key"):
        keys.require(svc, keys.STATS, event_id)
    else:
        codes.require_attendee(svc, event_id, codes.given_code())
    summary = svc.store.event_summary(event_id)
    if summary is None:
        raise errors.unknown_event(event_id)
    for name, info in summary["spaces"].items():
        status = svc.engines.status(name)
        info["stale"] = None if not status.ready else (info["model_id"] != status.model or info["dim"] != status.dim)
        info["model"] = info["model_id"]
    return jsonify(summary)


@bp.delete("/<event_id>/photos/<path:photo_id>")
@require_api_key
def delete_photo(event_id: str, photo_id: str):
    svc = services()
    validate_event_id(event_id)
    validate_photo_id(photo_id)
    removed = svc.store.delete_photo(event_id, photo_id)
    return jsonify({"event_id": event_id, "photo_id": photo_id, "deleted": True, "faces_removed": removed})


@bp.delete("/<event_id>")
@require_api_key
def delete_event(event_id: str):
    svc = services()
    validate_event_id(event_id)
    removed = svc.store.delete_event(event_id)
    return jsonify({"event_id": event_id, "deleted": True, "faces_removed": removed})


@bp.post("/<event_id>/forget")
def forget(event_id: str):
    """Removes the selfie's person from the event. A selfie (and the event's code) is the proof."""
    svc = services()
    validate_event_id(event_id)
    fields = Fields()
    codes.require_attendee(svc, event_id, fields.event_code())
    for name in ("threshold", "tolerance"):  # the bar is the server's: refuse loudly, never ignore
        if fields.raw(name, None) is not None:
            raise errors.field_not_allowed(name, "the forget bar is set by the server (FACEMATCH_FORGET_THRESHOLD)")
    result = forget_person(svc, event_id, fields.images(svc.settings.max_image_bytes))
    records.record_forget(svc, event_id, limits.address(), result)
    return jsonify(result)
