"""What every face engine gives back, whatever library is behind it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from ..imaging import DecodedImage

# "selfie": one query face, detector at the selfie size. "ingest": every face of an event
# photo, small and large (see InsightFaceEngine.detect).
Purpose = Literal["selfie", "ingest"]
BBox = tuple[float, float, float, float]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes (0 when they do not overlap)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass(frozen=True)
class FaceQuality:
    """How usable a face is for matching (all in ORIGINAL image terms).

    ``size_px``: the longer side of the box. ``sharpness``: variance of the Laplacian of the
    grey face crop resized to 112 px (blur gives < 20, a sharp face 100-2000).
    ``yaw``/``pitch``: degrees, 0 = frontal, estimated from the 5 landmarks (rough: good to
    about 10-15 degrees). ``score``: one 0-1 figure combining the detector score, sharpness
    and pose, compared with FACEMATCH_MIN_FACE_QUALITY (see faces/quality.py).
    """

    size_px: float
    sharpness: float
    yaw: float
    pitch: float
    score: float
    roll: float = 0.0  # degrees, in-plane tilt of the eye line in the photo (not part of score)

    def to_json(self) -> dict[str, float]:
        return {"size_px": round(self.size_px, 1), "sharpness": round(self.sharpness, 1),
                "yaw": round(self.yaw, 1), "pitch": round(self.pitch, 1), "roll": round(self.roll, 1),
                "score": round(self.score, 3)}


@dataclass(frozen=True)
class FaceBox:
    """Where a face is, in ORIGINAL image pixel coordinates: what a detector finds."""

    bbox: BBox
    kps: np.ndarray  # (5, 2) landmarks, in the layout of the engine that found them
    det_score: float  # 0-1 for every engine (dlib's HOG margin is mapped: see dlib_engine)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def bbox_list(self) -> list[float]:
        return [round(float(v), 1) for v in self.bbox]


@dataclass(frozen=True)
class DetectedFace(FaceBox):
    """A found face with its embedding."""

    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (dim,) L2-normalised
    norm: float = 1.0  # norm of the raw vector (v1 keeps it for Euclidean tolerance)
    raw: np.ndarray | None = field(default=None, repr=False)  # raw vector before normalisation
    quality: FaceQuality | None = None  # None only for precomputed vectors


@dataclass(frozen=True)
class EngineStatus:
    ready: bool
    model: str
    dim: int | None
    error: str | None = None
    providers: tuple[str, ...] = ()


class FaceEngine(Protocol):
    """Detects faces and embeds them. Engines never know about HTTP."""

    space: str  # "v1" | "v2"
    engine_name: str  # "dlib" | "insightface"
    # At ingest, describe the faces this space's detector found instead of detecting
    # again (None: always detect). The ingest pipeline orders the spaces by it and falls
    # back on ``detect`` when that space is not part of the ingest or found no face.
    boxes_from: str | None

    def status(self) -> EngineStatus: ...

    def detect(self, image: DecodedImage, purpose: Purpose = "selfie") -> list[DetectedFace]:
        """Every face, biggest first is NOT guaranteed; callers sort."""
        ...

    def describe(self, image: DecodedImage, boxes: Sequence[FaceBox]) -> list[DetectedFace]:
        """Embeddings for faces another detector found (boxes in original pixels); a box this
        engine cannot describe is left out."""
        ...


def largest(faces: Sequence[DetectedFace]) -> DetectedFace:
    return max(faces, key=lambda f: f.area)
