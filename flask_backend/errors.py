"""One error type and one JSON error shape for the whole service.

Every module below the HTTP layer (imaging, engines, store, ingest, match) raises
``ApiError`` for problems caused by the caller's input; the app turns it into
``{"error": {"code": ..., "message": ...}}`` with ``status``. The worker and the CLI
catch the same class and record ``code``/``message`` as the photo's failure reason.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A problem the caller can act on: maps to a 4xx (or 503) JSON error."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.extra)
        return {"error": body}

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"

