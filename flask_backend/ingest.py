"""THE ingest pipeline: image → faces → store. Used by the API, the worker and the CLI.

One decode serves every space. When both spaces are filled, v1's descriptors are computed
on the v2 detector's boxes (SCRFD finds the small faces HOG misses, and HOG's cost on a big
photo is saved); v1 runs its own HOG detector only when v2 is not part of the ingest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import errors, thumbnails
from .faces import SPACES, DetectedFace
from .imaging import DecodedImage, FetchPolicy, fetch_image_bytes
from .services import Services
from .store import FaceRecord, Space
from .store.ids import validate_event_id, validate_photo_id
from .vectors import as_unit_vector

log = logging.getLogger(__name__)


@dataclass
class SpaceOutcome:
    space: str
    model: str
    faces: list[DetectedFace] = field(default_factory=list)
    faces_indexed: int = 0


@dataclass
class IngestResult:
    event_id: str
    photo_id: str
    outcomes: dict[str, SpaceOutcome]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def faces_indexed(self) -> int:
        """Faces of the photo: the most any space found (spaces index the same faces)."""
        return max((o.faces_indexed for o in self.outcomes.values()), default=0)

    def primary(self, space: str) -> SpaceOutcome | None:
        return self.outcomes.get(space) or next(iter(self.outcomes.values()), None)


def choose_spaces(services: Services, requested: Sequence[str] | None) -> list[str]:
    """Requested spaces (each must be ready), else the configured ones that are ready."""
    if requested:
        unknown = [s for s in requested if s not in SPACES]
        if unknown:
            raise errors.unknown_space(unknown, SPACES)
        for s in requested:
            services.engines.get(s)  # 503 when not ready
        return list(dict.fromkeys(requested))
    configured = services.settings.ingest_spaces or SPACES
    # only the configured spaces' engines are asked (and so loaded)
    ready = [s for s in configured if services.engines.status(s).ready]
    if not ready:
        raise errors.engine_not_ready(f"no ready engine among {list(configured)}")
    return ready


def fetch_bytes(services: Services, image_url: str) -> bytes:
    return fetch_image_bytes(image_url, FetchPolicy.from_settings(services.settings))


def load_image(services: Services, *, image: bytes | None, image_url: str | None) -> DecodedImage:
    s = services.settings
    if image is None:
        if not image_url:
            raise errors.missing_image("send image_url, image_base64 or a multipart file 'image'")
        image = fetch_bytes(services, image_url)
    if len(image) > s.max_image_bytes:
        raise errors.too_large(s.max_image_bytes)
    return services.decode(image)


def detect_spaces(services: Services, img: DecodedImage, spaces: Sequence[str], purpose: str) -> dict[str, list[DetectedFace]]:
    """Faces per space for one decoded image, sharing v2's boxes with v1 at ingest."""
    found: dict[str, list[DetectedFace]] = {}
    if "v2" in spaces:
        found["v2"] = services.engines.get("v2").detect(img, purpose)  # type: ignore[arg-type]
    if "v1" in spaces:
        v1 = services.engines.get("v1")
        if "v2" in found and purpose == "ingest":
            v2_faces = found["v2"]
            found["v1"] = v1.describe(img, [f.bbox for f in v2_faces], [f.det_score for f in v2_faces])  # type: ignore[attr-defined]
        else:
            found["v1"] = v1.detect(img, purpose)  # type: ignore[arg-type]
    return found


def refuse_stale_spaces(services: Services, event_id: str, spaces: Iterable[Space]) -> None:
    """409 when the event's index in a space was built by another model: a photo is written
    to all its spaces or to none, never to some of them."""
    for space in spaces:
        existing = services.store.space_of(event_id, space.name)
        if existing is not None and existing != space:
            raise errors.space_mismatch(event_id, existing, space)


def ingest_photo(
    services: Services,
    event_id: str,
    photo_id: str,
    *,
    image: bytes | None = None,
    image_url: str | None = None,
    vectors: Mapping[str, Sequence[np.ndarray]] | None = None,
    spaces: Sequence[str] | None = None,
) -> IngestResult:
    """Index every face of one photo into each chosen space; re-ingesting replaces.

    ``vectors`` ({space: [embedding, ...]}) indexes precomputed faces instead of an image.
    A photo without faces is recorded with 0 faces so that it is not retried forever.
    """
    validate_event_id(event_id)
    validate_photo_id(photo_id)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    thumb = None  # photos ingested by vector have no thumbnail
    if vectors is not None:
        found = {space: _precomputed_faces(vecs) for space, vecs in vectors.items()}
        chosen = choose_spaces(services, list(found))
    else:
        chosen = choose_spaces(services, spaces)
        img = load_image(services, image=image, image_url=image_url)
        thumb = thumbnails.make_for(services, img)  # from the decoded image: no second fetch
        timings["load"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        found = detect_spaces(services, img, chosen, "ingest")
        timings["detect_embed"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    targets = {name: services.space(name) for name in chosen}
    refuse_stale_spaces(services, event_id, targets.values())  # before writing any space
    outcomes: dict[str, SpaceOutcome] = {}
    for space_name, space in targets.items():
        faces = found.get(space_name, [])
        records = [
            FaceRecord(embedding=f.embedding, bbox=tuple(f.bbox), det_score=f.det_score, norm=f.norm)
            for f in faces
        ]
        stored = services.store.put_photo(event_id, photo_id, space, records, source_url=image_url)
        outcomes[space_name] = SpaceOutcome(space_name, space.model_id, faces, stored)
    thumbnails.save(services, event_id, photo_id, thumb)
    timings["store"] = time.perf_counter() - t2
    result = IngestResult(event_id, photo_id, outcomes, timings)
    log.info(
        "ingested event=%s photo=%s faces=%s spaces=%s",
        event_id, photo_id, result.faces_indexed, ",".join(outcomes),
    )
    return result


def _precomputed_faces(vecs: Sequence[np.ndarray]) -> list[DetectedFace]:
    faces = []
    for v in vecs:
        unit, n = as_unit_vector(v)
        faces.append(DetectedFace(bbox=(0.0, 0.0, 0.0, 0.0), kps=np.zeros((5, 2), np.float32), det_score=1.0, embedding=unit, norm=n))
    return faces
