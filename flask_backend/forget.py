""""Forget me": a selfie removes that person's faces from an event, in every space.

Deletion uses a stricter bar than matching (a wrong delete loses someone else's photo
from their results), and the response lists exactly what was removed. The bar is the
server's (FACEMATCH_FORGET_THRESHOLD, else the match default + a margin), never the
request's: forget needs no API key, so a caller-chosen bar (e.g. -1) would let anyone
holding any face photo empty an event.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import errors
from .faces import SPACES
from .match import (
    FORGET_MARGIN_V2,
    FORGET_TOLERANCE_V1,
    combine_v1,
    combine_v2,
    v1_face_hits,
    v2_face_hits,
    v2_threshold,
)
from .selfies import selfie_faces
from .services import Services


def forget_threshold(services: Services) -> float:
    """FACEMATCH_FORGET_THRESHOLD, else the match default + a margin (never from a request)."""
    if services.settings.forget_threshold is not None:
        return services.settings.forget_threshold
    return v2_threshold(services.settings, services.space("v2").model_id) + FORGET_MARGIN_V2


def forget_person(services: Services, event_id: str, images: Sequence[bytes]) -> dict:
    store = services.store
    if not store.event_exists(event_id):
        raise errors.unknown_event(event_id)
    # only the spaces the event is indexed in: an engine it does not use is never loaded
    spaces = [s for s in SPACES if store.space_of(event_id, s) is not None and services.engines.status(s).ready]
    if not spaces:
        raise errors.engine_not_ready("no ready engine for the spaces this event is indexed in")
    removed: dict[str, list[dict]] = {}
    for name in spaces:
        found = selfie_faces(services, name, images)
        if name == "v2":
            bar = forget_threshold(services)
            hits = [(h, h.score) for h in v2_face_hits(services, event_id, combine_v2([f.embedding for f, _ in found], bar), bar)]
        else:
            hits = [(h, 1.0 - d) for h, d in v1_face_hits(services, event_id, combine_v1([f.raw for f, _ in found], FORGET_TOLERANCE_V1), FORGET_TOLERANCE_V1)]
        store.delete_faces(event_id, name, [h.face_id for h, _ in hits])
        removed[name] = [
            {"photo_id": h.photo_id, "bbox": [round(v, 1) for v in h.bbox], "score": round(score, 4)} for h, score in hits
        ]
    return {
        "event_id": event_id,
        "faces_removed": {name: len(rows) for name, rows in removed.items()},
        "removed": removed,
    }
