"""Selfie / embedding → the event's photos, one row per photo (its best face), best first.

The ranking itself (best face per photo, top_k, "all my photos" pages) runs on arrays in
the store (store/ranking.py): its cost does not depend on how many faces qualify.

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
from .store.ranking import PhotoRow, RankSpec

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
MAX_FACES_SCANNED = 50_000  # safety cap on faces gathered for one "forget me" query


def v2_threshold(settings: Settings, model_id: str) -> float:
    if settings.v2_threshold is not None:
        return settings.v2_threshold
    return PACK_THRESHOLDS.get(model_id, DEFAULT_V2_THRESHOLD)


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


@dataclass(frozen=True)
class MatchPlan:
    """What to rank: the space, the event, the (combined) unit query and how faces rank."""

    space: str
    event_id: str
    query: np.ndarray
    spec: RankSpec


@dataclass(frozen=True)
class MatchResult:
    rows: list[dict]
    next_cursor: str | None
    total: int | None
    search: str  # "exact" | "approximate"


def find_v2(services: Services, event_id: str, query: np.ndarray, threshold: float) -> MatchPlan:
    return MatchPlan("v2", event_id, np.asarray(query, dtype=np.float32), RankSpec(float(threshold)))


def find_v1(services: Services, event_id: str, raw_query: np.ndarray, tolerance: float) -> MatchPlan:
    """v1: rank by the raw Euclidean distance, a match when distance <= tolerance."""
    qn = float(np.linalg.norm(raw_query))
    return MatchPlan("v1", event_id, (raw_query / qn).astype(np.float32), RankSpec(-float(tolerance), qn))


def run_match(services: Services, plan: MatchPlan, *, mode: str, limit: int, cursor: str | None) -> MatchResult:
    """The top ``limit`` photos (mode "top_k"), or one keyset page of all of them (mode "all"),
    ranked from arrays in the store; metadata (bbox, URL) is read for the returned rows only."""
    after = decode_cursor(cursor) if mode == "all" and cursor else None
    found = services.store.match(plan.event_id, services.space(plan.space), plan.query, plan.spec,
                                 limit=limit, after=after, thumbnails=services.settings.thumbnail_side > 0,
                                 with_total=mode == "all")
    rows = thumbnails.row_fields(services, plan.event_id, [row_json(r, plan.space) for r in found.rows], found.thumbs)
    if mode != "all":
        return MatchResult(rows, None, None, found.search)
    next_cursor = encode_cursor(found.rows[-1]) if found.more and found.rows else None
    return MatchResult(rows, next_cursor, found.total, found.search)


def matched_photo_ids(services: Services, plan: MatchPlan) -> set[str]:
    """Every photo the plan matches, whatever the count (tools and tests: recall checks)."""
    ids: set[str] = set()
    cursor = None
    while True:
        page = run_match(services, plan, mode="all", limit=services.settings.max_top_k, cursor=cursor)
        ids.update(r["photo_id"] for r in page.rows)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def row_json(r: PhotoRow, space: str) -> dict:
    row = {"photo_id": r.photo_id, "score": round(r.score, 4), "bbox": [round(v, 1) for v in r.bbox]}
    if space == "v1":
        row["distance"] = round(float(r.distance or 0.0), 4)
    row["url"] = r.source_url
    return row


def encode_cursor(last: PhotoRow) -> str:
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
