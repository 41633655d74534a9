"""Validation of embeddings that arrive as JSON (precomputed ingest, match by vector)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import errors

MAX_VECTORS = 64
_NUMBERS = {int, float}
_MAX_COMPONENT = 1e15  # squares of dim such components still sum within float32


def parse_vector(value: Any, dim: int, field: str) -> np.ndarray:
    """A JSON list of ``dim`` finite numbers → float32 array, else a 400 that says why.

    On the match path of every request: the checks run in C (one ``map(type, ...)`` over the
    list, one numpy conversion), not as a Python loop per element."""
    if not isinstance(value, list) or not value:
        raise errors.invalid_embedding(f"'{field}' must be a non-empty list of numbers")
    if not set(map(type, value)) <= _NUMBERS:  # JSON gives exact int/float; bool is its own type
        raise errors.invalid_embedding(f"'{field}' must contain only numbers")
    if len(value) != dim:
        raise errors.dimension_mismatch(len(value), dim)
    try:
        arr = np.array(value, dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        raise errors.invalid_embedding(f"'{field}' contains NaN or infinity") from None
    if not np.isfinite(arr).all():
        raise errors.invalid_embedding(f"'{field}' contains NaN or infinity")
    peak = float(np.abs(arr).max())
    if peak == 0.0 or peak > _MAX_COMPONENT:
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
