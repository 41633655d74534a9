"""Legacy v1 endpoints (dlib's 128-d descriptor space, face_recognition semantics)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import errors
from ..match import combine_v1, find_v1
from ..selfies import selfie_faces
from ..vectors import parse_vector, parse_vectors
from .fields import Fields, require_api_key, services
from .ingest_request import ingest_request
from .match_request import match_options, match_response, require_indexed
from .v2 import ingest_response

bp = Blueprint("v1", __name__)

DIM = 128


@bp.post("/api/face/analyze")
def analyze():
    svc = services()
    fields = Fields()
    images = fields.images(svc.settings.max_image_bytes)
    face, seen = selfie_faces(svc, "v1", images[:1])[0]
    return jsonify(
        {
            "descriptor": [float(x) for x in face.raw] if face.raw is not None else None,
            "bbox": face.bbox_list(),
            "det_score": round(face.det_score, 4),
            "faces_detected": seen,
            "model": svc.space("v1").model_id,
        }
    )


@bp.post("/api/v1/ingest")
@require_api_key
def ingest():
    fields = Fields()
    vectors = None
    if fields.has("descriptor"):
        vectors = {"v1": [parse_vector(fields.json_value("descriptor"), DIM, "descriptor")]}
    elif fields.has("descriptors"):
        vectors = {"v1": parse_vectors(fields.json_value("descriptors"), DIM, "descriptors")}
    return jsonify(ingest_response(ingest_request(fields, vectors), "v1"))


@bp.post("/api/v1/match")
def match():
    svc = services()
    fields = Fields()
    event_id = require_indexed(fields, "v1")
    tolerance = fields.number("tolerance", svc.settings.v1_tolerance, lo=0.0, hi=2.0)
    if tolerance is None or tolerance <= 0:
        raise errors.invalid_tolerance()
    opts = match_options(fields)
    if fields.has("descriptor"):
        raws = [parse_vector(fields.json_value("descriptor"), DIM, "descriptor")]
    elif fields.has("descriptors"):
        raws = parse_vectors(fields.json_value("descriptors"), DIM, "descriptors")
    else:
        found = selfie_faces(svc, "v1", fields.images(svc.settings.max_image_bytes))
        raws = [face.raw for face, _ in found]
    query = combine_v1(raws, tolerance)
    rows = find_v1(svc, event_id, query, tolerance)
    return jsonify(match_response(event_id, "v1", rows, opts, queries=len(raws), model=svc.space("v1").model_id,
                                  tolerance=tolerance))
