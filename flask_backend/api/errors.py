"""One JSON error shape for every 4xx/5xx: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException

from .. import errors
from ..errors import ApiError
from ..store.errors import StorageError, StorageFull

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def storage_error_response(exc: StorageError):
    """507 storage_full, or 503 storage_unavailable with Retry-After; counted in /metrics."""
    from .. import metrics
    from .fields import services

    metrics.count_storage_error(exc.code, exc.reason)
    if isinstance(exc, StorageFull):
        api = errors.storage_full(exc.message)
    else:
        api = errors.storage_unavailable(exc.message, services().settings.storage_retry_after)
    response, status = error_response(api.status, api.code, api.message, **api.extra)
    if status == 503:
        response.headers["Retry-After"] = str(api.extra["retry_after"])
    return response, status


def error_response(status: int, code: str, message: str, **extra):
    body = {"error": {"code": code, "message": message, **extra}}
    rid = getattr(g, "request_id", None)
    if rid:
        body["error"]["request_id"] = rid
    return jsonify(body), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        response, status = error_response(exc.status, exc.code, exc.message, **exc.extra)
        if "retry_after" in exc.extra:  # 429 (and 503s that know when to come back)
            response.headers["Retry-After"] = str(int(exc.extra["retry_after"]))
        return response, status

    @app.errorhandler(StorageError)
    def _storage_error(exc: StorageError):
        log.warning("storage fault: %s (%s)", exc.code, exc.reason)
        return storage_error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        if status == 413:
            message = "request body is too large"
        response, status = error_response(status, code, message)
        valid = getattr(exc, "valid_methods", None)
        if status == 405 and valid:
            response.headers["Allow"] = ", ".join(valid)
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error (request_id=%s)", getattr(g, "request_id", "-"))
        return error_response(500, "internal_error", "internal error; quote the request_id when reporting it")
