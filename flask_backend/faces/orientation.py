"""Photos saved sideways without an EXIF orientation: turn them, detect, map the faces back.

SCRFD often still "finds" a sideways face, with landmarks good enough for a box but not for
an embedding that matches anyone (on ../shared/faces turned 90 degrees: boxes found for
23/24, v2 searches found 14/24, v1 none). So a photo is tried turned when it has no face
that is upright (eye line within ``UPRIGHT_ROLL`` degrees of horizontal), not only when it
has no face at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np

from ..imaging import DecodedImage
from .base import DetectedFace

UPRIGHT_ROLL = 45.0
TURNS = (90, 270)  # clockwise degrees tried, in this order


def has_upright_face(faces: Sequence[DetectedFace]) -> bool:
    return any(f.quality is None or abs(f.quality.roll) <= UPRIGHT_ROLL for f in faces)


def turned(img: DecodedImage, degrees: int) -> DecodedImage:
    """``img`` turned clockwise by 90 or 270 degrees (width and height swap)."""
    code = cv2.ROTATE_90_CLOCKWISE if degrees == 90 else cv2.ROTATE_90_COUNTERCLOCKWISE
    return DecodedImage(rgb=np.ascontiguousarray(cv2.rotate(img.rgb, code)), scale=img.scale,
                        width=img.height, height=img.width, format=img.format)


def face_back(face: DetectedFace, degrees: int, original: DecodedImage) -> DetectedFace:
    """A face found on ``turned(original, degrees)``, in ``original``'s coordinates."""
    w, h = original.width, original.height
    x1, y1, x2, y2 = face.bbox
    k = np.asarray(face.kps, dtype=np.float32)
    if degrees == 90:  # turned (x', y') = (h - y, x)
        bbox = (y1, h - x2, y2, h - x1)
        kps = np.stack([k[:, 1], h - k[:, 0]], axis=1)
    else:  # 270: turned (x', y') = (y, w - x)
        bbox = (w - y2, x1, w - y1, x2)
        kps = np.stack([w - k[:, 1], k[:, 0]], axis=1)
    q = face.quality
    if q is not None:
        q = dataclasses.replace(q, roll=(q.roll - degrees + 180.0) % 360.0 - 180.0)
    return dataclasses.replace(face, bbox=tuple(float(v) for v in bbox), kps=kps.astype(np.float32), quality=q)
