"""Selfie / embedding → the event's photos, one row per photo (its best face), best first.

v2 ranks by cosine similarity against a ``threshold``. v1 keeps face_recognition's exact
semantics: Euclidean distance between RAW descriptors, a match when ``distance <= tolerance``.
The store only holds unit vectors, so v1 recovers the raw distance from the stored norm:
``d² = |q|² + n² − 2·|q|·n·cos``; ``cos ≥ sqrt(1 − t²/|q|²)`` is a necessary condition for
``d ≤ t`` whatever ``n`` is, so an exact range search at that bound finds every candidate.

Several selfies are combined into one template by averaging (the unit vectors for v2, the
raw descriptors for v1), the usual way to build a face template from several shots; selfies
that do not look like one person are refused rather than averaged into nonsense.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import errors, thumbnails
from .config import Settings
from .services import Services

if TYPE_CHECKING:
    from .store import Hit

# Cosine thresholds calibrated per pack. buffalo_l's is InsightFace's usual 0.35; the test
# pack's comes from ../shared/faces (see README "Thresholds").
PACK_THRESHOLDS = {
    "buffalo_l": 0.35,
    "buffalo_m": 0.35,
    "buffalo_s": 0.35,
    "antelopev2": 0.35,
    "det500m_mbf128": 0.40,
}
DEFAULT_V2_THRESHOLD = 0.35
FORGET_MARGIN_V2 = 0.10  # forget-me deletes only clear matches
FORGET_TOLERANCE_V1 = 0.5
MAX_FACES_SCANNED = 50_000  # safety cap on faces gathered for one query


def v2_threshold(settings: Settings, model_id: str) -> float:
    if settings.v2_threshold is not None:
        return settings.v2_threshold
    return PACK_THRESHOLDS.get(model_id, DEFAULT_V2_THRESHOLD)


@dataclass(frozen=True)
class PhotoMatch:
    photo_id: str
    rank: float  # higher is better: cosine (v2) or -distance (v1)
    score: float
    bbox: tuple[float, float, float, float]
    face_id: int
    distance: float | None = None

    def to_json(self, space: str) -> dict:
        row = {"photo_id": self.photo_id, "score": round(self.score, 4), "bbox": [round(v, 1) for v in self.bbox]}
        if space == "v1":
            row["distance"] = round(float(self.distance or 0.0), 4)
        return row


def combine_v2(units: Sequence[np.ndarray], threshold: float) -> np.ndarray:
    """Mean of the (re-normalised) vectors; refuses selfies that are not one person."""
    stack = np.stack(units).astype(np.float32)
    stack /= np.linalg.norm(stack, axis=1, keepdims=True)
    if len(stack) > 1:
        sims = stack @ stack.T
        if float(sims.min()) < threshold:
            raise errors.selfies_disagree()
    mean = stack.mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def combine_v1(raws: Sequence[np.ndarray], tolerance: float) -> np.ndarray:
    """Mean of raw descriptors; refuses selfies further apart than ``tolerance``."""
    stack = np.stack(raws).astype(np.float64)
    if len(stack) > 1:
        d = np.linalg.norm(stack[:, None, :] - stack[None, :, :], axis=-1)
        if float(d.max()) > tolerance:
            raise errors.selfies_disagree()
    return stack.mean(axis=0)


def best_per_photo(rows: Sequence[PhotoMatch]) -> list[PhotoMatch]:
    best: dict[str, PhotoMatch] = {}
    for r in rows:
        cur = best.get(r.photo_id)
        if cur is None or r.rank > cur.rank:
            best[r.photo_id] = r
    return sorted(best.values(), key=lambda r: (-r.rank, r.photo_id))


def v2_face_hits(services: Services, event_id: str, query: np.ndarray, threshold: float) -> list[Hit]:
    space = services.space("v2")
    return services.store.search(event_id, space, query, min_score=threshold, limit=MAX_FACES_SCANNED)


def v1_face_hits(services: Services, event_id: str, raw_query: np.ndarray, tolerance: float) -> list[tuple[Hit, float]]:
    """(hit, raw Euclidean distance) for every face within ``tolerance``."""
    space = services.space("v1")
    qn = float(np.linalg.norm(raw_query))
    unit = (raw_query / qn).astype(np.float32)
    min_cos = math.sqrt(max(0.0, 1.0 - (tolerance / qn) ** 2)) - 1e-6
    hits = services.store.search(event_id, space, unit, min_score=min_cos, limit=MAX_FACES_SCANNED)
    out = []
    for h in hits:
        d = math.sqrt(max(0.0, qn * qn + h.norm * h.norm - 2.0 * qn * h.norm * h.score))
        if d <= tolerance:
            out.append((h, d))
    return out


def find_v2(services: Services, event_id: str, query: np.ndarray, threshold: float) -> list[PhotoMatch]:
    return best_per_photo([_row(h, h.score, h.score) for h in v2_face_hits(services, event_id, query, threshold)])


def find_v1(services: Services, event_id: str, raw_query: np.ndarray, tolerance: float) -> list[PhotoMatch]:
    hits = v1_face_hits(services, event_id, raw_query, tolerance)
    return best_per_photo([_row(h, -d, 1.0 - d, distance=d) for h, d in hits])


def rows_json(services: Services, event_id: str, space: str, rows: Sequence[PhotoMatch]) -> list[dict]:
    """Match rows as JSON, each with its photo's source URL (the ``image_url`` given at ingest)
    and its thumbnail's URL (one more query for all rows, thumbnails.row_fields)."""
    states = services.store.photo_states(event_id, space, [r.photo_id for r in rows])
    out = [{**r.to_json(space), "url": s.source_url if (s := states.get(r.photo_id)) else None} for r in rows]
    return thumbnails.row_fields(services, event_id, out)


def _row(h: Hit, rank: float, score: float, distance: float | None = None) -> PhotoMatch:
    return PhotoMatch(h.photo_id, rank, score, tuple(h.bbox), h.face_id, distance)


def page(rows: list[PhotoMatch], *, limit: int, cursor: str | None) -> tuple[list[PhotoMatch], str | None]:
    """Keyset paging over rows sorted by (-rank, photo_id): stable while photos are added."""
    if cursor:
        rank, photo_id = decode_cursor(cursor)
        rows = [r for r in rows if (-r.rank, r.photo_id) > (-rank, photo_id)]
    chunk = rows[:limit]
    more = len(rows) > limit
    return chunk, (encode_cursor(chunk[-1]) if more and chunk else None)


def encode_cursor(last: PhotoMatch) -> str:
    raw = json.dumps({"r": last.rank, "p": last.photo_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        rank, photo_id = float(data["r"]), str(data["p"])
        if not math.isfinite(rank):
            raise ValueError
        return rank, photo_id
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise errors.invalid_cursor() from None
