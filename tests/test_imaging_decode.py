"""decode_image / downscaled / to_bgr / decode_base64_image on real Pillow-made images."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

from flask_backend.errors import ApiError
from flask_backend.imaging import (
    HEIF_SUPPORTED,
    DecodedImage,
    decode_base64_image,
    decode_image,
    downscaled,
    sniff_format,
    to_bgr,
)
from tests.image_fixtures import png_bomb

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("FACEMATCH_TEST_ASSETS", REPO.parent / "shared")).resolve()


# --------------------------------------------------------------------------- helpers


def pattern(width: int = 64, height: int = 48) -> Image.Image:
    """An asymmetric RGB test card: gradients plus a marker in the top-left corner."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    arr = np.stack([x, y, 255 - x], axis=2).astype(np.uint8)
    arr[: height // 4, : width // 4] = (255, 0, 0)
    return Image.fromarray(arr, "RGB")


def encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def expect_error(data: bytes, status: int, code: str, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        decode_image(data, **kwargs)
    assert (info.value.status, info.value.code) == (status, code), info.value.message
    return info.value


def with_orientation(im: Image.Image, fmt: str, orientation: int, **params: Any) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, fmt, exif=exif.tobytes(), **params)


def check_invariants(img: DecodedImage) -> None:
    assert isinstance(img.rgb, np.ndarray)
    assert img.rgb.dtype == np.uint8 and img.rgb.ndim == 3 and img.rgb.shape[2] == 3
    assert img.rgb.flags.c_contiguous
    assert img.scale >= 1.0


# --------------------------------------------------------------------------- formats

LOSSLESS = {
    "PNG": {},
    "WEBP": {"lossless": True},
    "BMP": {},
    "TIFF": {},
}


@pytest.mark.parametrize("fmt", sorted(LOSSLESS))
def test_lossless_formats_round_trip_exactly(fmt: str) -> None:
    src = pattern()
    img = decode_image(encode(src, fmt, **LOSSLESS[fmt]))
    check_invariants(img)
    assert img.format == fmt
    assert (img.width, img.height, img.scale) == (64, 48, 1.0)
    np.testing.assert_array_equal(img.rgb, np.asarray(src))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "HEIF"])
def test_lossy_formats_round_trip(fmt: str) -> None:
    if fmt == "HEIF" and not HEIF_SUPPORTED:
        pytest.skip("pillow-heif is not installed: HEIC is not accepted on this host")
    src = pattern(96, 64)
    img = decode_image(encode(src, fmt, quality=95))
    check_invariants(img)
    assert img.format == fmt
    assert (img.width, img.height) == (96, 64) and img.rgb.shape == (64, 96, 3)
    diff = np.abs(img.rgb.astype(int) - np.asarray(src).astype(int)).mean()
    assert diff < 6, diff


def test_heif_orientation() -> None:
    if not HEIF_SUPPORTED:
        pytest.skip("pillow-heif is not installed: HEIC is not accepted on this host")
    data = with_orientation(pattern(80, 40), "HEIF", 6, quality=95)
    img = decode_image(data)
    assert (img.width, img.height) == (40, 80) and img.rgb.shape == (80, 40, 3)
    assert img.rgb[3, -3, 0] > 200 and img.rgb[3, -3, 1] < 60  # red marker now top-right


def test_mpo_camera_jpeg_decodes_as_jpeg() -> None:
    # Many cameras write MPO (a JPEG plus preview/depth frames); Pillow calls it "MPO".
    data = encode(pattern(), "MPO", save_all=True, append_images=[Image.new("RGB", (64, 48), (0, 255, 0))])
    img = decode_image(data)
    assert img.format == "JPEG" and img.rgb.shape == (48, 64, 3)
    assert img.rgb[2, 2, 0] > 200  # the first frame, not the green second one
    assert decode_image(data, max_side=16).rgb.shape == (12, 16, 3)


