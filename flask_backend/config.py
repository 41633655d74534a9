"""Settings read from ``FACEMATCH_*`` environment variables.

One ``Settings`` object is shared by the web app, the photo worker and the bulk CLI, so
all three see the same data directory, model pack and limits. Every field maps to the
variable ``FACEMATCH_<FIELD NAME IN UPPER CASE>``; the README lists them all.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_ROOT = Path("~/.insightface/models").expanduser()


@dataclass(frozen=True)
class Settings:
    # --- storage -------------------------------------------------------------
    data_dir: Path = PROJECT_ROOT / "indexes"
    # --- engines -------------------------------------------------------------
    model_root: Path = DEFAULT_MODEL_ROOT
    v2_pack: str = "buffalo_l"
    onnx_providers: tuple[str, ...] = ()  # empty: CUDA then CPU, where available
    # Several gunicorn workers share a box: one inference thread per worker by default
    # keeps workers x threads <= cores.
    onnx_threads: int = 1
    faiss_threads: int = 1
    v2_det_size_selfie: int = 640
    v2_det_size_ingest: int = 1600
    v2_det_thresh: float = 0.5
    v2_work_side: int = 0  # side of the copy SCRFD and the aligner see; 0: auto (2 x det size, >= 1280)
    v1_enabled: bool = True
    v1_detect_side: int = 2000  # HOG runs on the photo downscaled to this side
    v1_upsample: int = 1  # HOG upsampling for event photos and small images (needs ~80 px faces)
    # --- images in -----------------------------------------------------------
    max_image_bytes: int = 25 * 1024 * 1024
    max_request_bytes: int = 40 * 1024 * 1024
    max_image_pixels: int = 80_000_000  # decompression-bomb limit (W x H)
    # Large photos are decoded downscaled to this side: JPEG draft mode decodes a 6000x4000
    # (24 MP) photo at exactly 3000 px, ~2.4x faster than in full and with no second resize.
    # 0: never downscale.
    max_decode_side: int = 3000
    allow_private_urls: bool = False
    url_allowed_hosts: tuple[str, ...] = ()
    fetch_connect_timeout: float = 5.0
    fetch_read_timeout: float = 20.0
    fetch_retries: int = 3
    # --- ingest / match ------------------------------------------------------
    ingest_spaces: tuple[str, ...] = ()  # empty: every ready space
    v1_tolerance: float = 0.6
    v2_threshold: float | None = None  # None: the pack's calibrated default
    forget_threshold: float | None = None  # None: stricter than the match default
    max_top_k: int = 1000
    page_size: int = 100
    # --- match at scale and storage faults (issue 8) ---------------------------
    # Events with at least this many faces use the approximate index once a writer built it
    # (0: exact only). Below it exact search is already within a few ms (scripts/bench_store.py).
    ann_min_faces: int = 100_000
    ann_radius_sigmas: float = 2.8  # approximate search radii, in standard deviations: 2.8 misses <= 0.5% of faces at the threshold (bench_store --ann)
    storage_retry_after: int = 5  # Retry-After seconds of 503 storage_unavailable
    storage_min_free_bytes: int = 16 << 20  # /health is degraded below this much free space
    storage_busy_timeout: float = 60.0  # seconds a write waits for the database lock before 503
    # onnxruntime's CPU memory arena + memory patterns keep buffers of every input shape seen
    # (SCRFD's input follows the photo's aspect ratio): off keeps RSS flat (bench_load --soak).
    onnx_cpu_arena: bool = False
    # --- scale-out: the store on PostgreSQL (issue 9) ---------------------------
    # Unset: SQLite in data_dir. postgresql://user@host:port/db: that database holds the truth
    # for every host; data_dir then only keeps this host's cache (snapshots, ANN indexes).
    store_url: str | None = None
    store_pool_size: int = 4  # PostgreSQL connections per process (>= threads per gunicorn worker)
    store_connect_timeout: float = 5.0  # seconds to get a PostgreSQL connection before 503
    # --- attendee and organizer experience: thumbnails, download all, dashboard --
    thumbnail_side: int = 480  # long side of the thumbnail made at ingest; 0: none
    thumbnail_format: str = "webp"  # webp | jpeg
    thumbnail_quality: int = 75
    thumbnail_max_age: int = 86400  # Cache-Control: private, max-age of a thumbnail
    thumbnail_url_ttl: int = 3600  # signed thumbnail URLs in match rows stay valid this long (at least)
    cloudinary_thumbnails: bool = False  # Cloudinary sources: thumbnail_url = /upload/w_480,c_limit/ URL
    zip_max_photos: int = 200  # photos in one "download all" zip
    rate_limit_download: str = "60 per 10 minutes"  # per address and endpoint: zips, single originals
    # --- faces indexed at ingest (issue 10: detection passes, rotations, quality) ----
    # a second, padded pass at the selfie size for faces too large for the big ingest input
    # (off: one pass, as before issue 10; about +10 % ingest CPU when on)
    ingest_large_faces: bool = True
    ingest_try_rotations: bool = True  # turn a photo 90/270 degrees when no face is upright
    # Floors for indexing (scripts/bench_quality.py; README "Face quality"): on ../shared/faces
    # and the bench photos the smallest labelled face is 77 px and the lowest labelled quality
    # 0.45, so these drop none of them; 0.25 drops a blurred giant background face.
    min_face_px: int = 40  # faces smaller than this (longer box side, original pixels) are not indexed
    min_face_quality: float = 0.25  # faces whose 0-1 quality score is lower are not indexed
    # --- service -------------------------------------------------------------
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    # --- access: event codes, keys, rate limits (flask_backend/access/) -----------
    # "open" keeps existing installs working; the README recommends "code".
    default_event_access: str = "open"
    # Only these peers may tell us the client address (X-Forwarded-For); gunicorn.conf.py
    # reads the same variable. "*": any peer.
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")
    rate_limits_enabled: bool = True
    rate_limit_storage: str = "memory://"  # per worker; redis://host:port/db shares the counts
    # Limits per client address, in flask-limiter's notation ("off": none). Venue wifi puts
    # many attendees behind one address: the search limit is generous, the others are not.
    rate_limit_search: str = "120 per minute"  # match, embed, detect, analyze, verify
    rate_limit_forget: str = "10 per hour"
    rate_limit_ingest: str = "1200 per minute"  # per API key
    rate_limit_event_code: str = "10 per 10 minutes"  # wrong codes, per address and event

    def __post_init__(self) -> None:
        # Paths and lists arrive as text (env) or as str/list overrides: normalise them once here.
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "Path" and not isinstance(value, Path):
                object.__setattr__(self, f.name, Path(value).expanduser())
            elif str(f.type).startswith("tuple") and not isinstance(value, tuple):
                parts = value.split(",") if isinstance(value, str) else value
                object.__setattr__(self, f.name, tuple(str(p).strip() for p in parts if str(p).strip()))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``FACEMATCH_*`` variables; ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("FACEMATCH_" + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f, raw)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def v2_pack_dir(self) -> Path:
        """The pack directory: ``v2_pack`` itself when it is a path, else under ``model_root``."""
        pack = Path(self.v2_pack).expanduser()
        if pack.is_absolute() or os.sep in self.v2_pack or self.v2_pack.startswith("."):
            return pack.resolve()
        return (self.model_root / self.v2_pack).resolve()


def _parse(f: dataclasses.Field, raw: str) -> Any:
    """Scalars from text; paths and comma-separated lists stay text for ``__post_init__``."""
    kind = str(f.type)
    name = "FACEMATCH_" + f.name.upper()
    try:
        if kind == "bool":
            if raw.strip().lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.strip().lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind.startswith("float"):
            return None if raw.strip().lower() in {"none", "auto"} else float(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a valid {kind}") from exc
