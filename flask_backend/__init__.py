"""FaceMatch: find every event photo you appear in from one selfie."""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Flask, g, request

from .config import Settings

__version__ = "0.1.0"

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Application factory: ``config`` is a Settings, overrides for Settings.from_env, or None."""
    from . import access, metrics, web
    from .api import dashboard, errors, event_access, events, health, photos, v1, v2, verify
    from .services import Services
    from .web.json import OrjsonProvider

    settings = config if isinstance(config, Settings) else Settings.from_env(**dict(config or {}))
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_request_bytes
    app.extensions["facematch"] = Services(settings)

    @app.before_request
    def _request_id() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex

    @app.after_request
    def _add_request_id(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers["X-FaceMatch-Worker"] = str(os.getpid())  # which process answered
        return response

    errors.register_error_handlers(app)
    for module in (health, v1, v2, verify, events, event_access, photos, dashboard):
        app.register_blueprint(module.bp)
    web.init_app(app, settings)
    metrics.init_app(app)
    access.init_app(app, settings)  # rate limits by endpoint name, security headers
    return app


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    root.setLevel(level.upper())
