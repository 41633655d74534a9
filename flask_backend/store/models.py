"""Value types of the store's public API."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPACE_NAMES = ("v1", "v2")


@dataclass(frozen=True)
class Space:
    """An embedding space: an index belongs to exactly one (name, engine, model_id, dim)."""

    name: str  # "v1" | "v2"
    engine: str  # "dlib" | "insightface"
    model_id: str  # e.g. "dlib_resnet_v1" / "det500m_mbf128"
    dim: int


@dataclass(frozen=True)
class FaceRecord:
    """One detected face to store; the store L2-normalises and validates ``embedding``."""

    embedding: np.ndarray  # (dim,)
    bbox: tuple[float, float, float, float]
    det_score: float
    norm: float = 1.0  # raw vector norm before normalisation (v1 needs it)
    # Face quality (see flask_backend/faces/base.py FaceQuality); None when not known
    # (precomputed vectors). Stored with the face, for audits and re-filtering.
    quality: FaceQualityRow | None = None


@dataclass(frozen=True)
class FaceQualityRow:
    size_px: float
    sharpness: float
    yaw: float
    pitch: float
    score: float


@dataclass(frozen=True)
class Hit:
    face_id: int
    photo_id: str
    score: float  # cosine: inner product of normalised vectors
    bbox: tuple[float, float, float, float]
    det_score: float
    norm: float


@dataclass(frozen=True)
class PhotoState:
    photo_id: str
    source_url: str | None
    faces: int
    ingested_at: float  # unix seconds
    model_id: str
