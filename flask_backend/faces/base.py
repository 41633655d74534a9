"""What every face engine gives back, whatever library is behind it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from ..imaging import DecodedImage

Purpose = Literal["selfie", "ingest"]
BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class DetectedFace:
    """One face, in ORIGINAL image pixel coordinates."""

    bbox: BBox
    kps: np.ndarray  # (5, 2) landmarks
    det_score: float
    embedding: np.ndarray  # (dim,) float32, L2-normalised
    norm: float = 1.0  # norm of the raw vector (v1 keeps it for Euclidean tolerance)
    raw: np.ndarray | None = field(default=None, repr=False)  # raw vector before normalisation

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def bbox_list(self) -> list[float]:
        return [round(float(v), 1) for v in self.bbox]


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

    def status(self) -> EngineStatus: ...

    def detect(self, image: DecodedImage, purpose: Purpose = "selfie") -> list[DetectedFace]:
        """Every face, biggest first is NOT guaranteed; callers sort."""
        ...


def largest(faces: Sequence[DetectedFace]) -> DetectedFace:
    return max(faces, key=lambda f: f.area)
