"""v1 engine: dlib's HOG detector, 5-point shape predictor and ResNet descriptor.

This is the legacy 128-d space of face_recognition / face-api.js. It installs from PyPI
alone, so it is always available and is the fallback. The raw descriptor is kept: legacy
clients compare raw descriptors by Euclidean distance (tolerance 0.6).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence

import numpy as np

from ..config import Settings
from ..imaging import DecodedImage, downscaled
from ..vectors import as_unit_vector
from .base import DetectedFace, EngineStatus, FaceBox, Purpose
from .quality import face_quality
from .shared import shared

log = logging.getLogger(__name__)

MODEL_ID = "dlib_resnet_v1"
DIM = 128
SMALL_IMAGE_SIDE = 1000  # selfies below this are upsampled too
_DLIB_LOCK = threading.Lock()


def _open_models():
    import dlib
    import face_recognition_models as frm

    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
        dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
    )


class DlibEngine:
    space = "v1"
    engine_name = "dlib"
    model_id = MODEL_ID
    boxes_from = "v2"  # at ingest, describe SCRFD's faces when v2 found any (see describe)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # dlib objects are not documented as thread-safe, and every engine of the process
        # shares them (faces.shared): one lock for all.
        self._lock = _DLIB_LOCK
        self._models = None
        self._error: str | None = None

    def _load(self):
        if self._models is not None or self._error is not None:
            return self._models
        try:
            self._models = shared("v1", MODEL_ID, _open_models)
            log.info("v1 engine ready: %s", MODEL_ID)
        except Exception as exc:
            log.exception("v1 engine failed to load")
            self._error = f"dlib models failed to load: {exc}"
        return self._models

    def status(self) -> EngineStatus:
        self._load()
        return EngineStatus(ready=self._error is None, model=MODEL_ID, dim=DIM, error=self._error)

    def detect(self, image: DecodedImage, purpose: Purpose = "selfie") -> list[DetectedFace]:
        """HOG detection on a downscaled copy, then descriptors for every face."""
        models = self._load()
        if models is None:
            raise RuntimeError(self._error or "v1 engine not ready")
        detector = models[0]
        work = downscaled(image, self._settings.v1_detect_side)
        # HOG needs ~80 px faces; one upsampling finds ~40 px ones. Event photos (small faces
        # in big frames) and small images get it; large selfies don't need it.
        small = max(work.rgb.shape[:2]) < SMALL_IMAGE_SIDE
        upsample = self._settings.v1_upsample if (purpose == "ingest" or small) else 0
        with self._lock:
            rects, scores, _ = detector.run(work.rgb, upsample, 0.0)
        found = [
            FaceBox(
                bbox=(r.left() * work.scale, r.top() * work.scale, r.right() * work.scale, r.bottom() * work.scale),
                kps=np.zeros((5, 2), np.float32),
                det_score=hog_det_score(float(s)),
            )
            for r, s in zip(rects, scores)
        ]
        return self.describe(image, found)

    def describe(self, image: DecodedImage, boxes: Sequence[FaceBox]) -> list[DetectedFace]:
        """Descriptors for faces at ``boxes`` (original pixels), found by HOG or another detector.

        Descriptors always come from the decoded image, not HOG's smaller copy: the
        150x150 chip of a small face keeps more detail. At ingest the pipeline gives this
        SCRFD's boxes (``boxes_from``): SCRFD finds the small faces HOG misses, and HOG's
        cost on big photos is saved. The landmarks are always dlib's own (the descriptor
        was trained on its 5-point alignment).
        """
        import dlib

        models = self._load()
        if models is None:
            raise RuntimeError(self._error or "v1 engine not ready")
        _, predictor, recogniser = models
        work = image
        faces: list[DetectedFace] = []
        h, w = work.rgb.shape[:2]
        for fb in boxes:
            box = fb.bbox
            x1, y1, x2, y2 = (v / work.scale for v in box)
            rect = dlib.rectangle(
                int(max(0, round(x1))), int(max(0, round(y1))),
                int(min(w - 1, round(x2))), int(min(h - 1, round(y2))),
            )
            if rect.width() < 8 or rect.height() < 8:
                continue
            with self._lock:
                shape = predictor(work.rgb, rect)
                raw = np.asarray(recogniser.compute_face_descriptor(work.rgb, shape, 1), dtype=np.float32)
            kps = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32) * work.scale
            emb, n = as_unit_vector(raw)
            bbox = tuple(float(v) for v in box)
            faces.append(
                DetectedFace(bbox=bbox, kps=kps, det_score=fb.det_score, embedding=emb, norm=n, raw=raw,
                             quality=face_quality(work.rgb, work.scale, bbox, kps, fb.det_score, "dlib5"))
            )
        return faces


def hog_det_score(margin: float) -> float:
    """dlib's HOG score is an SVM margin (about -1 to 3; a detection at margin 0 is on the
    detector's own boundary), not a 0-1 figure. Mapped with a logistic,
    ``1 / (1 + exp(-2 * margin))``: margin 0 -> 0.5 (the same place as SCRFD's default
    threshold), 0.5 -> 0.73, 1 -> 0.88, 2 -> 0.98; monotonic, so rankings are kept."""
    return float(1.0 / (1.0 + math.exp(-2.0 * margin)))
