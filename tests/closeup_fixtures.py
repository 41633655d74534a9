"""Close-up and rotated test photos, built at test time from ../shared/faces (never committed).

Today's event photos are the easy case for SCRFD at a big input size: many small faces. The
photos people notice being missed are the other kind: a portrait whose face fills most of
the frame, or a big face with small ones beside it, or a phone photo saved sideways without
an EXIF orientation. This module makes those from every single-person photo:

* ``closeup``: the photo cropped around its face so the face spans 40-90 % of the frame
  (fractions cycle through ``FRACTIONS``), resized so the long side is 1000-4000 px
  (``SIDES``);
* ``crowd``: a landscape close-up (face ~45 % of the frame height) with two small faces of
  other people pasted in the margins;
* ``rot90`` / ``rot270``: the original photo rotated, pixels only (no EXIF orientation).

``build_sets(faces_dir, out_dir, locate)`` writes the JPEGs and returns ``Photo`` rows with
the truth boxes in the written image's pixels. ``locate(path) -> (x1, y1, x2, y2)`` finds
the one face of a source photo (the tests pass the v2 selfie detector: the sources are
ordinary photos it finds at selfie size). Also used by ``scripts.bench_closeups``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flask_backend.faces.base import box_iou

Box = tuple[float, float, float, float]

FRACTIONS = (0.4, 0.55, 0.7, 0.9)
SIDES = (1000, 1600, 2500, 4000)
CROWD_SIDE = 2400
CROWD_FRACTION = 0.45
SMALL_FACE_PX = 150  # height of the pasted small faces' boxes
IOU_MIN = 0.4


@dataclass(frozen=True)
class Photo:
    file: str  # written file name
    kind: str  # closeup | crowd | rot90 | rot270
    source: str  # the ../shared/faces file it was made from
    identity: str
    boxes: tuple[Box, ...]  # every face in it (the source's face first)
    identities: tuple[str, ...]  # identity of each box


def single_person_rows(faces_dir: Path) -> list[dict]:
    with (faces_dir / "manifest.csv").open() as f:
        return [r for r in csv.DictReader(f) if r["identity"] and r["faces_expected"] == "1"]


def read_bgr(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read {path}")
    return img


def crop_around(img: np.ndarray, box: Box, fraction: float, aspect: float) -> tuple[np.ndarray, Box]:
    """Crop (edge-replicated where it leaves the photo) so the face box spans ``fraction`` of
    the frame's height or width, whichever is larger; ``aspect`` = crop width / height."""
    x1, y1, x2, y2 = box
    fw, fh = x2 - x1, y2 - y1
    ch = max(fh / fraction, fw / (fraction * aspect))
    cw = ch * aspect
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top, w, h = (int(v) for v in np.rint([cx - cw / 2, cy - ch / 2, cw, ch]))
    pad = max(0, -left, -top, left + w - img.shape[1], top + h - img.shape[0])
    padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else img
    crop = padded[top + pad: top + pad + h, left + pad: left + pad + w]
    return crop, (x1 - left, y1 - top, x2 - left, y2 - top)


def resized(img: np.ndarray, box: Box, side: int) -> tuple[np.ndarray, Box]:
    s = side / max(img.shape[:2])
    out = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    return out, tuple(v * s for v in box)  # type: ignore[return-value]


