"""Validation and L2 normalisation of everything numeric that enters the store."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .. import errors
from .models import SPACE_NAMES, FaceRecord, Space

MAX_DIM = 8192
_MIN_NORM = 1e-12


def validate_space(space: object) -> Space:
    if not isinstance(space, Space):
        raise errors.invalid_space("space must be a Space")
    if space.name not in SPACE_NAMES:
        raise errors.unknown_space(space.name, SPACE_NAMES)
    for field in ("engine", "model_id"):
        value = getattr(space, field)
        if not isinstance(value, str) or not value.strip() or len(value) > 256:
            raise errors.invalid_space(f"space {field} must be a non-empty string")
    if isinstance(space.dim, bool) or not isinstance(space.dim, (int, np.integer)) or not 0 < int(space.dim) <= MAX_DIM:
        raise errors.invalid_space(f"space dim must be an integer in 1..{MAX_DIM}")
    return space


def validate_space_name(name: object) -> str:
    if name not in SPACE_NAMES:
        raise errors.unknown_space(name, SPACE_NAMES)
    return name  # type: ignore[return-value]


def _as_matrix(values: object, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise errors.invalid_embedding(f"{what} is not a numeric vector") from None
    return arr


def normalize_rows(mat: np.ndarray, dim: int, what: str) -> np.ndarray:
    """(k, dim) float64 → (k, dim) float32 unit rows; 400 on wrong dim, NaN/inf or zero norm."""
    if mat.ndim != 2 or mat.shape[1] == 0:
        raise errors.invalid_embedding(f"{what} must be a non-empty vector")
    if mat.shape[1] != dim:
        raise errors.dimension_mismatch(int(mat.shape[1]), int(dim))
    if not np.isfinite(mat).all():
        raise errors.invalid_embedding(f"{what} contains NaN or infinite values")
    norms = np.linalg.norm(mat, axis=1)
    if mat.shape[0] and not (norms > _MIN_NORM).all():
        raise errors.invalid_embedding(f"{what} has zero norm")
    return (mat / norms[:, None]).astype(np.float32)


def normalize_query(query: object, dim: int) -> np.ndarray:
    """A query vector as a (1, dim) float32 unit row."""
    arr = _as_matrix(query, "query")
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0:
        raise errors.invalid_embedding("query must be a non-empty 1-D vector")
    return normalize_rows(arr[None, :], dim, "query")


def _finite(value: object, what: str) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise errors.invalid_face(f"{what} must be a number") from None
    if not math.isfinite(out):
        raise errors.invalid_face(f"{what} must be finite")
    return out


def prepare_faces(faces: Sequence[FaceRecord], dim: int) -> tuple[np.ndarray, list[tuple[float, ...]]]:
    """Validate ``faces`` → ((k, dim) float32 unit embeddings, [(x1, y1, x2, y2, det_score, norm, size_px, sharpness, yaw, pitch, quality)])."""
    if faces is None or isinstance(faces, (str, bytes)):
        raise errors.invalid_face("faces must be a sequence of FaceRecord")
    faces = list(faces)
    if not faces:
        return np.zeros((0, dim), np.float32), []
    rows: list[np.ndarray] = []
    meta: list[tuple[float, ...]] = []
    for i, face in enumerate(faces):
        if not isinstance(face, FaceRecord):
            raise errors.invalid_face(f"face {i} is not a FaceRecord")
        vec = _as_matrix(face.embedding, f"face {i} embedding")
        if vec.ndim != 1 or vec.size == 0:
            raise errors.invalid_embedding(f"face {i} embedding must be a non-empty 1-D vector")
        rows.append(vec)
        try:
            bbox = tuple(face.bbox)
        except TypeError:
            raise errors.invalid_face(f"face {i} bbox must be [x1, y1, x2, y2]") from None
        if len(bbox) != 4:
            raise errors.invalid_face(f"face {i} bbox must be [x1, y1, x2, y2]")
        box = tuple(_finite(v, f"face {i} bbox") for v in bbox)
        norm = _finite(face.norm, f"face {i} norm")
        if norm <= 0:
            raise errors.invalid_face(f"face {i} norm must be positive")
        q = face.quality
        qual = (None,) * 5 if q is None else tuple(
            _finite(v, f"face {i} quality") for v in (q.size_px, q.sharpness, q.yaw, q.pitch, q.score))
        meta.append((*box, _finite(face.det_score, f"face {i} det_score"), norm, *qual))
    sizes = {r.size for r in rows}
    if len(sizes) != 1 or dim not in sizes:
        bad = next(r.size for r in rows if r.size != dim)
        raise errors.dimension_mismatch(int(bad), int(dim))
    return normalize_rows(np.stack(rows), dim, "embedding"), meta
