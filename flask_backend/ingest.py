"""THE ingest pipeline: image → faces → store. Used by the API, the worker and the CLI.

One decode serves every space. An engine declares whose boxes it describes (``boxes_from``):
v1's descriptors are computed on the v2 detector's boxes (SCRFD finds the small faces HOG
misses, and HOG's cost on a big photo is saved); v1 runs its own HOG detector when v2 is not
part of the ingest or found no face. Faces below the size / quality floors are not indexed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import errors, thumbnails
from .faces import SPACES, DetectedFace, FaceEngine, Purpose
from .faces.orientation import TURNS, face_back, has_upright_face, turned
from .imaging import DecodedImage, FetchPolicy, fetch_image_bytes
from .services import Services
from .store import FaceQualityRow, FaceRecord, Space
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


def detect_spaces(services: Services, img: DecodedImage, spaces: Sequence[str], purpose: Purpose) -> dict[str, list[DetectedFace]]:
    """Faces per space for one decoded image.

    At ingest a photo with no upright face is tried turned by 90 and 270 degrees (setting
    ``ingest_try_rotations``); the faces of the turn with the best upright face are kept,
    mapped back to the photo's own orientation.
    """
    found, detected = _detect_once(services, img, spaces, purpose)
    if purpose != "ingest" or not services.settings.ingest_try_rotations or _upright(found, detected):
        return found
    best, best_score = None, 0.0
    for degrees in TURNS:
        turned_found, detected = _detect_once(services, turned(img, degrees), spaces, purpose, fallback=False)
        score = _upright_score(turned_found, detected)
        if score > best_score:
            best, best_score = (degrees, turned_found), score
    if best is None:
        return found
    degrees, turned_found = best
    return {space: [face_back(f, degrees, img) for f in faces] for space, faces in turned_found.items()}


def _upright(found: Mapping[str, Sequence[DetectedFace]], detected: Iterable[str]) -> bool:
    """Whether a detector found an upright face (describers fit their landmarks to the box
    they are given, so only the detecting spaces' landmarks tell the face's roll)."""
    return any(has_upright_face(found[space]) for space in detected)


def _upright_score(found: Mapping[str, Sequence[DetectedFace]], detected: Iterable[str]) -> float:
    """The best detector score among the upright faces: both turns are tried and the one
    that looks most like upright faces wins (the roll SCRFD's landmarks give a sideways face
    does not tell reliably which way it lies; on ../shared/faces turned 90 degrees its sign
    was wrong for 2 of 24)."""
    return max((f.det_score for space in detected for f in found[space] if has_upright_face([f])), default=0.0)


def _detect_once(
    services: Services, img: DecodedImage, spaces: Sequence[str], purpose: Purpose, *, fallback: bool = True
) -> tuple[dict[str, list[DetectedFace]], list[str]]:
    """Each space's faces; at ingest an engine that declares ``boxes_from`` describes that
    space's faces (one face, one record in both spaces) and detects itself when that space
    is not ingested, or (``fallback``) found nothing; a space left with no face then
    describes what the others found, when its engine can. Also returns the spaces that ran
    their detector.

    The fallback detection runs at selfie settings: it is insurance for the faces the
    first detector missed, which are large ones (SCRFD at the ingest size finds far smaller
    faces than HOG); HOG's ingest upsampling would cost ~4x for them (a photo without faces:
    1.3 s of CPU). Turned photos (``fallback=False``) rely on the first detector alone."""
    engines: dict[str, FaceEngine] = {s: services.engines.get(s) for s in spaces}
    ingest = purpose == "ingest"
    found: dict[str, list[DetectedFace]] = {}
    detected: list[str] = []
    for space in _providers_first(engines):
        engine = engines[space]
        provider = engine.boxes_from if ingest and engine.boxes_from in engines else None
        given = found.get(provider) if provider else None
        if given:
            faces = engine.describe(img, given)
        elif provider and not fallback:
            faces = []
        else:
            faces = engine.detect(img, "selfie" if provider else purpose)
            detected.append(space)
        # The floors judge a face where it was detected; a describer keeps the faces it was
        # given, so both spaces index the same faces.
        found[space] = indexable(services, faces) if ingest and not given else faces
    if ingest:
        for space, faces in found.items():
            others = [f for other, fs in found.items() if other != space for f in fs]
            if not faces and others:
                found[space] = engines[space].describe(img, others)
    return found, detected


def _providers_first(engines: Mapping[str, FaceEngine]) -> list[str]:
    """Spaces ordered so that a space comes after the one whose boxes it takes."""
    order: list[str] = []
    pending = list(engines)
    while pending:
        ready = [s for s in pending if engines[s].boxes_from not in pending or engines[s].boxes_from == s]
        nxt = ready[0] if ready else pending[0]  # a cycle: break it anywhere
        order.append(nxt)
        pending.remove(nxt)
    return order


def indexable(services: Services, faces: Sequence[DetectedFace]) -> list[DetectedFace]:
    """The faces worth indexing: at least ``min_face_px`` and ``min_face_quality``."""
    s = services.settings
    return [
        f for f in faces
        if f.quality is None or (f.quality.size_px >= s.min_face_px and f.quality.score >= s.min_face_quality)
    ]


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
            FaceRecord(embedding=f.embedding, bbox=tuple(f.bbox), det_score=f.det_score, norm=f.norm,
                       quality=_quality_row(f))
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


def _quality_row(face: DetectedFace) -> FaceQualityRow | None:
    q = face.quality
    return None if q is None else FaceQualityRow(q.size_px, q.sharpness, q.yaw, q.pitch, q.score)


def _precomputed_faces(vecs: Sequence[np.ndarray]) -> list[DetectedFace]:
    faces = []
    for v in vecs:
        unit, n = as_unit_vector(v)
        faces.append(DetectedFace(bbox=(0.0, 0.0, 0.0, 0.0), kps=np.zeros((5, 2), np.float32), det_score=1.0, embedding=unit, norm=n))
    return faces
