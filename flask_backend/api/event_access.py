"""Organizer endpoints of an event: its access mode (open | code) and its forget records."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import errors
from ..access import codes, keys, records
from ..store.ids import validate_event_id
from .fields import Fields, services

bp = Blueprint("event_access", __name__, url_prefix="/api/v2/events")
MAX_RECORDS = 1000


@bp.put("/<event_id>/access")
def put_access(event_id: str):
    svc = services()
    validate_event_id(event_id)
    principal = keys.require(svc, keys.WRITE, event_id)
    fields = Fields()
    codes.set_mode(svc, event_id, fields.raw("mode", None), fields.raw("code", None), principal.name)
    return jsonify(_access_json(svc, event_id))


@bp.get("/<event_id>/access")
def get_access(event_id: str):
    svc = services()
    validate_event_id(event_id)
    keys.require(svc, keys.RECORDS, event_id)
    return jsonify(_access_json(svc, event_id))


def _access_json(svc, event_id: str) -> dict:
    """The mode, never the code."""
    mode, row = codes.event_mode(svc, event_id)
    return {"event_id": event_id, "mode": mode, "default": row is None,
            "updated_at": row.updated_at if row is not None else None}


@bp.get("/<event_id>/forget-requests")
def forget_requests(event_id: str):
    svc = services()
    validate_event_id(event_id)
    keys.require(svc, keys.RECORDS, event_id)
    limit = _int_arg("limit", 100, 1, MAX_RECORDS)
    before = _int_arg("before", None, 1, 2**62)
    rows = records.list_forgets(svc, event_id, limit=limit, before=before)
    next_before = rows[-1]["id"] if len(rows) == limit else None
    return jsonify({"event_id": event_id, "forget_requests": rows, "next_before": next_before})


def _int_arg(name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.invalid_query(name, f"'{name}' must be an integer") from None
    if not lo <= value <= hi:
        raise errors.invalid_query(name, f"'{name}' must be between {lo} and {hi}")
    return value
