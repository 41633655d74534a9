"""Security headers on every response (pages set their own, stricter-for-pages CSP).

API answers get a CSP that allows nothing (they are data, never documents to render), and
everything gets nosniff, no framing and no referrer (an event code in a page address must
never reach a photo host). Match, embed and the like describe a person: never cached.
"""

from __future__ import annotations

from flask import Flask, Response, request

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
NO_STORE_ENDPOINTS = frozenset({"v2.match", "v1.match", "v2.embed", "v2.detect", "v1.analyze", "events.forget"})


def no_store(endpoint: str | None) -> bool:
    return bool(endpoint) and (endpoint in NO_STORE_ENDPOINTS or endpoint.endswith(".verify"))


def init_headers(app: Flask) -> None:
    @app.after_request
    def _security_headers(response: Response) -> Response:
        h = response.headers
        h.setdefault("Content-Security-Policy", API_CSP)
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "no-referrer")
        if no_store(request.endpoint):
            h["Cache-Control"] = "no-store"
        return response
