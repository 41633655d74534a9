"""One error type, and one named constructor per error code.

Every module below the HTTP layer (imaging, engines, store, ingest, match) raises
``ApiError`` for problems caused by the caller's input; the app turns it into
``{"error": {"code": ..., "message": ...}}`` with ``status``. The worker and the CLI
catch the same class and record ``code``/``message`` as the photo's failure reason.

Each code is spelled once, here: code raises ``errors.unknown_event(event_id)``, never
``ApiError(404, "unknown_event", ...)``, so a code keeps one status and one shape of detail
wherever it comes from. ``CODES`` (code -> status) is what the OpenAPI test checks the spec
against; ``out_of_range`` is the one family (``invalid_<field>``) whose codes are built from
the field's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec

P = ParamSpec("P")

# code -> HTTP status of every constructor below (filled as they are defined).
CODES: dict[str, int] = {}


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


def _error(status: int, code: str) -> Callable[[Callable[P, str | tuple[str, dict[str, Any]]]], Callable[P, ApiError]]:
    """Turn a function returning a message (or ``(message, extra)``) into the code's constructor."""

    def wrap(build: Callable[P, str | tuple[str, dict[str, Any]]]) -> Callable[P, ApiError]:
        CODES[code] = status

        def make(*args: P.args, **kwargs: P.kwargs) -> ApiError:
            built = build(*args, **kwargs)
            message, extra = built if isinstance(built, tuple) else (built, {})
            return ApiError(status, code, message, **extra)

        make.__name__ = build.__name__
        make.__doc__ = build.__doc__
        make.code = code  # type: ignore[attr-defined]
        make.status = status  # type: ignore[attr-defined]
        return make

    return wrap


def out_of_range(name: str, lo: float, hi: float) -> ApiError:
    """400 ``invalid_<name>``: a numeric field outside its range (``invalid_top_k``, ...)."""
    return ApiError(400, f"invalid_{name}", f"'{name}' must be between {lo:g} and {hi:g}")


# --- 400: the request -----------------------------------------------------------------
@_error(400, "invalid_json")
def invalid_json() -> str:
    return "body must be a JSON object"


@_error(400, "missing_field")
def missing_field(name: str) -> str:
    return f"'{name}' is required"


@_error(400, "invalid_field")
def invalid_field(message: str) -> str:
    return message


@_error(400, "invalid_mode")
def invalid_mode() -> str:
    return "'mode' must be 'top_k' or 'all'"


@_error(400, "invalid_cursor")
def invalid_cursor() -> str:
    return "cursor is not one this service issued"


@_error(400, "invalid_threshold")
def invalid_threshold() -> str:
    return "'threshold' must be a number between -1 and 1"


@_error(400, "invalid_tolerance")
def invalid_tolerance() -> str:
    return "'tolerance' must be a number in (0, 2]"


@_error(400, "invalid_min_score")
def invalid_min_score() -> str:
    return "min_score must be a number"


@_error(400, "invalid_limit")
def invalid_limit() -> str:
    return "limit must be a non-negative integer or None"


@_error(400, "selfies_disagree")
def selfies_disagree() -> str:
    return "the selfies do not show the same person"


# --- 400: images and URLs --------------------------------------------------------------
@_error(400, "missing_image")
def missing_image(message: str) -> str:
    return message


@_error(400, "too_many_images")
def too_many_images(message: str) -> str:
    return message


@_error(400, "invalid_base64")
def invalid_base64(message: str) -> str:
    return message


@_error(400, "empty_image")
def empty_image(where: str = "") -> str:
    """``where``: e.g. "the URL returned an empty body (host x)"; default: an empty image."""
    return where or "the image is empty (0 bytes)"


@_error(400, "corrupt_image")
def corrupt_image(format_name: str, detail: str = "") -> str:
    suffix = f" ({detail})" if detail else ""
    return f"the {format_name} image is truncated or corrupt{suffix}"


@_error(400, "invalid_url")
def invalid_url(message: str) -> str:
    return message


@_error(400, "forbidden_url")
def forbidden_url(message: str) -> str:
    return message


