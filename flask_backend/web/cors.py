"""CORS for configured frontend origins (``Settings.cors_origins``).

Nothing is allowed by default: without configured origins only same-origin pages can read
responses. Preflights (``OPTIONS`` with ``Access-Control-Request-Method``) are answered
here, before routing, so JSON requests and multipart requests with custom headers (e.g.
``X-API-Key``) work from an allowed origin. ``*`` allows any origin (no credentials).
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response, request

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = ("content-type", "x-api-key", "x-request-id", "x-event-code")
EXPOSED_HEADERS = "X-Request-ID, Retry-After"
MAX_AGE = "600"


class CorsPolicy:
    """Which origins may call the API from a browser."""

    def __init__(self, origins: Iterable[str]) -> None:
        cleaned = [o.strip().rstrip("/") for o in origins if o and o.strip()]
        self.any_origin = "*" in cleaned
        self.origins = frozenset(o.lower() for o in cleaned if o != "*")

    @property
    def configured(self) -> bool:
        return self.any_origin or bool(self.origins)

    def allows(self, origin: str | None) -> bool:
        if not origin or origin == "null":
            return False
        return self.any_origin or origin.rstrip("/").lower() in self.origins

    def headers_for(self, origin: str) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": "*" if self.any_origin else origin,
            "Access-Control-Expose-Headers": EXPOSED_HEADERS,
        }


def init_cors(app: Flask, origins: Iterable[str]) -> CorsPolicy:
    policy = CorsPolicy(origins)
    app.extensions["facematch_cors"] = policy

    def is_preflight() -> bool:
        return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers

    @app.before_request
    def _preflight() -> Response | None:
        if not is_preflight():
            return None
        response = Response(status=204)
        del response.headers["Content-Type"]
        origin = request.headers.get("Origin")
        wanted = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")]
        if policy.allows(origin) and all(h in ALLOWED_HEADERS for h in wanted if h):
            response.headers.update(policy.headers_for(origin or ""))
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOWED_HEADERS)
            response.headers["Access-Control-Max-Age"] = MAX_AGE
        response.vary.add("Origin")
        return response

    @app.after_request
    def _cors_headers(response: Response) -> Response:
        if is_preflight():  # answered whole by _preflight
            return response
        origin = request.headers.get("Origin")
        if origin or policy.configured:  # caches must not serve one origin's answer to another
            response.vary.add("Origin")
        if origin and policy.allows(origin) and "Access-Control-Allow-Origin" not in response.headers:
            response.headers.update(policy.headers_for(origin))
        return response

    return policy
