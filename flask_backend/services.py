"""The per-process objects every entry point shares: settings, engines and the store.

The web app, the photo worker and the bulk CLI each build one ``Services``; engines and
the store open lazily, so building it in a gunicorn master costs nothing and forks safely.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING

from .config import Settings
from .faces import Engines
from .imaging import DecodedImage, decode_image

if TYPE_CHECKING:
    from .store import FaceStore, Space


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()

    @cached_property
    def engines(self) -> Engines:
        return Engines(self.settings)

    @cached_property
    def store(self) -> FaceStore:
        from .store import FaceStore

        with self._lock:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            s = self.settings
            return FaceStore(s.data_dir, faiss_threads=s.faiss_threads, ann_min_faces=s.ann_min_faces,
                             ann_nprobe=s.ann_nprobe)

    def space(self, name: str) -> Space:
        """The store's space descriptor for the ready engine of ``name`` (503 if not ready)."""
        from .store import Space

        engine = self.engines.get(name)
        status = engine.status()
        return Space(name=name, engine=engine.engine_name, model_id=status.model, dim=int(status.dim or 0))

    def decode(self, data: bytes) -> DecodedImage:
        """Decode with the configured limits, downscaled to ``max_decode_side`` (0: full size)."""
        s = self.settings
        return decode_image(data, max_side=s.max_decode_side or None, max_pixels=s.max_image_pixels)