@_error(400, "fetch_failed")
def fetch_failed(message: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return message, extra


# --- 400: ids, vectors, spaces ---------------------------------------------------------
@_error(400, "invalid_event_id")
def invalid_event_id() -> str:
    return "event_id must be 1-128 characters of A-Z a-z 0-9 _ . - and must not start with '.'"


@_error(400, "invalid_photo_id")
def invalid_photo_id() -> str:
    return "photo_id must be 1-512 characters, not only whitespace, without control characters"


@_error(400, "invalid_source_url")
def invalid_source_url(max_len: int) -> str:
    return f"source_url must be a string of at most {max_len} characters"


@_error(400, "invalid_embedding")
def invalid_embedding(message: str) -> str:
    return message


@_error(400, "invalid_face")
def invalid_face(message: str) -> str:
    return message


@_error(400, "too_many_vectors")
def too_many_vectors(field: str, count: int, limit: int) -> str:
    return f"'{field}' holds {count} vectors; at most {limit}"


@_error(400, "dimension_mismatch")
def dimension_mismatch(got: int, expected: int) -> tuple[str, dict[str, Any]]:
    return f"an embedding has {got} dimensions, the space has {expected}", {"expected": int(expected), "got": int(got)}


@_error(400, "invalid_space")
def invalid_space(message: str) -> str:
    return message


@_error(400, "unknown_space")
def unknown_space(names: Any, expected: Any) -> str:
    return f"unknown space(s) {names!r}; expected one of {list(expected)}"


# --- 401 / 404 / 409 -------------------------------------------------------------------
@_error(401, "unauthorized")
def unauthorized() -> str:
    return "missing or invalid X-API-Key"


@_error(404, "unknown_event")
def unknown_event(event_id: str) -> str:
    return f"unknown event {event_id!r}"


@_error(404, "not_indexed")
def not_indexed(event_id: str, space: str) -> tuple[str, dict[str, Any]]:
    return f"event {event_id!r} has no {space} index", {"space": space}


@_error(404, "unknown_photo")
def unknown_photo(event_id: str, photo_id: str) -> str:
    return f"photo {photo_id!r} is not in event {event_id!r}"


@_error(409, "space_mismatch")
def space_mismatch(event_id: str, indexed: Any, requested: Any) -> tuple[str, dict[str, Any]]:
    """``indexed``/``requested``: store ``Space`` objects (engine, model_id, dim, name)."""
    message = (
        f"event {event_id!r} space {requested.name} is indexed with {indexed.engine}/{indexed.model_id} "
        f"({indexed.dim}-d), not {requested.engine}/{requested.model_id} ({requested.dim}-d); reindex it"
    )
    return (
        message,
        {
            "space": requested.name,
            "indexed": {"engine": indexed.engine, "model_id": indexed.model_id, "dim": indexed.dim},
            "requested": {"engine": requested.engine, "model_id": requested.model_id, "dim": requested.dim},
        },
    )


# --- 413 / 415 / 422 -------------------------------------------------------------------
@_error(413, "image_too_large")
def too_large(limit: int, *, actual: int | str | None = None, unit: str = "bytes") -> tuple[str, dict[str, Any]]:
    """An image over ``limit`` bytes (or pixels, ``unit="pixels"``); ``actual`` (e.g. ``"WxH = N"``) when known."""
    size = f"the image is {actual} {unit}" if actual is not None else f"the image is over {limit} {unit}"
    message = f"{size}; the limit is {limit} {unit}" if actual is not None else size
    return message, {"max_pixels" if unit == "pixels" else "max_bytes": int(limit)}


@_error(415, "unsupported_image")
def unsupported_image(message: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return message, extra


@_error(415, "unsupported_media_type")
def unsupported_media_type() -> str:
    return "send application/json or multipart/form-data"


@_error(422, "no_face")
def no_face(where: str = "", *, image: str | None = None) -> str | tuple[str, dict[str, Any]]:
    """``where``: which image had none, e.g. " in image 2"; ``image``: that image's name as a
    field too (verify: ``"a"`` or ``"b"``)."""
    message = f"no face found{where}; use a clear, front-facing photo"
    return (message, {"image": image}) if image is not None else message


# --- 503 ---------------------------------------------------------------------------------
@_error(503, "engine_not_ready")
def engine_not_ready(message: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return message, extra


# --- access (keys, event codes, forget, rate limits) -------------------------------------
@_error(400, "field_not_allowed")
def field_not_allowed(name: str, why: str) -> tuple[str, dict[str, Any]]:
    """A field the endpoint refuses to take from a request (e.g. forget's bar)."""
    return f"'{name}' is not accepted here: {why}", {"field": name}


@_error(400, "invalid_access")
def invalid_access(message: str) -> str:
    """A bad event access setting (mode / code)."""
    return message


@_error(400, "invalid_query")
def invalid_query(name: str, message: str) -> tuple[str, dict[str, Any]]:
    return message, {"field": name}


@_error(403, "forbidden")
def forbidden(message: str) -> str:
    """A valid key outside its role or its events."""
    return message


@_error(403, "event_code_required")
def event_code_required(event_id: str) -> str:
    return f"event {event_id!r} needs its code: header X-Event-Code or field event_code"


@_error(403, "event_code_invalid")
def event_code_invalid(event_id: str) -> str:
    return f"wrong code for event {event_id!r}"


@_error(429, "rate_limited")
def rate_limited(retry_after: int, message: str = "too many requests") -> tuple[str, dict[str, Any]]:
    """``retry_after`` seconds also go into the Retry-After header (api/errors.py)."""
    return f"{message}; retry after {retry_after} s", {"retry_after": int(retry_after)}


# --- storage faults (the store raises StorageFull / StorageUnavailable; api/errors.py maps them)
@_error(507, "storage_full")
def storage_full(message: str) -> str:
    """507: the data directory is full; the write was not stored (retry once space is freed)."""
    return message


@_error(503, "storage_unavailable")
def storage_unavailable(message: str, retry_after: int) -> tuple[str, dict[str, Any]]:
    """503 (with Retry-After): the database is read-only, unavailable or locked right now."""
    return message, {"retry_after": int(retry_after)}


# --- attendee and organizer experience: thumbnails, download all, dashboard ------------------
@_error(404, "no_thumbnail")
def no_thumbnail(event_id: str, photo_id: str) -> str:
    return f"photo {photo_id!r} of event {event_id!r} has no thumbnail (ingested by vector, or before thumbnails)"


@_error(400, "too_many_photos")
def too_many_photos(count: int, limit: int) -> tuple[str, dict[str, Any]]:
    return f"{count} photos asked for; at most {limit} per download", {"max_photos": int(limit)}


@_error(409, "retry_unavailable")
def retry_unavailable(photo_id: str) -> str:
    return f"photo {photo_id!r} has no http(s) URL to fetch again; ingest it again from its source"


@_error(503, "firestore_unavailable")
def firestore_unavailable(message: str) -> str:
    return f"Firestore is not reachable from this server: {message}"
