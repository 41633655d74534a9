"""The attendee-facing web layer: selfie page, API description, CORS.

``init_app(app, settings)`` is the one hook ``create_app`` calls.
"""

from __future__ import annotations

from flask import Flask

from ..config import Settings
from . import admin
from .cors import init_cors
from .pages import bp


def init_app(app: Flask, settings: Settings) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(admin.bp)
    init_cors(app, settings.cors_origins)
