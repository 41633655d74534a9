"""v2 endpoints (InsightFace space): ingest, match, embed, detect."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify

from .. import errors
from ..faces import DetectedFace, Purpose
from ..ingest import IngestResult, fetch_bytes
from ..match import combine_v2, find_v2, v2_threshold
from ..selfies import selfie_faces
from ..vectors import parse_vector, parse_vectors
from .fields import Fields, require_api_key, services
from .ingest_request import ingest_request
from .match_request import match_options, match_response, require_indexed

bp = Blueprint("v2", __name__, url_prefix="/api/v2")


@bp.post("/ingest")
@require_api_key
def ingest():
    svc = services()
    fields = Fields()
    vectors = None
    if fields.has("embedding") or fields.has("embeddings"):
        dim = svc.space("v2").dim
        vecs = (
            [parse_vector(fields.json_value("embedding"), dim, "embedding")]
            if fields.has("embedding")
            else parse_vectors(fields.json_value("embeddings"), dim, "embeddings")
        )
        vectors = {"v2": vecs}
    result = ingest_request(fields, vectors)
    return jsonify(ingest_response(result, "v2"))


def ingest_response(result: IngestResult, space: str) -> dict:
    own = result.primary(space)
    return {
        "event_id": result.event_id,
        "photo_id": result.photo_id,
        "faces_indexed": own.faces_indexed if own else 0,
        "faces": [face_json(f) for f in (own.faces if own else [])],
        "model": own.model if own else None,
        "spaces": {name: {"faces_indexed": o.faces_indexed, "model": o.model} for name, o in result.outcomes.items()},
    }


@bp.post("/match")
def match():
    svc = services()
    fields = Fields()
    event_id = require_indexed(fields, "v2")
    space = svc.space("v2")
    threshold = fields.number("threshold", v2_threshold(svc.settings, space.model_id), lo=-1.0, hi=1.0)
    if threshold is None:
        raise errors.invalid_threshold()
    opts = match_options(fields)
    if fields.has("user_embedding") or fields.has("embedding") or fields.has("embeddings"):
        if fields.has("embeddings"):
            units = parse_vectors(fields.json_value("embeddings"), space.dim, "embeddings")
        else:
            name = "user_embedding" if fields.has("user_embedding") else "embedding"
            units = [parse_vector(fields.json_value(name), space.dim, name)]
        source = "embedding"
    else:
        found = selfie_faces(svc, "v2", fields.images(svc.settings.max_image_bytes))
        units = [face.embedding for face, _ in found]
        source = "image"
    query = combine_v2(units, threshold)
    rows = find_v2(svc, event_id, query, threshold)
    return jsonify(match_response(event_id, "v2", rows, opts, queries=len(units), model=space.model_id,
                                  threshold=threshold, query_source=source))


@bp.post("/embed")
def embed():
    svc = services()
    fields = Fields()
    images = fields.images(svc.settings.max_image_bytes)
    if not images and fields.has("image_url"):
        images = [_fetch(fields)]
    face, seen = selfie_faces(svc, "v2", images[:1] if images else [])[0]
    return jsonify(
        {
            "embedding": [round(float(x), 6) for x in face.embedding],
            "bbox": face.bbox_list(),
            "det_score": round(face.det_score, 4),
            "quality": face.quality.to_json() if face.quality else None,
            "faces_detected": seen,
            "model": svc.space("v2").model_id,
        }
    )


@bp.post("/detect")
def detect():
    svc = services()
    fields = Fields()
    engine = svc.engines.get("v2")
    images = fields.images(svc.settings.max_image_bytes)
    if not images:
        if not fields.has("image_url"):
            raise errors.missing_image("send a multipart file 'image', 'image_base64' or 'image_url'")
        images = [_fetch(fields)]
    t0 = time.perf_counter()
    img = svc.decode(images[0])
    purpose: Purpose = "ingest" if (fields.text("purpose") or "selfie") == "ingest" else "selfie"
    faces = engine.detect(img, purpose)
    elapsed = (time.perf_counter() - t0) * 1000.0
    return jsonify(
        {
            "faces": [
                {
                    "bbox": f.bbox_list(),
                    "kps": [[round(float(x), 1), round(float(y), 1)] for x, y in f.kps],
                    "det_score": round(f.det_score, 4),
                    "quality": f.quality.to_json() if f.quality else None,
                    "embedding": [round(float(x), 6) for x in f.embedding],
                }
                for f in sorted(faces, key=lambda f: -f.area)
            ],
            "faces_detected": len(faces),
            "image_width": img.width,
            "image_height": img.height,
            "processing_time_ms": round(elapsed, 1),
            "model": svc.space("v2").model_id,
        }
    )


def face_json(face: DetectedFace) -> dict:
    """A face in ingest and verify responses: box, detector score (0-1) and quality."""
    return {"bbox": face.bbox_list(), "det_score": round(face.det_score, 4),
            "quality": face.quality.to_json() if face.quality else None}


def _fetch(fields: Fields) -> bytes:
    return fetch_bytes(services(), fields.text("image_url", required=True))
