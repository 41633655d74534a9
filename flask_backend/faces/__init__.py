"""Face engines behind one interface, created lazily once per process."""

from __future__ import annotations

from .. import errors
from ..config import Settings
from .base import DetectedFace, EngineStatus, FaceBox, FaceEngine, FaceQuality, Purpose, largest
from .dlib_engine import DlibEngine
from .insightface_engine import InsightFaceEngine

SPACES = ("v1", "v2")

__all__ = [
    "SPACES",
    "DetectedFace",
    "DlibEngine",
    "EngineStatus",
    "Engines",
    "FaceBox",
    "FaceEngine",
    "FaceQuality",
    "InsightFaceEngine",
    "Purpose",
    "largest",
]


class Engines:
    """The engines of one process. Nothing loads until first use (never in a gunicorn master)."""

    def __init__(self, settings: Settings) -> None:
        self._by_space: dict[str, FaceEngine] = {"v2": InsightFaceEngine(settings)}
        if settings.v1_enabled:
            self._by_space["v1"] = DlibEngine(settings)

    def status(self, space: str) -> EngineStatus:
        engine = self._by_space.get(space)
        if engine is None:
            return EngineStatus(ready=False, model="", dim=None, error=f"space {space} is disabled")
        return engine.status()

    def get(self, space: str) -> FaceEngine:
        """The ready engine of ``space``, or a 503 the frontend can fall back on."""
        if space not in SPACES:
            raise errors.unknown_space(space, SPACES)
        status = self.status(space)
        if not status.ready:
            raise errors.engine_not_ready(f"{space} engine is not ready: {status.error}", space=space)
        return self._by_space[space]

    def ready_spaces(self) -> list[str]:
        return [s for s in SPACES if self.status(s).ready]
