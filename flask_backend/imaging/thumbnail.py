"""Thumbnails from the image the pipeline already decoded (never a second fetch or decode).

The decoded working copy is at most ``max_decode_side`` px (3000 by default) and already
EXIF-oriented, so a 480 px thumbnail is one reduce + resize of pixels in memory: a few ms
next to the detector's hundreds. WebP at quality 75 keeps a 480 px event photo at
~20-40 KB (JPEG ~1.5x that), so a phone's first screen of a gallery stays well under 1 MB.
"""

from __future__ import annotations

import io

from PIL import Image

from ..store.thumbnails_db import Thumbnail, etag_of
from .decode import DecodedImage

FORMATS = {"webp": ("WEBP", "image/webp"), "jpeg": ("JPEG", "image/jpeg")}


def make_thumbnail(img: DecodedImage, side: int, fmt: str = "webp", quality: int = 75) -> Thumbnail:
    """A ``side``-px (long side) thumbnail of ``img``; never upscales."""
    pil_format, mime = FORMATS[fmt]
    pic = Image.fromarray(img.rgb)
    pic.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    if pil_format == "JPEG":
        pic.save(buf, "JPEG", quality=quality, optimize=True, progressive=True)
    else:
        pic.save(buf, "WEBP", quality=quality, method=4)
    data = buf.getvalue()
    return Thumbnail(mime, data, etag_of(data), pic.width, pic.height, int(img.width), int(img.height))