def test_heif_refused_without_pillow_heif(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_backend.imaging import decode as decode_mod

    if not HEIF_SUPPORTED:
        pytest.skip("needs pillow-heif to produce a HEIC file")
    data = encode(pattern(), "HEIF")
    monkeypatch.setattr(decode_mod, "HEIF_SUPPORTED", False)
    err = expect_error(data, 415, "unsupported_image")
    assert "HEIC" in err.message


def test_format_comes_from_the_bytes_not_the_name(tmp_path: Path) -> None:
    path = tmp_path / "holiday.jpg"  # a PNG wearing a .jpg name
    path.write_bytes(encode(pattern(), "PNG"))
    img = decode_image(path.read_bytes())
    assert img.format == "PNG"
    np.testing.assert_array_equal(img.rgb, np.asarray(pattern()))


def test_result_is_writable_and_independent() -> None:
    img = decode_image(encode(pattern(), "PNG"))
    img.rgb[0, 0] = (1, 2, 3)  # engines may draw on it; it must not be a read-only view
    assert tuple(img.rgb[0, 0]) == (1, 2, 3)


# --------------------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_exif_transpose(orientation: int) -> None:
    data = with_orientation(pattern(60, 40), "PNG", orientation)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    img = decode_image(data)
    np.testing.assert_array_equal(img.rgb, np.asarray(expected))
    assert (img.width, img.height) == expected.size


@pytest.mark.parametrize(("orientation", "corner"), [(6, "top-right"), (8, "bottom-left")])
def test_exif_rotation_6_and_8_swap_dimensions(orientation: int, corner: str) -> None:
    data = with_orientation(pattern(80, 40), "JPEG", orientation, quality=95)
    img = decode_image(data)
    assert (img.width, img.height) == (40, 80)
    assert img.rgb.shape == (80, 40, 3)
    # the red marker (top-left as stored) moves with the rotation
    h, w = img.rgb.shape[:2]
    patch = {
        "top-right": img.rgb[2:8, w - 8 : w - 2],
        "bottom-left": img.rgb[h - 8 : h - 2, 2:8],
    }[corner]
    assert patch[..., 0].mean() > 200 and patch[..., 1].mean() < 60


def test_exif_orientation_with_downscale() -> None:
    data = with_orientation(pattern(400, 200), "JPEG", 6, quality=95)
    img = decode_image(data, max_side=100)
    assert (img.width, img.height) == (200, 400)
    assert img.rgb.shape == (100, 50, 3)
    assert img.scale == pytest.approx(4.0)


def test_malformed_exif_is_ignored() -> None:
    data = encode(pattern(), "JPEG", exif=b"Exif\x00\x00garbage-not-tiff")
    img = decode_image(data)
    assert (img.width, img.height) == (64, 48)


# --------------------------------------------------------------------------- colour modes


def test_rgba_is_composited_on_white() -> None:
    arr = np.zeros((10, 20, 4), np.uint8)
    arr[:, :10] = (255, 0, 0, 255)  # opaque red
    arr[:, 10:] = (0, 255, 0, 0)  # fully transparent green
    img = decode_image(encode(Image.fromarray(arr, "RGBA"), "PNG"))
    assert tuple(img.rgb[5, 2]) == (255, 0, 0)
    assert tuple(img.rgb[5, 15]) == (255, 255, 255)


def test_la_and_l_and_1bit() -> None:
    la = Image.fromarray(np.dstack([np.full((8, 8), 100, np.uint8), np.full((8, 8), 255, np.uint8)]), "LA")
    assert tuple(decode_image(encode(la, "PNG")).rgb[0, 0]) == (100, 100, 100)
    grey = Image.new("L", (8, 8), 77)
    assert tuple(decode_image(encode(grey, "PNG")).rgb[3, 3]) == (77, 77, 77)
    bits = Image.new("1", (8, 8), 1)
    assert tuple(decode_image(encode(bits, "BMP")).rgb[3, 3]) == (255, 255, 255)


def test_palette_with_and_without_transparency() -> None:
    pal = pattern().quantize(16)
    img = decode_image(encode(pal, "PNG"))
    np.testing.assert_array_equal(img.rgb, np.asarray(pal.convert("RGB")))
    transparent = Image.new("P", (10, 10), 0)
    transparent.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    transparent.info["transparency"] = 0
    img = decode_image(encode(transparent, "PNG", transparency=0))
    assert tuple(img.rgb[0, 0]) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk(fmt: str) -> None:
    cmyk = Image.new("RGB", (16, 16), (255, 0, 0)).convert("CMYK")
    img = decode_image(encode(cmyk, fmt, **({"quality": 95} if fmt == "JPEG" else {})))
    r, g, b = (int(v) for v in img.rgb[8, 8])
    assert r > 230 and g < 30 and b < 30


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_greyscale_is_scaled_not_clipped(fmt: str) -> None:
    arr = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16).repeat(4, 0)
    im = Image.fromarray(arr)
    assert im.mode.startswith("I;16")
    img = decode_image(encode(im, fmt))
    assert [int(v) for v in img.rgb[0, :, 0]] == [0, 128, 255, 4]
    assert (img.rgb[..., 0] == img.rgb[..., 2]).all()


# --------------------------------------------------------------------------- refusals


def test_zero_bytes() -> None:
    expect_error(b"", 400, "empty_image")


def test_random_bytes() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        err = expect_error(rng.bytes(4096), 415, "unsupported_image")
    assert "JPEG" in err.message and "PNG" in err.message