def rotated(img: np.ndarray, box: Box, degrees: int) -> tuple[np.ndarray, Box]:
    """Pixels rotated clockwise by ``degrees`` (90 or 270) and the box with them."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = box
    if degrees == 90:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE), (h - y2, x1, h - y1, x2)
    if degrees == 270:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE), (y1, w - x2, y2, w - x1)
    raise ValueError(degrees)


def write_jpeg(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f"cannot write {path}")


def build_sets(faces_dir: Path, out_dir: Path, locate: Callable[[Path], Box],
               kinds: Sequence[str] = ("closeup", "crowd", "rot90", "rot270")) -> list[Photo]:
    """Write every set of ``kinds`` into ``out_dir``; returns the photos with their truth."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = single_person_rows(faces_dir)
    boxes = {r["file"]: locate(faces_dir / r["file"]) for r in rows}
    photos: list[Photo] = []
    for i, r in enumerate(rows):
        src, ident = r["file"], r["identity"]
        img = read_bgr(faces_dir / src)
        stem = Path(src).stem
        if "closeup" in kinds:
            fraction, side = FRACTIONS[i % len(FRACTIONS)], SIDES[(i // len(FRACTIONS) + i) % len(SIDES)]
            crop, box = crop_around(img, boxes[src], fraction, aspect=2 / 3 if i % 2 else 3 / 4)
            big, box = resized(crop, box, side)
            name = f"{stem}__closeup.jpg"
            write_jpeg(out_dir / name, big)
            photos.append(Photo(name, "closeup", src, ident, (box,), (ident,)))
        if "crowd" in kinds:
            others = [o for o in rows if o["identity"] != ident]
            picks = [others[(i * 7) % len(others)], others[(i * 7 + 5) % len(others)]]
            crop, box = crop_around(img, boxes[src], CROWD_FRACTION, aspect=1.6)
            canvas, box = resized(crop, box, CROWD_SIDE)
            canvas = canvas.copy()
            all_boxes, idents = [box], [ident]
            for k, o in enumerate(picks):
                small = _small_face(read_bgr(faces_dir / o["file"]), boxes[o["file"]])
                sh, sw = small[0].shape[:2]
                # left and right margins, clear of the big face (which is centred)
                x = int(box[0] - sw - 60) if k == 0 else int(box[2] + 60)
                y = int(canvas.shape[0] * (0.2 if k == 0 else 0.6))
                x = min(max(0, x), canvas.shape[1] - sw)
                canvas[y:y + sh, x:x + sw] = small[0]
                bx = small[1]
                all_boxes.append((bx[0] + x, bx[1] + y, bx[2] + x, bx[3] + y))
                idents.append(o["identity"])
            name = f"{stem}__crowd.jpg"
            write_jpeg(out_dir / name, canvas)
            photos.append(Photo(name, "crowd", src, ident, tuple(all_boxes), tuple(idents)))
        for deg in (90, 270):
            if f"rot{deg}" in kinds:
                rot, box = rotated(img, boxes[src], deg)
                name = f"{stem}__rot{deg}.jpg"
                write_jpeg(out_dir / name, rot)
                photos.append(Photo(name, f"rot{deg}", src, ident, (box,), (ident,)))
    return photos


def _small_face(img: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
    """The face with a margin of half its size, scaled so its box is SMALL_FACE_PX tall."""
    crop, b = crop_around(img, box, 0.5, aspect=(box[2] - box[0]) / (box[3] - box[1]))
    return resized(crop, b, int(np.rint(SMALL_FACE_PX / (b[3] - b[1]) * max(crop.shape[:2]))))


def found(truth: Box, boxes: Sequence[Sequence[float]]) -> bool:
    """A truth face counts as found when a detected box overlaps it (IoU >= IOU_MIN), or,
    for HOG's tighter boxes, lies inside it with its centre within the middle half."""
    cx, cy = (truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2
    qw, qh = (truth[2] - truth[0]) / 4, (truth[3] - truth[1]) / 4
    for b in boxes:
        if box_iou(truth, b) >= IOU_MIN:
            return True
        bx, by = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        if abs(bx - cx) <= qw and abs(by - cy) <= qh and (b[2] - b[0]) >= (truth[2] - truth[0]) / 2:
            return True
    return False


def selfies_for(photo: Photo, rows: Sequence[dict]) -> list[str]:
    """The person's other photos (originals) to search with; the source itself when the set
    has no other photo of that person (lin_manuel_miranda, tom_hanks)."""
    others = [r["file"] for r in rows if r["identity"] == photo.identity and r["file"] != photo.source]
    return others or [photo.source]
