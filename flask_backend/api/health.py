"""GET /health: liveness plus what each engine can do in this process."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import __version__
from .fields import services

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    engines = services().engines
    v1 = engines.status("v1")
    v2 = engines.status("v2")
    storage = services().storage_status()
    return jsonify(
        {
            "status": "ok" if v1.ready and v2.ready and storage["ok"] else "degraded",
            "storage": storage,
            "version": __version__,
            "insightface_ready": v2.ready,
            "engines": {
                "v1": {"ready": v1.ready, "model": v1.model, "dim": v1.dim, "error": v1.error},
                "v2": {
                    "ready": v2.ready,
                    "model": v2.model,
                    "dim": v2.dim,
                    "providers": list(v2.providers),
                    "error": v2.error,
                },
            },
        }
    )
