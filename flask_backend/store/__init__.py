"""The per-event face store: exact search over per-(event, space) indexes, shared by processes.

``FaceStore`` is the one entry point; ``Space``, ``FaceRecord``, ``Hit`` and ``PhotoState``
are its value types; ``validate_event_id`` / ``validate_photo_id`` are reused by the HTTP layer.
Importing this package does not import faiss (see index.py).
"""

from .errors import StorageError, StorageFull, StorageUnavailable
from .face_store import FaceStore
from .ids import validate_event_id, validate_photo_id
from .models import SPACE_NAMES, FaceQualityRow, FaceRecord, Hit, PhotoState, Space

__all__ = [
    "SPACE_NAMES",
    "FaceQualityRow",
    "FaceRecord",
    "FaceStore",
    "Hit",
    "PhotoState",
    "Space",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "validate_event_id",
    "validate_photo_id",
]
