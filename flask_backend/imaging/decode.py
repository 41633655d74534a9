"""Validate and decode image bytes into an RGB array, entirely in memory.

Rules (DESIGN.md section 6):

* The format is sniffed from the bytes, never taken from a file name or Content-Type.
  Allowed: JPEG, PNG, WebP (still), BMP, TIFF, and HEIC/HEIF when ``pillow-heif`` is
  importable. Anything else (GIF, animated PNG/WebP, SVG, PDF, HTML, random bytes) is a
  415 ``unsupported_image``; a damaged file of an allowed format is a 400 ``corrupt_image``.
* Dimensions are checked from the header *before* any pixel is decoded, so a
  decompression bomb costs a few kilobytes of parsing, not gigabytes of memory.
* Pixels are decoded fully: Pillow's "load what is there" mode for truncated files is
  never used, a truncated upload is an error.
* EXIF orientation is applied; ``width``/``height`` are the oriented original size.
* ``max_side`` downscales; for JPEG, libjpeg's DCT scaling (``Image.draft``) decodes at
  1/2, 1/4 or 1/8 size first (never below ``max_side``), which is much cheaper than a
  full decode, then an area-averaging resize brings the long side to exactly ``max_side``.

Nothing is ever written to disk: selfies are biometric data.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFile

from .. import errors
from ..errors import ApiError

log = logging.getLogger(__name__)

try:  # optional: HEIC/HEIF (iPhone photos)
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the environment
    HEIF_SUPPORTED = False

_ORIENTATION_TAG = 0x0112
_BASE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
ALLOWED_FORMATS: tuple[str, ...] = _BASE_FORMATS + (("HEIF",) if HEIF_SUPPORTED else ())
_FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "TIFF": "TIFF", "HEIF": "HEIC"}
ALLOWED_FORMATS_TEXT = ", ".join(_FORMAT_NAMES[f] for f in ALLOWED_FORMATS)

# ISO-BMFF brands. HEIC proper vs. generic HEIF containers vs. AVIF (not accepted).
_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_HEIF_GENERIC_BRANDS = {b"mif1", b"msf1", b"mif2"}
_AVIF_BRANDS = {b"avif", b"avis"}
# Sizes of the BMP DIB headers Pillow (and Windows) know.
_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


@dataclass(frozen=True)
class DecodedImage:
    """A decoded photo, possibly downscaled for processing.

    ``rgb`` is H x W x 3 uint8 RGB, C-contiguous. ``scale`` maps working pixels back to
    the original: ``original_px = working_px * scale`` (>= 1.0). ``width``/``height``
    are the ORIGINAL size after EXIF orientation; ``format`` is the sniffed format.
    """

    rgb: np.ndarray
    scale: float
    width: int
    height: int
    format: str


# --------------------------------------------------------------------------- sniffing


def sniff_format(data: bytes) -> str | None:
    """Name the image format from magic bytes (``None`` when not recognised).

    Returns a Pillow format name for allowed formats, or one of ``"GIF"``, ``"AVIF"``,
    ``"SVG"``, ``"PDF"``, ... for things we recognise but refuse.
    """
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith(b"BM") and len(head) >= 18:
        dib = int.from_bytes(head[14:18], "little")
        if dib in _BMP_DIB_SIZES:
            return "BMP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[4:8] == b"ftyp":
        return _sniff_isobmff(data)
    if head.startswith(b"%PDF"):
        return "PDF"
    text = head.lstrip().lower()
    if text.startswith((b"<svg", b"<?xml")) or b"<svg" in data[:1024].lower():
        return "SVG"
    if text.startswith((b"<!doctype", b"<html")):
        return "HTML"
    return None


def _sniff_isobmff(data: bytes) -> str | None:
    box_size = int.from_bytes(data[0:4], "big")
    end = min(max(box_size, 16), 256, len(data))
    major = data[8:12]
    brands = {major} | {data[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & _HEIC_BRANDS:
        return "HEIF"
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_GENERIC_BRANDS:
        return "HEIF"
    return "ISOBMFF"  # MP4/MOV and friends


# --------------------------------------------------------------------------- errors


def _unsupported(detail: str) -> ApiError:
    return errors.unsupported_image(f"{detail}; allowed formats: {ALLOWED_FORMATS_TEXT}",
        allowed_formats=list(ALLOWED_FORMATS),
    )


def _corrupt(fmt: str, detail: str = "") -> ApiError:
    return errors.corrupt_image(_FORMAT_NAMES.get(fmt, fmt), detail)


def _too_large(width: int, height: int, max_pixels: int) -> ApiError:
    return errors.too_large(max_pixels, actual=f"{width}x{height} = {width * height}", unit="pixels")


# --------------------------------------------------------------------------- decode


def decode_image(data: bytes, *, max_side: int | None = None, max_pixels: int = 80_000_000) -> DecodedImage:
    """Validate ``data`` and decode it to RGB, downscaled so its long side is <= ``max_side``.

    Raises ``ApiError``: 400 ``empty_image``, 415 ``unsupported_image``, 400
    ``corrupt_image``, 413 ``image_too_large`` (checked from the header, before decoding).
    """
    if not data:
        raise errors.empty_image()
    if max_side is not None and max_side < 1:
        raise ValueError("max_side must be >= 1")
    fmt = sniff_format(data)
    if fmt is None:
        raise _unsupported("not a recognised image format")
    if fmt == "HEIF" and not HEIF_SUPPORTED:
        raise _unsupported("HEIC/HEIF images are not supported on this server")
    if fmt not in ALLOWED_FORMATS:
        raise _unsupported(f"{fmt} images are not supported")

    im = _open(data, fmt, max_pixels)
    try:
        return _decode_opened(im, fmt, max_side)
    finally:
        im.close()


def _open(data: bytes, fmt: str, max_pixels: int) -> Image.Image:
    """Parse the header only and enforce the pixel limit and the still-image rule."""
    # Pillow has its own bomb guard (a warning above Image.MAX_IMAGE_PIXELS, an error at
    # twice that); ours is max_pixels, checked right after the header has been parsed.
    # (warnings.catch_warnings() is not thread-safe, so the warning is left alone.)
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (2 x Image.MAX_IMAGE_PIXELS) fired first.
        raise errors.too_large(max_pixels, unit="pixels") from exc
    except Exception as exc:  # Pillow raises many types for bad headers
        raise _corrupt(fmt, "unreadable header") from exc

    width, height = im.size
    if width < 1 or height < 1:
        im.close()
        raise _corrupt(fmt, "zero-sized image")
    if width * height > max_pixels:
        im.close()
        raise _too_large(width, height, max_pixels)
    # Animated PNG/WebP are refused. Multi-frame JPEG (MPO: camera previews / depth
    # maps), multi-page TIFF and HEIF image collections are decoded as their first image.
    if fmt in ("PNG", "WEBP") and getattr(im, "n_frames", 1) > 1:
        im.close()
        raise _unsupported(f"animated {_FORMAT_NAMES[fmt]} images are not supported")
    return im


def _decode_opened(im: Image.Image, fmt: str, max_side: int | None) -> DecodedImage:
    raw_w, raw_h = im.size  # as stored, before EXIF orientation
    raw_long = max(raw_w, raw_h)

    if fmt == "JPEG" and max_side is not None and raw_long > max_side:
        s = _draft_factor(raw_w, raw_h, max_side)
        if s > 1:
            im.draft("RGB", (raw_w // s, raw_h // s))

    _warn_if_truncated_loads_allowed()
    try:
        im.load()
        rgb_im = _to_rgb_image(im)
        # Only after load(): PngImageFile.getexif() loads the pixels itself, and a failed
        # load must surface as an error here, not be mistaken for "no EXIF".
        orientation = _orientation(im)
    except ApiError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # OSError, SyntaxError, zlib.error, ValueError, ...
        log.debug("decode of %s failed: %s", fmt, exc)
        raise _corrupt(fmt) from exc

    if max_side is not None and max(rgb_im.size) > max_side:
        # Pillow's BOX filter is area averaging, the same filter as cv2.INTER_AREA, but it
        # works on Pillow's own buffer: exporting the full-size image to numpy first and
        # resizing there costs ~2x more (measured on a 24 MP JPEG: 90 ms export + 130 ms
        # INTER_AREA vs 90 ms BOX + a small export).
        rgb_im = rgb_im.resize(_target_size(raw_w, raw_h, max_side), Image.Resampling.BOX)
    rgb = np.asarray(rgb_im)

    rgb = _apply_orientation(rgb, orientation)
    if not rgb.flags.c_contiguous or not rgb.flags.writeable:
        rgb = np.array(rgb, order="C", copy=True)

    width, height = (raw_h, raw_w) if orientation in (5, 6, 7, 8) else (raw_w, raw_h)
    scale = raw_long / max(rgb.shape[:2])
    return DecodedImage(rgb=rgb, scale=float(scale), width=width, height=height, format=fmt)


_warned_truncated = False


def _warn_if_truncated_loads_allowed() -> None:
    """Pillow's global LOAD_TRUNCATED_IMAGES would let truncated uploads through half grey."""
    global _warned_truncated
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _warned_truncated:
        _warned_truncated = True
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set by some module: truncated images may decode partially")


