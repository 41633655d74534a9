"""Selfie → one face per image (the largest), in one space. Selfies never touch disk."""

from __future__ import annotations

from collections.abc import Sequence

from . import errors
from .faces import DetectedFace, largest
from .services import Services


def selfie_faces(services: Services, space: str, images: Sequence[bytes]) -> list[tuple[DetectedFace, int]]:
    """(largest face, faces seen) for each image; 422 ``no_face`` names the image without one."""
    if not images:
        raise errors.missing_image("send a selfie as multipart file 'image' or 'image_base64'")
    engine = services.engines.get(space)
    out = []
    for i, data in enumerate(images):
        faces = engine.detect(services.decode(data), "selfie")
        if not faces:
            where = f" in image {i + 1}" if len(images) > 1 else ""
            raise errors.no_face(where)
        out.append((largest(faces), len(faces)))
    return out