@pytest.mark.parametrize(
    "payload",
    [
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="10" height="10"/></svg>',
        b"<!DOCTYPE html><html><body>Not found</body></html>",
        b"<html><head></head></html>",
        b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n",
        b'{"error": "nope"}',
        b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",  # an MP4
    ],
    ids=["svg-xml", "svg", "html-doctype", "html", "pdf", "json", "mp4"],
)
def test_non_images_are_unsupported(payload: bytes) -> None:
    err = expect_error(payload, 415, "unsupported_image")
    assert "allowed formats" in err.message


def test_static_and_animated_gif_are_unsupported() -> None:
    frames = [pattern(), pattern().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    expect_error(encode(frames[0], "GIF"), 415, "unsupported_image")
    expect_error(encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), 415, "unsupported_image")


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_png_and_webp_are_unsupported(fmt: str) -> None:
    frames = [pattern(), pattern().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    err = expect_error(data, 415, "unsupported_image")
    assert "animated" in err.message


def test_avif_is_unsupported() -> None:
    data = encode(pattern(), "AVIF")
    assert sniff_format(data) == "AVIF"
    expect_error(data, 415, "unsupported_image")


def test_multipage_tiff_decodes_first_page() -> None:
    first, second = pattern(), Image.new("RGB", (64, 48), (0, 0, 255))
    img = decode_image(encode(first, "TIFF", save_all=True, append_images=[second]))
    np.testing.assert_array_equal(img.rgb, np.asarray(first))


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.95])
def test_truncated_jpeg_is_corrupt(fraction: float) -> None:
    rng = np.random.default_rng(1)
    noisy = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    data = encode(noisy, "JPEG", quality=90)
    expect_error(data[: int(len(data) * fraction)], 400, "corrupt_image")


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF"])
def test_truncated_other_formats_are_corrupt(fmt: str) -> None:
    rng = np.random.default_rng(2)
    noisy = Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    expect_error(data[: len(data) // 2], 400, "corrupt_image")


def test_jpeg_header_only_is_corrupt_not_unsupported() -> None:
    expect_error(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", 400, "corrupt_image")


def test_png_with_broken_pixel_stream_is_corrupt() -> None:
    # Regression: PngImageFile.getexif() loads the pixels itself; a failure there must not be
    # swallowed as "no EXIF" and leave an all-black image behind.
    data = bytearray(encode(pattern(), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 4] ^= 0xFF  # first byte of the zlib stream
    expect_error(bytes(data), 400, "corrupt_image")


# --------------------------------------------------------------------------- bombs


def test_pixel_limit_checked_from_header() -> None:
    data = encode(Image.new("L", (300, 200)), "PNG")
    expect_error(data, 413, "image_too_large", max_pixels=300 * 200 - 1)
    assert decode_image(data, max_pixels=300 * 200).rgb.shape == (200, 300, 3)


def test_9000x9000_is_over_the_default_limit() -> None:
    # 81 MP: above our 80 MP default, below Pillow's own warning threshold (89 MP).
    err = expect_error(png_bomb(9000, 9000), 413, "image_too_large")
    assert "9000x9000" in err.message


BOMB_PROBE = """
import json, resource, sys, time
from flask_backend.errors import ApiError
from flask_backend.imaging import decode_image
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    decode_image(data)
    result = None
except ApiError as exc:
    result = [exc.status, exc.code]
elapsed = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"result": result, "seconds": elapsed, "grew_kb": after - before}))
"""


def test_20000x20000_png_bomb_is_refused_without_allocating(tmp_path: Path, png_bomb_20k: bytes) -> None:
    data = png_bomb_20k
    assert len(data) < 200_000  # tiny file...
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    # ...400 MP once decoded (>= 400 MB in L mode). A fresh process gives a clean peak-RSS reading.
    out = subprocess.run(
        [sys.executable, "-c", BOMB_PROBE, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["result"] == [413, "image_too_large"]
    assert probe["grew_kb"] < 20 * 1024, probe  # far below the 400 MB the pixels would take: never decoded


# --------------------------------------------------------------------------- downscaling

BOX = (3000, 1000, 3600, 1400)  # x1, y1, x2, y2 in the 6000x4000 original


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    im = Image.new("RGB", (6000, 4000), (40, 90, 140))
    ImageDraw.Draw(im).rectangle((BOX[0], BOX[1], BOX[2] - 1, BOX[3] - 1), fill=(255, 0, 0))
    return encode(im, "JPEG", quality=90)


def red_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    mask = (rgb[..., 0] > 180) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize(("max_side", "draft_used"), [(1600, True), (3200, False), (700, True), (500, True)])
def test_large_jpeg_downscale_maps_back(
    big_jpeg: bytes, max_side: int, draft_used: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple] = []
    real_draft = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> Any:
        result = real_draft(self, mode, size)
        calls.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    img = decode_image(big_jpeg, max_side=max_side)
    check_invariants(img)
    assert max(img.rgb.shape[:2]) == max_side
    assert (img.width, img.height) == (6000, 4000)
    assert img.scale == pytest.approx(6000 / max_side)
    assert img.rgb.shape[1] == max_side and img.rgb.shape[0] == round(4000 * max_side / 6000)
    assert bool(calls) == draft_used, calls
    if draft_used:
        drafted_long = max(calls[0][1])
        assert drafted_long >= max_side  # never decode below the requested side
    mapped = [v * img.scale for v in red_box(img.rgb)]
    for got, want in zip(mapped, BOX):
        assert abs(got - want) <= 1.5 * img.scale + 2, (mapped, BOX)


def test_no_downscale_when_small_enough(big_jpeg: bytes) -> None:
    img = decode_image(big_jpeg, max_side=6000)
    assert img.rgb.shape == (4000, 6000, 3) and img.scale == 1.0


def test_png_downscale() -> None:
    img = decode_image(encode(pattern(400, 300), "PNG"), max_side=100)
    assert img.rgb.shape == (75, 100, 3) and img.scale == pytest.approx(4.0)


def test_downscaled_copy_keeps_original_reference(big_jpeg: bytes) -> None:
    work = decode_image(big_jpeg, max_side=3200)
    small = downscaled(work, 800)
    assert max(small.rgb.shape[:2]) == 800
    assert small.scale == pytest.approx(6000 / 800)
    assert (small.width, small.height, small.format) == (6000, 4000, "JPEG")
    mapped = [v * small.scale for v in red_box(small.rgb)]
    for got, want in zip(mapped, BOX):
        assert abs(got - want) <= 2 * small.scale, (mapped, BOX)
    assert downscaled(small, 800) is small
    assert downscaled(small, 5000) is small


def test_to_bgr() -> None:
    img = decode_image(encode(Image.new("RGB", (4, 4), (10, 20, 30)), "PNG"))
    bgr = to_bgr(img)
    assert tuple(bgr[0, 0]) == (30, 20, 10)
    assert bgr.flags.c_contiguous and tuple(img.rgb[0, 0]) == (10, 20, 30)


# --------------------------------------------------------------------------- base64


def test_base64_plain_prefixed_wrapped_urlsafe_unpadded() -> None:
    data = encode(pattern(), "PNG")
    b64 = base64.b64encode(data).decode()
    assert decode_base64_image(b64, 10_000) == data
    assert decode_base64_image("data:image/png;base64," + b64, 10_000) == data
    assert decode_base64_image("DATA:image/jpeg;name=a.jpg;base64," + b64, 10_000) == data
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    assert decode_base64_image(wrapped + "\n", 10_000) == data
    assert decode_base64_image(base64.urlsafe_b64encode(data).decode().rstrip("="), 10_000) == data


@pytest.mark.parametrize(
    "text",
    ["not base64!!", "abc$def", "data:image/png,rawdata", "data:image/png;base64,@@@@", "A"],
)
def test_base64_invalid(text: str) -> None:
    with pytest.raises(ApiError) as info:
        decode_base64_image(text, 10_000)
    assert (info.value.status, info.value.code) == (400, "invalid_base64")


def test_base64_empty() -> None:
    for text in ("", "   ", "data:image/png;base64,"):
        with pytest.raises(ApiError) as info:
            decode_base64_image(text, 10_000)
        assert info.value.code == "empty_image"


def test_base64_oversize() -> None:
    data = os.urandom(3000)
    text = base64.b64encode(data).decode()
    assert decode_base64_image(text, 3000) == data
    for limit in (2999, 100):
        with pytest.raises(ApiError) as info:
            decode_base64_image(text, limit)
        assert (info.value.status, info.value.code) == (413, "image_too_large")


# --------------------------------------------------------------------------- real photos


def faces_dir() -> Path:
    path = ASSETS / "faces"
    if not path.is_dir():
        pytest.skip(f"real face photos not found at {path} (set FACEMATCH_TEST_ASSETS to the shared/ folder)")
    return path


def test_every_real_face_photo_decodes_like_pillow() -> None:
    files = sorted(p for p in faces_dir().iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    assert files, "no photos in the faces folder"
    for path in files:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as ref:
            expected = ImageOps.exif_transpose(ref).convert("RGB")
        img = decode_image(data)
        check_invariants(img)
        assert (img.width, img.height) == expected.size, path.name
        assert img.rgb.shape == (expected.size[1], expected.size[0], 3), path.name
        if expected.mode == "RGB" and "transparency" not in expected.info:
            diff = np.abs(img.rgb.astype(int) - np.asarray(expected).astype(int)).mean()
            assert diff < 1.0, (path.name, diff)
        small = decode_image(data, max_side=256)
        assert max(small.rgb.shape[:2]) == min(256, max(expected.size)), path.name
        assert small.scale == pytest.approx(max(expected.size) / max(small.rgb.shape[:2])), path.name
