"""Options shared by /api/v1/match and /api/v2/match."""

from __future__ import annotations

from dataclasses import dataclass

from .. import errors
from ..access import codes
from ..match import MatchPlan, run_match
from ..store.ids import validate_event_id
from .fields import Fields, services

DEFAULT_TOP_K = 20


@dataclass(frozen=True)
class MatchOptions:
    mode: str  # "top_k" | "all"
    limit: int
    cursor: str | None


def match_options(fields: Fields) -> MatchOptions:
    settings = services().settings
    mode = fields.text("mode") or "top_k"
    if mode not in ("top_k", "all"):
        raise errors.invalid_mode()
    top_k = fields.number("top_k", DEFAULT_TOP_K, lo=1, hi=settings.max_top_k, integer=True)
    if top_k is None:
        mode = "all"
    if mode == "all":
        size = fields.number("page_size", settings.page_size, lo=1, hi=settings.max_top_k, integer=True)
        return MatchOptions("all", int(size or settings.page_size), fields.text("cursor"))
    return MatchOptions("top_k", int(top_k), None)


def match_response(event_id: str, space: str, plan: MatchPlan, opts: MatchOptions, *,
                   queries: int, **extra: object) -> dict:
    """The match body both spaces share: one page (or the top k) of rows, plus ``extra``
    (the space's own threshold/tolerance, model, ...)."""
    found = run_match(services(), plan, mode=opts.mode, limit=opts.limit, cursor=opts.cursor)
    return {
        "event_id": event_id,
        "matches": found.rows,
        **extra,
        "mode": opts.mode,
        "next_cursor": found.next_cursor,
        "total": found.total,
        "queries": queries,
        "combine": "mean" if queries > 1 else "single",
        "search": found.search,
    }


def require_indexed(fields: Fields, space: str) -> str:
    """The event id, once the caller may search it (its code on a ``code`` event), the space's
    engine is ready and the event has an index there.

    404 ``unknown_event`` when the event has nothing at all; 404 ``not_indexed`` when it
    exists but not in this space (the frontend falls back to v1 on it).
    """
    svc = services()
    event_id = fields.text("event_id", required=True, max_len=256)
    validate_event_id(event_id)
    with svc.store.db.read():  # one read transaction for the access row and the space row
        codes.require_attendee(svc, event_id, fields.event_code())
        svc.space(space)  # 503 when the engine is not ready
        if svc.store.space_of(event_id, space) is None:
            if svc.store.event_exists(event_id):
                raise errors.not_indexed(event_id, space)
            raise errors.unknown_event(event_id)
    return event_id
