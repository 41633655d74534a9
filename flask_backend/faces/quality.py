"""Face quality figures: size, sharpness, pose from 5 landmarks, and one 0-1 score.

Both engines call ``face_quality`` with their own landmark layout, so a face gets the same
kind of figures in either space. The figures are cheap (a 112 px crop, a few landmark
ratios): no extra model.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from .base import BBox, FaceQuality

Layout = Literal["scrfd", "dlib5"]

CROP_PX = 112
INSET = 0.2
# Sharpness (variance of the Laplacian on the 112 px grey crop) at which the score's
# sharpness term reaches 1; below it the term falls linearly. Measured on ../shared/faces:
# sharp portraits give 150-2500, the bench's blurred background faces under 30.
SHARP_FULL = 60.0
# Pose: the score's pose term is cos(yaw) * cos(pitch) (1 frontal, 0.5 at 60 degrees).
# Landmark ratios of a frontal face, measured on the frontal photos of ../shared/faces:
NOSE_DEPTH_SCRFD = 0.55  # nose tip protrusion / inter-ocular distance (yaw from the nose shift)
NOSE_T0_SCRFD = 0.52  # nose tip between eye line (0) and mouth line (1) when frontal
NOSE_DEPTH_T = 0.45  # nose protrusion / eye-to-mouth height (pitch)
NOSE_DROP_DLIB = 0.78  # dlib5: nose base below the eye line / inter-ocular distance, frontal
NOSE_DEPTH_DLIB = 0.6


def sharpness(rgb: np.ndarray, box: BBox) -> float:
    """Variance of the Laplacian of the face's inner part (the box less INSET on each side:
    eyes, nose, mouth; grey, resized to CROP_PX): blur lowers it. The inset keeps hair and
    background out, which would lend a blurred face the sharpness of what is behind it."""
    h, w = rgb.shape[:2]
    bx1, by1, bx2, by2 = box
    dx, dy = (bx2 - bx1) * INSET, (by2 - by1) * INSET
    inner = (bx1 + dx, by1 + dy, bx2 - dx, by2 - dy)
    x1, y1, x2, y2 = (int(v) for v in np.rint(np.asarray(inner, dtype=np.float64)))
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (CROP_PX, CROP_PX), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(small, cv2.CV_64F).var())


def pose(kps: np.ndarray, layout: Layout) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 5 landmarks; roll is removed before yaw and pitch."""
    k = np.asarray(kps, dtype=np.float64).reshape(5, 2)
    if layout == "scrfd":  # left eye, right eye, nose tip, left mouth, right mouth
        le, re, nose, lm, rm = k
    else:  # dlib 5-point: right eye outer/inner corners, left eye outer/inner, nose base
        re, le, nose = (k[0] + k[1]) / 2, (k[2] + k[3]) / 2, k[4]
        if le[0] > re[0]:  # image-left eye first, as in scrfd
            le, re = re, le
        lm = rm = None
    eye_vec = re - le
    iod = float(np.hypot(*eye_vec))
    if iod < 1e-6:
        return 0.0, 0.0, 0.0
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    c, s = eye_vec / iod
    rot = np.array([[c, s], [-s, c]])  # undo the roll
    eyes = rot @ ((le + re) / 2)
    n = rot @ nose
    if lm is not None and rm is not None:
        mouth = rot @ ((lm + rm) / 2)
        mid_x = (eyes[0] + mouth[0]) / 2
        height = mouth[1] - eyes[1]
        yaw = math.degrees(math.atan((n[0] - mid_x) / iod / NOSE_DEPTH_SCRFD))
        t = (n[1] - eyes[1]) / height if abs(height) > 1e-6 else NOSE_T0_SCRFD
        pitch = math.degrees(math.atan((t - NOSE_T0_SCRFD) / NOSE_DEPTH_T))
    else:
        yaw = math.degrees(math.atan((n[0] - eyes[0]) / iod / NOSE_DEPTH_DLIB))
        pitch = math.degrees(math.atan(((n[1] - eyes[1]) / iod - NOSE_DROP_DLIB) / NOSE_DEPTH_DLIB))
    return float(yaw), float(pitch), float(roll)


def quality_score(det_score: float, sharp: float, yaw: float, pitch: float) -> float:
    """det_score x sharpness term x pose term, each 0-1."""
    sharp_term = min(1.0, sharp / SHARP_FULL)
    pose_term = max(0.0, math.cos(math.radians(yaw))) * max(0.0, math.cos(math.radians(pitch)))
    return float(max(0.0, min(1.0, det_score)) * sharp_term * pose_term)


def face_quality(rgb: np.ndarray, scale: float, box: BBox, kps: np.ndarray, det_score: float,
                 layout: Layout) -> FaceQuality:
    """Quality of one face; ``box``/``kps`` in ORIGINAL pixels, ``rgb`` the working copy
    (``original = working * scale``)."""
    x1, y1, x2, y2 = box
    sharp = sharpness(rgb, (x1 / scale, y1 / scale, x2 / scale, y2 / scale))
    yaw, pitch, roll = pose(kps, layout)
    return FaceQuality(size_px=float(max(x2 - x1, y2 - y1)), sharpness=sharp, yaw=yaw, pitch=pitch,
                       score=quality_score(det_score, sharp, yaw, pitch), roll=roll)
