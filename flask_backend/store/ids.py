"""Validators for event and photo ids.

The store is the last line of defence: event ids become file names under the data
directory, so they are restricted to a safe alphabet. The HTTP layer reuses these.
"""

from __future__ import annotations

import re
import unicodedata

from .. import errors
from ..errors import ApiError

EVENT_ID_MAX = 128
PHOTO_ID_MAX = 512
_EVENT_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def validate_event_id(event_id: object) -> str:
    """Return ``event_id`` if it is 1-128 chars of ``[A-Za-z0-9_.-]`` not starting with '.'.

    Raises errors.invalid_event_id() otherwise.
    """
    if not isinstance(event_id, str) or not _EVENT_ID_RE.fullmatch(event_id) or event_id.startswith("."):
        raise errors.invalid_event_id()
    return event_id


def validate_photo_id(photo_id: object) -> str:
    """Return ``photo_id`` if it is 1-512 chars, has no control characters and is not only whitespace.

    Raises errors.invalid_photo_id() otherwise. Lone surrogates are refused too:
    they cannot be stored as UTF-8.
    """
    ok = isinstance(photo_id, str) and 0 < len(photo_id) <= PHOTO_ID_MAX and photo_id.strip() != ""
    if ok:
        ok = not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in photo_id)  # type: ignore[union-attr]
    if not ok:
        raise errors.invalid_photo_id()
    return photo_id  # type: ignore[return-value]


def is_valid_event_id(event_id: object) -> bool:
    try:
        validate_event_id(event_id)
    except ApiError:
        return False
    return True


__all__ = ["EVENT_ID_MAX", "PHOTO_ID_MAX", "is_valid_event_id", "validate_event_id", "validate_photo_id"]
