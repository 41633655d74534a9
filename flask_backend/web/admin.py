"""The organizer dashboard page (``GET /admin``): static HTML + static/admin.js + admin.css.

The page holds no data: the organizer types a key once, it is kept in sessionStorage (gone
when the tab closes, never in a cookie the browser would send by itself), and every call
goes to the JSON API with ``X-API-Key``. The same CSP as the selfie page: no inline script.
"""

from __future__ import annotations

from flask import Blueprint

from .pages import _page

bp = Blueprint("admin", __name__)


@bp.get("/admin")
def admin():
    return _page("admin.html")
