"""The OpenAPI 3.1 description of the HTTP API (served at ``/openapi.json``, rendered at ``/docs``).

It cannot drift silently from the code:

* ``build_spec(app)`` lists only the routes the app really has, and ``undocumented_routes(app)``
  names every route without an entry here (a test requires it to be empty);
* response schemas are closed (``additionalProperties: false``), and a test validates real
  responses of every endpoint, success and error, against them;
* a test checks that every ``ApiError`` code raised in ``flask_backend`` is listed under its
  status in ``ERROR_CODES``;
* defaults (page size, top_k limit, v1 tolerance, version) come from the running settings.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import Flask

from .. import __version__
from ..config import Settings
from .operations import ERROR_CODES, ERROR_MEANING, OPERATIONS
from .schemas import EVENT_CODE_HEADER, ref, s, schemas

__all__ = ["ERROR_CODES", "OPERATIONS", "app_routes", "build_spec", "openapi_path", "undocumented_routes"]

OPENAPI_VERSION = "3.1.0"
IGNORED_ENDPOINTS = {"static"}
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """Flask rule → OpenAPI path: ``/e/<path:x>`` → ``/e/{x}``."""
    return _CONVERTER.sub(r"{\1}", rule)


def app_routes(app: Flask) -> set[tuple[str, str]]:
    """(rule, method) of every route the app serves, but static files, HEAD and OPTIONS."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in IGNORED_ENDPOINTS:
            continue
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                out.add((rule.rule, method))
    return out


def undocumented_routes(app: Flask) -> list[tuple[str, str]]:
    return sorted(app_routes(app) - OPERATIONS.keys())


def _error_responses() -> dict[str, Any]:
    out = {}
    for status, codes in ERROR_CODES.items():
        listed = ", ".join(f"`{c}`" for c in codes)
        out[f"E{status}"] = {
            "description": f"{ERROR_MEANING[status]} Codes: {listed}.",
            "content": {"application/json": {"schema": ref("Error")}},
            "x-error-codes": list(codes),
        }
    return out


def build_spec(app: Flask | None = None) -> dict[str, Any]:
    """The OpenAPI document for ``app`` (every documented operation when ``app`` is None)."""
    settings = app.extensions["facematch"].settings if app is not None else Settings()
    routes = app_routes(app) if app is not None else set(OPERATIONS)
    paths: dict[str, dict[str, Any]] = {}
    for (rule, method), op in OPERATIONS.items():
        if (rule, method) not in routes:
            continue
        operation = copy.deepcopy(op)
        names = _CONVERTER.findall(rule)
        params = [{"name": n, "in": "path", "required": True, "schema": s()} for n in names]
        params += operation.pop("parameters", [])
        if operation.pop("x-event-code", False):
            params.append(EVENT_CODE_HEADER)
        if params:
            operation["parameters"] = params
        operation["operationId"] = f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', openapi_path(rule))}".rstrip("_")
        paths.setdefault(openapi_path(rule), {})[method.lower()] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "FaceMatch",
            "version": __version__,
            "summary": "Find every event photo you appear in from one selfie.",
            "description": (
                "Two embedding spaces: **v2** (InsightFace, cosine `threshold`) and **v1** (dlib, legacy, "
                "Euclidean `tolerance`). An index belongs to one space; queries never cross spaces. "
                "Multipart requests carry the same fields as form fields (numbers as text, lists as repeated "
                "fields or JSON text) and images as file `image` (repeat it for several selfies). "
                "Every error is JSON: `{\"error\": {\"code\", \"message\", \"request_id\"}}`. "
                "Browsers on other origins need the origin in `FACEMATCH_CORS_ORIGINS`."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "v2", "description": "InsightFace space"},
            {"name": "v1", "description": "legacy dlib space (face_recognition / face-api.js descriptors)"},
            {"name": "events", "description": "what an event holds; deletes are for good"},
            {"name": "photos", "description": "thumbnails, downloads, ingest outcomes and retries, the dashboard"},
            {"name": "service", "description": "operations"},
            {"name": "web", "description": "pages and this description"},
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas(settings),
            "responses": _error_responses(),
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                           "description": "required on write endpoints when the server has "
                                           "FACEMATCH_API_KEYS set"}},
        },
    }
