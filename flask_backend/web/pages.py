"""HTML pages and the machine-readable API description.

The selfie page is plain HTML + one script + one stylesheet served by this app (no CDN,
no build step). A strict Content-Security-Policy keeps the page to its own scripts; the
event photos themselves may live on any host (Cloudinary, Firebase Storage, ...).
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, jsonify, render_template, request
from markupsafe import Markup, escape

from .. import __version__
from ..openapi import build_spec
from . import docs as docs_view

bp = Blueprint("web", __name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MAX_EVENT_ID_LEN = 256
DEFAULT_PAGE_SIZE = 24
MAX_PAGE_SIZE = 100
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src * data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@lru_cache(maxsize=1)
def asset_version() -> str:
    """Changes whenever a static file changes: cache-busting query for the page's assets."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(STATIC_DIR.glob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _page(template: str, **context) -> Response:
    response = Response(render_template(template, asset_version=asset_version(), **context))
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/")
def home():
    return _page("selfie.html", event_id="", page_size=DEFAULT_PAGE_SIZE)


@bp.get("/e/<event_id>")
def event_page(event_id: str):
    if not event_id.strip() or len(event_id) > MAX_EVENT_ID_LEN:
        abort(404)
    return _page("selfie.html", event_id=event_id, page_size=_page_size())


def _page_size() -> int:
    """Photos per "load more" page; ``?page_size=`` lets an organizer (or a test) change it."""
    try:
        return min(MAX_PAGE_SIZE, max(1, int(request.args.get("page_size", DEFAULT_PAGE_SIZE))))
    except ValueError:
        return DEFAULT_PAGE_SIZE


@bp.get("/openapi.json")
def openapi_json():
    response = jsonify(build_spec(current_app))
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/docs")
def docs():
    spec = build_spec(current_app)
    return _page("docs.html", spec=spec, sections=docs_view.sections(spec), schemas=docs_view.schemas(spec))


@bp.app_template_filter("ticks")
def ticks(text: str) -> Markup:
    """Escape, then render `code` and **bold** spans (the spec's descriptions use them)."""
    html = str(escape(text or ""))
    html = re.sub(r"`([^`]+)`", r"<code>\1</code>", html)
    return Markup(re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", html))