def _draft_factor(width: int, height: int, max_side: int) -> int:
    """Largest libjpeg DCT scale (8, 4, 2) that still leaves the long side >= max_side."""
    long_side = max(width, height)
    for s in (8, 4, 2):
        if math.ceil(long_side / s) >= max_side and min(width, height) // s >= 1:
            return s
    return 1


def _target_size(raw_w: int, raw_h: int, max_side: int) -> tuple[int, int]:
    """(w, h) with the long side exactly ``max_side``, computed from the ORIGINAL size."""
    if raw_w >= raw_h:
        return max_side, max(1, round(raw_h * max_side / raw_w))
    return max(1, round(raw_w * max_side / raw_h)), max_side


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        value = int(value)
    except Exception:  # noqa: BLE001 - malformed EXIF must not fail the photo
        return 1
    return value if 1 <= value <= 8 else 1


def _apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Same result as ``ImageOps.exif_transpose`` but on the (smaller) working array.

    Doing it after the downscale instead of on the full-size Pillow image saves a
    full-resolution copy; tests check equivalence with ``exif_transpose`` for all 8 values.
    """
    if orientation == 2:  # FLIP_LEFT_RIGHT
        out = rgb[:, ::-1]
    elif orientation == 3:  # ROTATE_180
        out = rgb[::-1, ::-1]
    elif orientation == 4:  # FLIP_TOP_BOTTOM
        out = rgb[::-1]
    elif orientation == 5:  # TRANSPOSE
        out = rgb.transpose(1, 0, 2)
    elif orientation == 6:  # ROTATE_270 (90 degrees clockwise)
        out = np.rot90(rgb, -1)
    elif orientation == 7:  # TRANSVERSE
        out = rgb[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:  # ROTATE_90 (counter-clockwise)
        out = np.rot90(rgb, 1)
    else:
        return rgb
    return np.ascontiguousarray(out)


def _to_rgb_image(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> an RGB image. Transparency is composited onto white."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_high_depth_to_grey(np.asarray(im)), "L").convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    try:
        return im.convert("RGB")
    except ValueError as exc:  # "conversion not supported", e.g. exotic TIFF modes
        raise _unsupported(f"{mode} colour mode is not supported") from exc


def _high_depth_to_grey(arr: np.ndarray) -> np.ndarray:
    """16-bit / 32-bit integer / float greyscale -> 8-bit greyscale (scaled, not clipped)."""
    values = np.nan_to_num(arr.astype(np.float64, copy=False))
    peak = float(values.max()) if values.size else 0.0
    if arr.dtype.kind == "f" and peak <= 1.0:
        grey = values * 255.0  # float images in [0, 1]
    elif arr.dtype.itemsize == 2:
        grey = values / 257.0  # 16-bit: 65535 -> 255
    elif peak <= 255.0:
        grey = values  # a 32-bit container holding 8-bit values
    elif peak <= 65535.0:
        grey = values / 257.0  # the usual 16-bit range
    else:
        grey = values * (255.0 / peak)  # 32-bit: stretch to the data
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- helpers


def downscaled(img: DecodedImage, max_side: int) -> DecodedImage:
    """A smaller copy whose long side is ``max_side`` (``img`` itself if already small enough).

    ``scale`` stays relative to the ORIGINAL photo, so boxes found on the copy map straight
    back with ``* scale``.
    """
    if max_side < 1:
        raise ValueError("max_side must be >= 1")
    h, w = img.rgb.shape[:2]
    if max(h, w) <= max_side:
        return img
    tw, th = _target_size(img.width, img.height, max_side)
    small = cv2.resize(img.rgb, (tw, th), interpolation=cv2.INTER_AREA)
    scale = max(img.width, img.height) / max_side
    return DecodedImage(rgb=small, scale=float(scale), width=img.width, height=img.height, format=img.format)


def to_bgr(img: DecodedImage) -> np.ndarray:
    """BGR copy of the working image (InsightFace and OpenCV want BGR)."""
    return cv2.cvtColor(img.rgb, cv2.COLOR_RGB2BGR)
