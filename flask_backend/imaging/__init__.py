"""Images in: SSRF-safe fetching and validated, EXIF-aware, downscaling decoding."""

from flask_backend.imaging.decode import (
    ALLOWED_FORMATS,
    HEIF_SUPPORTED,
    DecodedImage,
    decode_image,
    downscaled,
    sniff_format,
    to_bgr,
)
from flask_backend.imaging.fetch import (
    FetchPolicy,
    decode_base64_image,
    fetch_image_bytes,
    get_session,
    new_session,
)

__all__ = [
    "ALLOWED_FORMATS",
    "HEIF_SUPPORTED",
    "DecodedImage",
    "FetchPolicy",
    "decode_base64_image",
    "decode_image",
    "downscaled",
    "fetch_image_bytes",
    "get_session",
    "new_session",
    "sniff_format",
    "to_bgr",
]
