"""v2 engine: an InsightFace model pack (SCRFD detector + ArcFace-style recogniser).

The pack is only ever loaded from a directory that already exists: insightface's own
download (no timeout) is never triggered. A missing pack leaves the engine "not ready"
with an error that says what was looked for and how to install it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..config import Settings
from ..imaging import DecodedImage, downscaled, to_bgr
from ..vectors import as_unit_vector
from .base import DetectedFace, EngineStatus, FaceBox, Purpose, box_iou
from .quality import face_quality
from .shared import files_identity, shared

log = logging.getLogger(__name__)

MIN_DET_SIZE = 640
LARGE_FACE_SIDE = 512  # input of the ingest's large-face pass: the photo at 320 px + 30 % borders
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def resolve_providers(requested: tuple[str, ...]) -> list[str]:
    """Requested providers that this onnxruntime build has, else CUDA then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = requested or PREFERRED_PROVIDERS
    chosen = [p for p in wanted if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def fitted_input(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    """SCRFD input (w, h): long side ``size``, short side following the photo's aspect ratio
    (rounded up to the stride 32) instead of a size x size square that is a third padding
    for a 3:2 photo — detection cost drops by about that third."""
    h, w = shape[:2]
    short = min(size, -(-size * min(h, w) // (max(h, w) * 32)) * 32)
    return (size, short) if w >= h else (short, size)


def pack_problem(pack_dir: Path, pack_name: str) -> str | None:
    """Why ``pack_dir`` cannot be loaded, or None if it looks like a pack."""
    if not pack_dir.is_dir():
        return (
            f"v2 model pack '{pack_name}' not found: directory {pack_dir} does not exist. "
            f"Install it with `python -m scripts.fetch_models {pack_name}` on a host with "
            "internet access (or copy the pack there), or set FACEMATCH_V2_PACK to a pack "
            "directory / FACEMATCH_MODEL_ROOT to the folder that holds it."
        )
    if not any(pack_dir.glob("*.onnx")):
        return f"v2 model pack '{pack_name}' at {pack_dir} holds no .onnx files"
    return None


def shrunk(bgr: np.ndarray, f: float) -> np.ndarray:
    """``bgr`` scaled by ``f`` <= 1. INTER_AREA from a 3000 px photo straight to 320 px costs
    ~17 ms, more than the padded detector pass itself; a bilinear step to 3x the target first
    and INTER_AREA for the rest gives the same averaged pixels for detection in ~4 ms."""
    if f >= 1.0:
        return bgr
    h, w = bgr.shape[:2]
    if f < 1 / 3:
        bgr = cv2.resize(bgr, (max(1, round(w * f * 3)), max(1, round(h * f * 3))), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(bgr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def merge_boxes(boxes: np.ndarray, kpss: np.ndarray, iou_max: float = 0.4, inside_max: float = 0.6):
    """Non-maximum suppression over the boxes of several passes: best score first, a box is
    dropped when it overlaps a kept one (IoU > ``iou_max``) or lies mostly inside it
    (intersection / its own area > ``inside_max``: a part of a big face found as a face)."""
    if boxes.shape[0] <= 1:
        return boxes, kpss
    order = np.argsort(-boxes[:, 4])
    keep: list[int] = []
    for i in order:
        b = boxes[i]
        area = max(1e-6, (b[2] - b[0]) * (b[3] - b[1]))
        dup = False
        for j in keep:
            k = boxes[j]
            ix = max(0.0, min(b[2], k[2]) - max(b[0], k[0]))
            iy = max(0.0, min(b[3], k[3]) - max(b[1], k[1]))
            k_area = max(1e-6, (k[2] - k[0]) * (k[3] - k[1]))
            inter = ix * iy
            if inter / (area + k_area - inter) > iou_max or inter / min(area, k_area) > inside_max:
                dup = True
                break
        if not dup:
            keep.append(int(i))
    return boxes[keep], kpss[keep]


class InsightFaceEngine:
    """Loads lazily, once per process, and never downloads anything."""

    space = "v2"
    engine_name = "insightface"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pack_dir = settings.v2_pack_dir
        self._pack_name = self._pack_dir.name
        self._lock = threading.Lock()
        self._loaded = False
        self._det = None
        self._rec = None
        self._dim: int | None = None
        self._batched = False
        self._providers: tuple[str, ...] = ()
        self._error: str | None = None

    @property
    def model_id(self) -> str:
        return self._pack_name

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            problem = pack_problem(self._pack_dir, self._pack_name)
            if problem is None:
                try:
                    self._load_pack()
                except Exception as exc:  # a broken pack must not take the service down
                    log.exception("v2 model pack %s failed to load", self._pack_dir)
                    problem = f"v2 model pack at {self._pack_dir} failed to load: {exc}"
            self._error = problem
            if problem:
                log.warning("v2 engine not ready: %s", problem)
            self._loaded = True

    def _load_pack(self) -> None:
        st = self._settings
        providers = resolve_providers(st.onnx_providers)
        key = (
            files_identity(self._pack_dir, "*.onnx"), tuple(providers), max(1, st.onnx_threads),
            st.v2_det_thresh, st.v2_det_size_selfie, bool(st.onnx_cpu_arena),
        )
        self._det, self._rec = shared("v2", key, lambda: self._open_pack(providers))
        self._dim = int(self._rec.output_shape[-1])
        self._batched = not isinstance(self._rec.session.get_inputs()[0].shape[0], int)
        self._providers = tuple(self._rec.session.get_providers())
        log.info("v2 engine ready: pack=%s dim=%s providers=%s", self._pack_name, self._dim, self._providers)

    def _open_pack(self, providers: list[str]):
        """The detector and recogniser sessions (loaded once per process for a given key)."""
        import onnxruntime
        from insightface.app import FaceAnalysis

        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = max(1, self._settings.onnx_threads)
        so.inter_op_num_threads = 1
        # SCRFD's input follows each photo's aspect ratio (fitted_input), so shapes vary: the CPU
        # arena and the per-shape memory patterns would keep every size's buffers for good (RSS
        # grows with the variety of photos seen). Plain allocations keep a worker's RSS flat.
        arena = bool(self._settings.onnx_cpu_arena)
        so.enable_cpu_mem_arena = arena
        so.enable_mem_pattern = arena
        app = FaceAnalysis(
            name=str(self._pack_dir),
            allowed_modules=["detection", "recognition"],
            providers=providers,
            sess_options=so,
        )
        if "recognition" not in app.models:
            raise RuntimeError("pack has no recognition model")
        ctx_id = 0 if providers[0] == "CUDAExecutionProvider" else -1
        size = self._settings.v2_det_size_selfie
        app.prepare(ctx_id=ctx_id, det_thresh=self._settings.v2_det_thresh, det_size=(size, size))
        return app.det_model, app.models["recognition"]

    def status(self) -> EngineStatus:
        self._load()
        return EngineStatus(
            ready=self._error is None,
            model=self._pack_name,
            dim=self._dim,
            error=self._error,
            providers=self._providers,
        )

    boxes_from = None  # SCRFD always finds its own faces

    def detect(self, image: DecodedImage, purpose: Purpose = "selfie") -> list[DetectedFace]:
        """Selfie: one pass at the selfie size (padded retry when nothing is found).

        Ingest: the big input for the small faces of event photos, plus a padded pass at the
        selfie size for the large ones: SCRFD misses faces that outgrow its anchors at a big
        input (a close-up portrait gives 0 faces at 1600), so one pass cannot serve both.
        The two passes' boxes are merged (one face, one box) before anything is embedded.
        """
        self._load()
        if self._error is not None:
            raise RuntimeError(self._error)
        s = self._settings
        size = s.v2_det_size_selfie if purpose == "selfie" else s.v2_det_size_ingest
        # The detector resizes to ``size`` itself; feeding it an image not much bigger
        # than that saves the resize, and the crops for embedding come from this copy.
        work = downscaled(image, s.v2_work_side or max(size * 2, 1280))
        bgr = to_bgr(work)
        # Never blow a small image up to a big detector input: faces that fill it outgrow
        # SCRFD's anchors (a 112 px face crop is found at 640, missed at 1600).
        size = max(MIN_DET_SIZE, min(size, -(-max(bgr.shape[:2]) // 32) * 32))
        boxes, kpss = self._det.detect(bgr, input_size=fitted_input(bgr.shape, size))
        if purpose == "ingest" and s.ingest_large_faces:
            # The photo at half the selfie size, as in the selfie retry, with a 30 % border
            # (a face filling the frame then fills < 60 % of the input): the input is 4/5 of
            # the selfie size, ~0.6x the pixels of a full selfie-size run.
            big_boxes, big_kps = self._detect_padded(bgr, LARGE_FACE_SIDE, pad_ratio=0.3)
            boxes, kpss = merge_boxes(np.concatenate([boxes, big_boxes]), np.concatenate([kpss, big_kps]))
        elif boxes.shape[0] == 0:
            boxes, kpss = self._detect_padded(bgr, size)
        return self._faces(work, bgr, boxes, kpss)

    def describe(self, image: DecodedImage, boxes: Sequence[FaceBox]) -> list[DetectedFace]:
        """Faces at boxes another detector found: SCRFD runs on a padded crop around each box
        (its landmarks are needed to align the face) and keeps the face that overlaps it."""
        self._load()
        if self._error is not None:
            raise RuntimeError(self._error)
        work = downscaled(image, self._settings.v2_work_side or 1280)
        bgr = to_bgr(work)
        found_boxes, found_kps = [], []
        for fb in boxes:
            x1, y1, x2, y2 = (v / work.scale for v in fb.bbox)
            m = max(x2 - x1, y2 - y1)
            cx1, cy1 = int(max(0, x1 - m)), int(max(0, y1 - m))
            cx2, cy2 = int(min(bgr.shape[1], x2 + m)), int(min(bgr.shape[0], y2 + m))
            if cx2 - cx1 < 8 or cy2 - cy1 < 8:
                continue
            b, k = self._detect_padded(np.ascontiguousarray(bgr[cy1:cy2, cx1:cx2]), MIN_DET_SIZE)
            if b.shape[0] == 0:
                continue
            b[:, [0, 2]] += cx1
            b[:, [1, 3]] += cy1
            k = k + np.array([cx1, cy1], np.float32)
            best = int(np.argmax([box_iou(row[:4], (x1, y1, x2, y2)) for row in b]))
            if box_iou(b[best, :4], (x1, y1, x2, y2)) >= 0.3:
                found_boxes.append(b[best])
                found_kps.append(k[best])
        if not found_boxes:
            return []
        return self._faces(work, bgr, np.stack(found_boxes), np.stack(found_kps))

    def _faces(self, work: DecodedImage, bgr: np.ndarray, boxes: np.ndarray, kpss: np.ndarray) -> list[DetectedFace]:
        """Embed the faces at ``boxes``/``kpss`` (working pixels of ``bgr``)."""
        faces: list[DetectedFace] = []
        if boxes.shape[0] == 0:
            return faces
        crops = [self._align(bgr, kpss[i]) for i in range(boxes.shape[0])]
        raws = self._embed(crops)
        h, w = bgr.shape[:2]
        for i in range(boxes.shape[0]):
            emb, n = as_unit_vector(raws[i])
            x1, y1, x2, y2 = boxes[i, :4]
            box = tuple(float(v) * work.scale for v in (max(0, x1), max(0, y1), min(w, x2), min(h, y2)))
            kps = np.asarray(kpss[i], dtype=np.float32) * work.scale
            det = float(boxes[i, 4])
            faces.append(
                DetectedFace(
                    bbox=box, kps=kps, det_score=det, embedding=emb, norm=n,
                    raw=np.asarray(raws[i], dtype=np.float32),
                    quality=face_quality(work.rgb, work.scale, box, kps, det, "scrfd"),
                )
            )
        return faces

    def _detect_padded(self, bgr: np.ndarray, size: int, pad_ratio: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """Detection with a border: detectors miss a face that fills the whole frame
        (close-up selfies and portraits, face crops). The photo is shrunk so that with a
        border of ``pad_ratio`` x its long side on each side it is ``size`` long, so this pass
        costs one small-input run whatever the photo. Returns boxes/landmarks in ``bgr``'s pixels."""
        h, w = bgr.shape[:2]
        f = min(1.0, (size / (1 + 2 * pad_ratio)) / max(h, w))
        small = shrunk(bgr, f)
        pad = int(max(small.shape[:2]) * pad_ratio)
        padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        boxes, kpss = self._det.detect(padded, input_size=fitted_input(padded.shape, size))
        if boxes.shape[0]:
            boxes = boxes.copy()
            boxes[:, :4] = (boxes[:, :4] - pad) / f
            kpss = (kpss - pad) / f
        return boxes, kpss

    def _embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """One batched run when the model takes a dynamic batch, else one run per face."""
        if self._batched:
            return np.asarray(self._rec.get_feat(crops))
        return np.concatenate([self._rec.get_feat(c) for c in crops])

    def _align(self, bgr: np.ndarray, kps: np.ndarray) -> np.ndarray:
        from insightface.utils import face_align

        return face_align.norm_crop(bgr, landmark=kps, image_size=self._rec.input_size[0])
