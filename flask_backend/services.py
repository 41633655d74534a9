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
        self._store_error: str | None = None  # why the store could not be opened, for /health

    @cached_property
    def engines(self) -> Engines:
        return Engines(self.settings)

    @cached_property
    def store(self) -> FaceStore:
        from .store import FaceStore
        from .store.errors import StorageError, storage_faults

        with self._lock:
            s = self.settings
            try:
                with storage_faults():
                    s.data_dir.mkdir(parents=True, exist_ok=True)
                store = FaceStore(s.data_dir, faiss_threads=s.faiss_threads, ann_min_faces=s.ann_min_faces,
                                  ann_sigmas=s.ann_radius_sigmas, busy_timeout_s=s.storage_busy_timeout,
                                  store_url=s.store_url, pool_max=s.store_pool_size,
                                  connect_timeout_s=s.store_connect_timeout)
            except StorageError as exc:  # not cached: the next request tries again
                self._store_error = f"{exc.code}: {exc.reason}"
                raise
            self._store_error = None
            return store

    def storage_status(self) -> dict:
        """The data dir's state for /health and /metrics: no database access, never raises."""
        from .store.errors import Health

        store = self.__dict__.get("store")  # not opened yet (or failed to open): look at the dir only
        health = store.health if store is not None else Health(self.settings.data_dir)
        if store is None and self._store_error is not None:
            return {"ok": False, "reason": self._store_error, "free_bytes": health.free_bytes(),
                    "writable": False}
        return health.status(self.settings.storage_min_free_bytes)

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
