"""Every face found at ingest, large and small, upright or sideways, in both spaces; quality.

The close-up, crowd and rotated photos are built at test time from ../shared/faces by
tests/closeup_fixtures.py (never committed) and go through THE ingest pipeline.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from flask_backend.faces import largest
from flask_backend.faces.base import box_iou
from flask_backend.faces.dlib_engine import hog_det_score
from flask_backend.imaging import decode_image
from flask_backend.ingest import ingest_photo
from flask_backend.match import find_v1, find_v2, matched_photo_ids, v2_threshold
from flask_backend.services import Services
from flask_backend.store.db import DB_FILE
from tests import closeup_fixtures as cf
from tests.conftest import make_settings

SPACES = ("v1", "v2")
KINDS = ("closeup", "crowd", "rot90", "rot270")
EVENT = "closeup-sets"


@pytest.fixture(scope="module")
def built(services, faces_dir, tmp_path_factory) -> tuple[Path, list[cf.Photo]]:
    v2 = services.engines.get("v2")
    out = tmp_path_factory.mktemp("closeups")
    photos = cf.build_sets(faces_dir, out, lambda p: largest(v2.detect(decode_image(p.read_bytes()), "selfie")).bbox)
    assert {p.kind for p in photos} == set(KINDS) and len(photos) == 4 * len(cf.single_person_rows(faces_dir))
    return out, photos


@pytest.fixture(scope="module")
def ingested(services, built):
    folder, photos = built
    return {p.file: ingest_photo(services, EVENT, p.file, image=(folder / p.file).read_bytes(), spaces=list(SPACES))
            for p in photos}


def test_close_up_faces_span_40_to_90_percent_at_1000_to_4000_px(built):
    folder, photos = built
    for p in photos:
        if p.kind != "closeup":
            continue
        h, w = cv2.imread(str(folder / p.file)).shape[:2]
        x1, y1, x2, y2 = p.boxes[0]
        span = max((y2 - y1) / h, (x2 - x1) / w)
        assert 1000 <= max(h, w) <= 4000 and 0.39 <= span <= 0.91, (p.file, w, h, span)


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_face_is_found_once_at_ingest(built, ingested, kind, space):
    _, photos = built
    missed, extra = [], []
    for p in (p for p in photos if p.kind == kind):
        boxes = [f.bbox for f in ingested[p.file].outcomes[space].faces]
        missed += [(p.file, i) for i, t in enumerate(p.boxes) if not cf.found(t, boxes)]
        if len(boxes) != len(p.boxes):
            extra.append((p.file, len(boxes), len(p.boxes)))
    assert missed == [], f"{space} {kind}: faces not indexed: {missed}"
    assert extra == [], f"{space} {kind}: (faces indexed, faces in the photo): {extra}"


@pytest.mark.parametrize("space", SPACES)
def test_each_photo_is_found_by_the_persons_other_photos(services, faces_dir, built, ingested, space):
    _, photos = built
    rows = cf.single_person_rows(faces_dir)
    engine = services.engines.get(space)
    queries = {r["file"]: largest(engine.detect(decode_image((faces_dir / r["file"]).read_bytes()), "selfie"))
               for r in rows}
    threshold = v2_threshold(services.settings, services.space("v2").model_id)
    missed, n = [], 0
    for p in photos:
        for selfie in cf.selfies_for(p, rows):
            q = queries[selfie]
            plan = (find_v2(services, EVENT, q.embedding, threshold) if space == "v2"
                    else find_v1(services, EVENT, q.raw, services.settings.v1_tolerance))
            n += 1
            if p.file not in matched_photo_ids(services, plan):
                missed.append(f"{p.file} <- {selfie}")
    assert n >= 4 * 24
    assert missed == [], f"{space}: not found by the person's other photos: {missed}"


def test_faces_are_stored_with_their_quality(services, ingested):
    db = sqlite3.connect(services.settings.data_dir / DB_FILE)
    try:
        rows = db.execute(
            "SELECT p.photo_id, s.name, f.x1, f.y1, f.x2, f.y2, f.size_px, f.sharpness, f.yaw, f.pitch, f.quality "
            "FROM faces f JOIN photos p ON p.pid = f.pid JOIN spaces s ON s.sid = f.sid WHERE s.event_id = ?",
            (EVENT,)).fetchall()
    finally:
        db.close()
    assert len(rows) == sum(o.faces_indexed for r in ingested.values() for o in r.outcomes.values())
    by_box = {(r[0], r[1], round(r[2], 1), round(r[3], 1)): r for r in rows}
    for photo_id, result in ingested.items():
        for space, outcome in result.outcomes.items():
            for f in outcome.faces:
                row = by_box[(photo_id, space, round(f.bbox[0], 1), round(f.bbox[1], 1))]
                q = f.quality
                assert row[6:] == pytest.approx((q.size_px, q.sharpness, q.yaw, q.pitch, q.score), rel=1e-5, abs=1e-4)


def _check_ranges(face) -> None:
    q = face.quality
    x1, y1, x2, y2 = face.bbox
    assert 0.0 <= face.det_score <= 1.0
    assert q.size_px == pytest.approx(max(x2 - x1, y2 - y1))
    assert q.sharpness >= 0.0 and math.isfinite(q.sharpness)
    assert -90.0 <= q.yaw <= 90.0 and -90.0 <= q.pitch <= 90.0 and -180.0 <= q.roll <= 180.0
    assert 0.0 <= q.score <= face.det_score + 1e-9


def test_quality_fields_ranges(services, faces_dir, ingested, manifest):
    faces = [f for r in ingested.values() for o in r.outcomes.values() for f in o.faces]
    for row in manifest:
        img = decode_image((faces_dir / row["file"]).read_bytes())
        for space in SPACES:
            found = services.engines.get(space).detect(img, "selfie")
            faces += found
            if row["identity"] and row["faces_expected"] == "1" and found:
                q = largest(found).quality
                assert abs(q.roll) < 30 and abs(q.yaw) < 45 and abs(q.pitch) < 45, (row["file"], space, q)
                assert q.sharpness > 20 and q.score > 0.3, (row["file"], space, q)
    assert len(faces) > 200
    for f in faces:
        _check_ranges(f)


def test_blur_lowers_sharpness_and_the_quality_score(services, faces_dir):
    data = (faces_dir / "obama__1.jpg").read_bytes()
    img = decode_image(data)
    blurred = img.__class__(rgb=cv2.GaussianBlur(img.rgb, (0, 0), 6), scale=img.scale, width=img.width,
                            height=img.height, format=img.format)
    for space in SPACES:
        sharp = largest(services.engines.get(space).detect(img, "selfie")).quality
        soft = largest(services.engines.get(space).detect(blurred, "selfie")).quality
        assert soft.sharpness < sharp.sharpness / 4 and soft.score < sharp.score, (space, sharp, soft)


@pytest.mark.parametrize("space", SPACES)
def test_yaw_changes_sign_in_a_mirrored_photo(services, faces_dir, space):
    engine = services.engines.get(space)
    turned = []
    for name in ("obama__3.jpg", "biden__2.jpg", "alex_lacamoire__3.jpg", "kit_harington__3.jpg", "rose_leslie__1.jpg"):
        img = decode_image((faces_dir / name).read_bytes())
        mirror = img.__class__(rgb=np.ascontiguousarray(img.rgb[:, ::-1]), scale=img.scale, width=img.width,
                               height=img.height, format=img.format)
        a = largest(engine.detect(img, "selfie")).quality.yaw
        b = largest(engine.detect(mirror, "selfie")).quality.yaw
        turned.append((name, a, b))
        assert abs(a + b) < max(6.0, 0.5 * abs(a)), (name, a, b)
    assert max(abs(a) for _, a, _ in turned) > 5, turned  # some faces are turned at all


def test_hog_score_is_mapped_to_0_1(services, faces_dir):
    assert hog_det_score(0.0) == pytest.approx(0.5)
    assert hog_det_score(1.0) == pytest.approx(1 / (1 + math.exp(-2)))
    scores = [hog_det_score(m) for m in (-2, -0.5, 0, 0.5, 1, 3)]
    assert scores == sorted(scores) and all(0 < s < 1 for s in scores)
    faces = services.engines.get("v1").detect(decode_image((faces_dir / "obama__1.jpg").read_bytes()), "selfie")
    assert len(faces) == 1 and 0.5 <= faces[0].det_score < 1.0


def test_group_photos_have_no_duplicate_faces_and_t1_has_six(services, faces_dir, manifest):
    for row in (r for r in manifest if not r["identity"]):
        result = ingest_photo(services, "groups", row["file"], image=(faces_dir / row["file"]).read_bytes(),
                              spaces=list(SPACES))
        counts = {space: o.faces_indexed for space, o in result.outcomes.items()}
        assert counts["v1"] == counts["v2"] <= int(row["faces_expected"]), (row["file"], counts)
        assert counts["v2"] >= int(row["faces_expected"]) - 1, (row["file"], counts)
        for a, b in itertools.combinations(result.outcomes["v2"].faces, 2):
            assert box_iou(a.bbox, b.bbox) < 0.3, (row["file"], a.bbox, b.bbox)
        if row["file"] == "group__t1.jpg":
            assert counts == {"v1": 6, "v2": 6}


def _other_services(tmp_path, pack_dir, **overrides) -> Services:
    return Services(make_settings(tmp_path / "data", pack_dir, **overrides))


def test_v1_runs_hog_when_v2_finds_no_face(tmp_path, pack_dir, faces_dir):
    svc = _other_services(tmp_path, pack_dir, v2_det_thresh=0.995)  # SCRFD finds nothing
    data = (faces_dir / "obama__1.jpg").read_bytes()
    assert svc.engines.get("v2").detect(decode_image(data), "ingest") == []
    result = ingest_photo(svc, "hog", "p", image=data, spaces=list(SPACES))
    v1 = result.outcomes["v1"].faces
    assert len(v1) == 1 and 0.5 <= v1[0].det_score < 1.0
    own = svc.engines.get("v1").detect(decode_image(data), "selfie")  # the fallback runs at selfie settings
    assert v1[0].bbox == pytest.approx(own[0].bbox)  # HOG's own box, not a v2 box


def test_size_and_quality_floors_drop_faces_in_both_spaces(tmp_path, pack_dir, built):
    folder, photos = built
    crowd = next(p for p in photos if p.kind == "crowd")
    data = (folder / crowd.file).read_bytes()
    big = _other_services(tmp_path / "a", pack_dir, min_face_px=int(cf.SMALL_FACE_PX * 2))
    result = ingest_photo(big, "floors", "p", image=data, spaces=list(SPACES))
    for space in SPACES:
        faces = result.outcomes[space].faces
        assert len(faces) == 1 and cf.found(crowd.boxes[0], [faces[0].bbox]), space
    strict = _other_services(tmp_path / "b", pack_dir, min_face_quality=0.999)
    result = ingest_photo(strict, "floors", "p", image=data, spaces=list(SPACES))
    assert {s: o.faces_indexed for s, o in result.outcomes.items()} == {"v1": 0, "v2": 0}


def test_rotations_can_be_switched_off(tmp_path, pack_dir, built):
    folder, photos = built
    sideways = next(p for p in photos if p.kind == "rot90")
    data = (folder / sideways.file).read_bytes()
    off = _other_services(tmp_path, pack_dir, ingest_try_rotations=False)
    faces = ingest_photo(off, "rot", "p", image=data, spaces=["v2"]).outcomes["v2"].faces
    assert all(abs(f.quality.roll) > 45 for f in faces)  # found lying on its side, not turned
    on = _other_services(tmp_path / "on", pack_dir)
    faces = ingest_photo(on, "rot", "p", image=data, spaces=["v2"]).outcomes["v2"].faces
    assert len(faces) == 1 and cf.found(sideways.boxes[0], [faces[0].bbox])
    assert 45 < abs(faces[0].quality.roll) <= 135  # mapped back: sideways in the photo as stored


def test_v2_describes_the_faces_hog_found(services, faces_dir):
    """The other direction of the declared dependency: v2 embeds given boxes (SCRFD on a crop)."""
    img = decode_image((faces_dir / "group__two_people.jpg").read_bytes())
    hog = services.engines.get("v1").detect(img, "ingest")
    own = services.engines.get("v2").detect(img, "selfie")
    described = services.engines.get("v2").describe(img, hog)
    assert len(hog) == len(own) == len(described) == 2
    for face in described:
        best = max(own, key=lambda o: box_iou(o.bbox, face.bbox))
        assert box_iou(best.bbox, face.bbox) > 0.8 and float(best.embedding @ face.embedding) > 0.9
        _check_ranges(face)
