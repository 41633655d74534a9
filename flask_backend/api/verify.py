"""Verify two faces: are they the same person? (organizers use it to check a claimed match)

    POST /api/v2/verify  image_a/image_b (multipart files), image_base64_a/image_base64_b,
                         or embedding_a/embedding_b (any mix: one side an image, the other a
                         vector) -> {"similarity", "threshold", "is_match", "faces_a",
                         "faces_b", "face_a", "face_b", "model"}
    POST /api/v1/verify  the same with descriptor_a/descriptor_b (raw 128-d descriptors) ->
                         {"distance", "tolerance", "is_match", ...}

The largest face of each image is compared (the selfie detector, as for a match query).
``faces_a``/``faces_b``: faces found in that image (null for a vector); ``face_a``/``face_b``:
the compared face's box, detector score and quality (null for a vector). Nothing is stored.
Its own blueprint so that access control and rate limits can be attached to it as a whole;
the endpoints are named ``verify.v2.verify`` and ``verify.v1.verify`` (``*.verify``: the
access layer gives them the search limit and ``Cache-Control: no-store`` by that name).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flask import Blueprint, jsonify, request

from .. import errors
from ..faces import DetectedFace, largest
from ..imaging import decode_base64_image
from ..match import v2_threshold
from ..services import Services
from ..vectors import as_unit_vector, parse_vector
from .fields import Fields, services
from .v2 import face_json

bp = Blueprint("verify", __name__)
_v2 = Blueprint("v2", __name__, url_prefix="/api/v2")
_v1 = Blueprint("v1", __name__, url_prefix="/api/v1")

SIDES = ("a", "b")


@dataclass(frozen=True)
class Side:
    vector: np.ndarray  # v2: unit embedding; v1: raw descriptor
    faces: int | None  # faces found in the image; None when a vector was sent
    face: DetectedFace | None


@_v2.post("/verify", endpoint="verify")
def verify_v2():
    svc = services()
    fields = Fields()
    space = svc.space("v2")
    threshold = fields.number("threshold", v2_threshold(svc.settings, space.model_id), lo=-1.0, hi=1.0)
    if threshold is None:
        raise errors.invalid_threshold()
    a, b = (_side(svc, fields, "v2", "embedding", space.dim, name) for name in SIDES)
    similarity = float(np.dot(as_unit_vector(a.vector)[0], as_unit_vector(b.vector)[0]))
    return jsonify({"similarity": round(similarity, 4), "threshold": threshold, "is_match": similarity >= threshold,
                    **_faces(a, b), "model": space.model_id})


@_v1.post("/verify", endpoint="verify")
def verify_v1():
    svc = services()
    fields = Fields()
    space = svc.space("v1")
    tolerance = fields.number("tolerance", svc.settings.v1_tolerance, lo=0.0, hi=2.0)
    if tolerance is None or tolerance <= 0:
        raise errors.invalid_tolerance()
    a, b = (_side(svc, fields, "v1", "descriptor", space.dim, name) for name in SIDES)
    distance = float(np.linalg.norm(a.vector.astype(np.float64) - b.vector.astype(np.float64)))
    return jsonify({"distance": round(distance, 4), "tolerance": tolerance, "is_match": distance <= tolerance,
                    **_faces(a, b), "model": space.model_id})


bp.register_blueprint(_v2)
bp.register_blueprint(_v1)


def _faces(a: Side, b: Side) -> dict:
    return {"faces_a": a.faces, "faces_b": b.faces,
            "face_a": face_json(a.face) if a.face else None, "face_b": face_json(b.face) if b.face else None}


def _side(svc: Services, fields: Fields, space: str, vector_field: str, dim: int, name: str) -> Side:
    """One side of the comparison: its vector field, else its image's largest face."""
    field = f"{vector_field}_{name}"
    if fields.has(field):
        return Side(parse_vector(fields.json_value(field), dim, field), None, None)
    data = _image(fields, name, svc.settings.max_image_bytes)
    if data is None:
        raise errors.missing_image(
            f"image {name} is missing: send multipart file 'image_{name}', 'image_base64_{name}' or '{field}'")
    faces = svc.engines.get(space).detect(svc.decode(data), "selfie")
    if not faces:
        raise errors.no_face(f" in image_{name}", image=name)
    face = largest(faces)
    vector = face.embedding if space == "v2" or face.raw is None else face.raw
    return Side(vector, len(faces), face)


def _image(fields: Fields, name: str, max_bytes: int) -> bytes | None:
    upload = request.files.get(f"image_{name}")
    if upload is not None:
        data = upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise errors.too_large(max_bytes)
        return data
    text = fields.raw(f"image_base64_{name}", None)
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise errors.invalid_base64(f"'image_base64_{name}' must be a base64 string")
    return decode_base64_image(text, max_bytes)
