"""Validation of embeddings that arrive as JSON (precomputed ingest, match by vector)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import errors

MAX_VECTORS = 64


def parse_vector(value: Any, dim: int, field: str) -> np.ndarray:
    """A JSON list of ``dim`` finite numbers → float32 array, else a 400 that says why."""
    if not isinstance(value, list) or not value:
        raise errors.invalid_embedding(f"'{field}' must be a non-empty list of numbers")
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in value):
        raise errors.invalid_embedding(f"'{field}' must contain only numbers")
    if len(value) != dim:
        raise errors.dimension_mismatch(len(value), dim)
    if not all(math.isfinite(float(x)) for x in value):
        raise errors.invalid_embedding(f"'{field}' contains NaN or infinity")
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all() or float(np.linalg.norm(arr)) == 0.0:
        raise errors.invalid_embedding(f"'{field}' is a zero or out-of-range vector")
    return arr.astype(np.float32)


def parse_vectors(value: Any, dim: int, field: str) -> list[np.ndarray]:
    """A list of vectors (``embeddings``); at most MAX_VECTORS."""
    if not isinstance(value, list) or not value:
        raise errors.invalid_embedding(f"'{field}' must be a non-empty list of vectors")
    if len(value) > MAX_VECTORS:
        raise errors.too_many_vectors(field, len(value), MAX_VECTORS)
    return [parse_vector(v, dim, f"{field}[{i}]") for i, v in enumerate(value)]


def as_unit_vector(vec: np.ndarray) -> tuple[np.ndarray, float]:
    v = np.asarray(vec, dtype=np.float64).reshape(-1)
    n = float(np.linalg.norm(v))
    if not math.isfinite(n) or n == 0.0:
        raise errors.invalid_embedding("embedding has zero or non-finite norm")
    return (v / n).astype(np.float32), n
