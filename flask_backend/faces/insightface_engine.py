"""v2 engine: an InsightFace model pack (SCRFD detector + ArcFace-style recogniser).

The pack is only ever loaded from a directory that already exists: insightface's own
download (no timeout) is never triggered. A missing pack leaves the engine "not ready"
with an error that says what was looked for and how to install it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np

from ..config import Settings
from ..imaging import DecodedImage, downscaled, to_bgr
from ..vectors import as_unit_vector
from .base import DetectedFace, EngineStatus, Purpose
from .shared import files_identity, shared

log = logging.getLogger(__name__)

MIN_DET_SIZE = 640
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

    def detect(self, image: DecodedImage, purpose: Purpose = "selfie") -> list[DetectedFace]:
        self._load()
        if self._error is not None:
            raise RuntimeError(self._error)
        size = self._settings.v2_det_size_selfie if purpose == "selfie" else self._settings.v2_det_size_ingest
        # The detector resizes to ``size`` itself; feeding it an image not much bigger
        # than that saves the resize, and the crops for embedding come from this copy.
        work = downscaled(image, self._settings.v2_work_side or max(size * 2, 1280))
        bgr = to_bgr(work)
        # Never blow a small image up to a big detector input: faces that fill it outgrow
        # SCRFD's anchors (a 112 px face crop is found at 640, missed at 1600).
        size = max(MIN_DET_SIZE, min(size, -(-max(bgr.shape[:2]) // 32) * 32))
        boxes, kpss = self._det.detect(bgr, input_size=fitted_input(bgr.shape, size))
        if boxes.shape[0] == 0:
            boxes, kpss, bgr = self._detect_padded(bgr, size)
        faces: list[DetectedFace] = []
        if boxes.shape[0] == 0:
            return faces
        crops = [self._align(bgr, kpss[i]) for i in range(boxes.shape[0])]
        raws = self._embed(crops)
        pad = (bgr.shape[1] - work.rgb.shape[1]) // 2
        for i in range(boxes.shape[0]):
            emb, n = as_unit_vector(raws[i])
            box = (boxes[i, :4] - pad).clip(min=0)
            faces.append(
                DetectedFace(
                    bbox=tuple(float(v) * work.scale for v in box),
                    kps=(kpss[i] - pad) * work.scale,
                    det_score=float(boxes[i, 4]),
                    embedding=emb,
                    norm=n,
                    raw=np.asarray(raws[i], dtype=np.float32),
                )
            )
        return faces

    def _detect_padded(self, bgr: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Second try with a border: detectors miss a face that fills the whole frame
        (close-up selfies, face crops). Returns boxes/landmarks in the padded image."""
        pad = max(bgr.shape[:2]) // 2
        padded = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        boxes, kpss = self._det.detect(padded, input_size=fitted_input(padded.shape, size))
        return boxes, kpss, padded

    def _embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """One batched run when the model takes a dynamic batch, else one run per face."""
        if self._batched:
            return np.asarray(self._rec.get_feat(crops))
        return np.concatenate([self._rec.get_feat(c) for c in crops])

    def _align(self, bgr: np.ndarray, kps: np.ndarray) -> np.ndarray:
        from insightface.utils import face_align

        return face_align.norm_crop(bgr, landmark=kps, image_size=self._rec.input_size[0])
