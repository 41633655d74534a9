"""Request fields from JSON or multipart forms, with one set of typed getters.

Multipart requests carry the same fields as form fields: numbers as text, lists as
repeated fields or JSON text; images as file ``image`` (repeatable).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, request

from .. import errors
from ..access import codes, keys
from ..imaging import decode_base64_image
from ..services import Services

MAX_IMAGES = 10
_MISSING = object()


def services() -> Services:
    return current_app.extensions["facematch"]


class Fields:
    """The request's fields, whichever way they were sent."""

    def __init__(self) -> None:
        self.is_json = request.is_json
        if self.is_json:
            data = request.get_json(silent=True)
            if not isinstance(data, dict):
                raise errors.invalid_json()
            self._json: dict[str, Any] = data
        elif request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            self._json = {}
        elif request.content_length or request.mimetype:
            raise errors.unsupported_media_type()
        else:
            self._json = {}

    # --- raw access ------------------------------------------------------------
    def raw(self, name: str, default: Any = _MISSING) -> Any:
        if self.is_json:
            return self._json.get(name, default)
        values = request.form.getlist(name)
        if not values:
            return default
        return values if len(values) > 1 else values[0]

    def has(self, name: str) -> bool:
        value = self.raw(name, None)
        return value is not None and value != ""

    # --- typed getters -----------------------------------------------------------
    def text(self, name: str, *, required: bool = False, max_len: int = 2048) -> str | None:
        value = self.raw(name, None)
        if value is None or value == "":
            if required:
                raise errors.missing_field(name)
            return None
        if not isinstance(value, str):
            raise errors.invalid_field(f"'{name}' must be a string")
        if len(value) > max_len:
            raise errors.invalid_field(f"'{name}' is longer than {max_len} characters")
        return value

    def event_code(self) -> str | None:
        """The event's access code: header ``X-Event-Code``, else field ``event_code``."""
        return codes.given_code(self.text("event_code", max_len=256))

    def number(self, name: str, default: float | None, *, lo: float, hi: float, integer: bool = False) -> float | None:
        """A number within [lo, hi]; JSON null / "null" give None (meaning "no limit")."""
        value = self.raw(name, _MISSING)
        if value is _MISSING or value == "":
            return default
        if value is None or (isinstance(value, str) and value.strip().lower() in {"null", "none", "all"}):
            return None
        if isinstance(value, bool):
            raise errors.invalid_field(f"'{name}' must be a number")
        try:
            num = float(value) if not integer else _to_int(value)
        except (TypeError, ValueError):
            raise errors.invalid_field(f"'{name}' must be a number") from None
        if not math.isfinite(num) or not lo <= num <= hi:
            raise errors.out_of_range(name, lo, hi)
        return num

    def json_value(self, name: str) -> Any:
        """A list field: JSON as-is; form fields as JSON text (one or repeated)."""
        value = self.raw(name, None)
        if value is None or self.is_json:
            return value
        try:
            if isinstance(value, list):
                return [json.loads(v) for v in value]
            return json.loads(value)
        except ValueError:
            raise errors.invalid_field(f"'{name}' must be JSON") from None

    def images(self, max_bytes: int) -> list[bytes]:
        """Every image sent: files ``image``, ``image_base64``, ``images`` (list of base64)."""
        out: list[bytes] = []
        for f in request.files.getlist("image"):
            data = f.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise errors.too_large(max_bytes)
            out.append(data)
        b64 = self.raw("image_base64", None)
        if b64 is not None:
            if not isinstance(b64, str):
                raise errors.invalid_base64("'image_base64' must be a base64 string")
            out.append(decode_base64_image(b64, max_bytes))
        many = self.json_value("images") if self.has("images") else None
        if many is not None:
            if not isinstance(many, list) or not all(isinstance(x, str) for x in many):
                raise errors.invalid_base64("'images' must be a list of base64 strings")
            out.extend(decode_base64_image(x, max_bytes) for x in many)
        if len(out) > MAX_IMAGES:
            raise errors.too_many_images(f"at most {MAX_IMAGES} images per request")
        return out


def _to_int(value: Any) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    if isinstance(value, int):
        return value
    return int(str(value).strip())


def require_api_key(view: Callable) -> Callable:
    """Write endpoints need ``X-API-Key`` once any key exists (FACEMATCH_API_KEYS or a stored
    key); a scoped key must cover the ``event_id`` of the route (403 ``forbidden``).
    Endpoints taking the event from the body check it themselves with ``keys.require``."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        keys.require(services(), keys.WRITE, kwargs.get("event_id", keys.ANY_EVENT))
        return view(*args, **kwargs)

    return wrapper
