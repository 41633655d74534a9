"""What the organizer dashboard shows per event: counts from the store and the ingest outcomes."""

from __future__ import annotations

from collections.abc import Iterable

from . import outcomes
from .services import Services


def stale_spaces(services: Services, summary: dict) -> list[str]:
    """Spaces whose index was built with another model than the engine now loaded."""
    out = []
    for name, info in summary["spaces"].items():
        status = services.engines.status(name)
        if status.ready and (info["model_id"] != status.model or info["dim"] != status.dim):
            out.append(name)
    return out


def known_events(services: Services) -> list[str]:
    """Events with an index, or with recorded outcomes only (every photo failed so far)."""
    return sorted(set(services.store.list_events()) | set(outcomes.counts(services)))


def event_stats(services: Services, event_id: str, counts: dict[str, int] | None = None) -> dict:
    summary = services.store.event_summary(event_id) or {"photos": 0, "spaces": {}}
    if counts is None:
        counts = outcomes.counts(services, event_id).get(event_id, {})
    spaces = summary["spaces"]
    main = spaces.get("v2") or spaces.get("v1") or {}
    return {
        "event_id": event_id,
        "photos": int(summary["photos"]),
        "faces": int(main.get("faces", 0)),
        "photos_without_faces": int(main.get("photos_without_faces", 0)),
        "failed": int(counts.get("failed", 0)),
        "retrying": int(counts.get("retrying", 0)),
        "pending": int(counts.get("pending", 0)),
        "stale_spaces": stale_spaces(services, summary) if spaces else [],
        "spaces": {name: {"photos": info["photos"], "faces": info["faces"], "model": info["model_id"]}
                   for name, info in spaces.items()},
        "updated_at": max((info["updated_at"] for info in spaces.values()), default=None),
    }


def events_stats(services: Services, event_ids: Iterable[str]) -> list[dict]:
    counts = outcomes.counts(services)
    return [event_stats(services, ev, counts.get(ev, {})) for ev in event_ids]
