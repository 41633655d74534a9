"""Random events whose scores are exact, and the brute-force reference ranking they must produce.

Every face vector comes from a small pool of unit vectors whose first component ``s`` is
distinct per pool entry; the query is the first basis vector, so a face's cosine is exactly
its (stored) first component, whatever the summation order of the kernel. Faces drawn from
the same pool entry tie exactly; different entries differ by far more than float rounding.
That makes an exact comparison with a plain Python reference meaningful, ties included.
"""

from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass, field

import numpy as np


def pool(dim: int, size: int, seed: int, lo: float = -0.6, hi: float = 0.95) -> list[np.ndarray]:
    """``size`` unit vectors with distinct first components on a grid (spacing >= 1e-3)."""
    rng = np.random.default_rng(seed)
    firsts = np.linspace(lo, hi, size)
    out = []
    for s in rng.permutation(firsts):
        rest = rng.standard_normal(dim - 1)
        rest *= math.sqrt(1.0 - s * s) / np.linalg.norm(rest)
        out.append(np.concatenate(([s], rest)).astype(np.float64))
    return out


def stored_first(v: np.ndarray) -> float:
    """The first component as the store keeps it (normalised in float64, stored as float32)."""
    return float(np.float32(v[0] / np.linalg.norm(v)))


def photo_id(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(1, 6)))


@dataclass
class Event:
    """photo_id -> list of (pool index, raw norm) per face, in insertion order."""

    photos: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def random_event(rng: random.Random, n_photos: int, n_pool: int, *, norms: tuple[float, ...] = (1.0,),
                 max_faces: int = 8) -> Event:
    ev = Event()
    while len(ev.photos) < n_photos:
        pid = photo_id(rng)
        if pid in ev.photos:
            continue
        ev.photos[pid] = [(rng.randrange(n_pool), rng.choice(norms)) for _ in range(rng.randint(1, max_faces))]
    return ev


def reference(ev: Event, face_rank, min_rank: float) -> list[tuple[float, str, int]]:
    """Brute force: (rank, photo_id, index of the best face) per qualifying photo, best first.

    ``face_rank(pool_index, norm)`` gives a face's rank; the best face of a photo is the first
    one (lowest face id) with the photo's highest rank; order is rank desc, photo_id asc.
    """
    rows = []
    for pid, faces in ev.photos.items():
        best_i, best = None, None
        for i, (b, n) in enumerate(faces):
            r = face_rank(b, n)
            if best is None or r > best:
                best_i, best = i, r
        if best is not None and best >= min_rank:
            rows.append((best, pid, best_i))
    rows.sort(key=lambda t: (-t[0], t[1]))
    return rows


def after(rows: list[tuple[float, str, int]], key: tuple[float, str] | None) -> list[tuple[float, str, int]]:
    """The keyset continuation: rows strictly after ``key`` in (rank desc, photo_id asc) order."""
    if key is None:
        return rows
    return [r for r in rows if (-r[0], r[1]) > (-key[0], key[1])]
