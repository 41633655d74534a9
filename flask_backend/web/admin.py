"""The organizer dashboard page (``GET /admin``): static HTML + static/admin.js + admin.css.

The page holds no data: the organizer types a key once, it is kept in sessionStorage (gone
when the tab closes, never in a cookie the browser would send by itself), and every call
goes to the JSON API with ``X-API-Key``. The same CSP as the selfie page: no inline script.
"""

from __future__ import annotations

from flask import Blueprint, request

from .pages import _page

bp = Blueprint("admin", __name__)


DEFAULT_REFRESH_MS = 3000


@bp.get("/admin")
def admin():
    """``?refresh_ms=`` changes how often the counts refresh (tests use a short one)."""
    try:
        refresh = min(60_000, max(500, int(request.args.get("refresh_ms", DEFAULT_REFRESH_MS))))
    except ValueError:
        refresh = DEFAULT_REFRESH_MS
    return _page("admin.html", refresh_ms=refresh)
