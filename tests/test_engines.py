"""Both engines on the real labelled photos of ../shared/faces."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flask_backend.faces import largest
from flask_backend.imaging import decode_image
from flask_backend.match import PACK_THRESHOLDS

SPACES = ("v1", "v2")


@pytest.fixture(scope="module")
def embeddings(services, faces_dir, single_person_photos):
    """{space: {file: (unit embedding, raw vector, faces found)}} for every single-person photo."""
    out: dict[str, dict[str, tuple]] = {s: {} for s in SPACES}
    for row in single_person_photos:
        img = decode_image((faces_dir / row["file"]).read_bytes(), max_side=services.settings.max_decode_side)
        for space in SPACES:
            faces = services.engines.get(space).detect(img, "selfie")
            if faces:
                f = largest(faces)
                out[space][f"{row['file']}"] = (f.embedding, f.raw, len(faces))
    return out


@pytest.mark.parametrize("space", SPACES)
def test_every_single_person_photo_has_a_face(embeddings, single_person_photos, space):
    missing = [r["file"] for r in single_person_photos if r["file"] not in embeddings[space]]
    assert missing == [], f"{space} found no face in {missing}"


def test_embeddings_are_unit_vectors_of_the_model_dimension(services, embeddings):
    for space in SPACES:
        dim = services.engines.status(space).dim
        for unit, raw, _ in embeddings[space].values():
            assert unit.shape == (dim,) and unit.dtype == np.float32
            assert abs(float(np.linalg.norm(unit)) - 1.0) < 1e-4
            assert raw is not None and raw.shape == (dim,)
    assert services.engines.status("v1").dim == 128
    assert services.engines.status("v2").dim == 128  # the test pack; buffalo_l gives 512


def test_v2_finds_all_six_faces_of_the_group_photo(services, faces_dir):
    img = decode_image((faces_dir / "group__t1.jpg").read_bytes())
    faces = services.engines.get("v2").detect(img, "selfie")
    assert len(faces) == 6
    for f in faces:
        x1, y1, x2, y2 = f.bbox
        assert 0 <= x1 < x2 <= img.width and 0 <= y1 < y2 <= img.height
        assert f.kps.shape == (5, 2) and f.det_score > 0.5


def _pairs(embeddings, single_person_photos, derived_files, space):
    rows = [r for r in single_person_photos if r["file"] not in derived_files and r["file"] in embeddings[space]]
    same, diff = [], []
    for a, b in itertools.combinations(rows, 2):
        ea, eb = embeddings[space][a["file"]], embeddings[space][b["file"]]
        (same if a["identity"] == b["identity"] else diff).append((a["file"], b["file"], ea, eb))
    assert same and diff
    return same, diff


def test_v1_raw_descriptor_distance_separates_identities_at_0_6(embeddings, single_person_photos, derived_files):
    same, diff = _pairs(embeddings, single_person_photos, derived_files, "v1")
    far_same = [(a, b, d) for a, b, ea, eb in same if (d := float(np.linalg.norm(ea[1] - eb[1]))) >= 0.6]
    close_diff = [(a, b, d) for a, b, ea, eb in diff if (d := float(np.linalg.norm(ea[1] - eb[1]))) < 0.6]
    assert far_same == [], f"same identity but distance >= 0.6: {far_same}"
    assert close_diff == [], f"different identities but distance < 0.6: {close_diff}"


def test_v2_cosine_separates_identities(embeddings, single_person_photos, derived_files):
    same, diff = _pairs(embeddings, single_person_photos, derived_files, "v2")
    same_sims = [float(ea[0] @ eb[0]) for _, _, ea, eb in same]
    diff_sims = [float(ea[0] @ eb[0]) for _, _, ea, eb in diff]
    assert min(same_sims) > max(diff_sims)
    threshold = PACK_THRESHOLDS["det500m_mbf128"]
    assert min(same_sims) > threshold > max(diff_sims)


def test_downscaled_decode_finds_the_same_faces(services, faces_dir):
    data = (faces_dir / "group__t1.jpg").read_bytes()
    full = services.engines.get("v2").detect(decode_image(data), "selfie")
    small = services.engines.get("v2").detect(decode_image(data, max_side=640), "selfie")
    assert len(full) == len(small) == 6
    # boxes come back in ORIGINAL pixel coordinates either way
    centres_full = sorted(((f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2) for f in full)
    centres_small = sorted(((f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2) for f in small)
    for (ax, ay), (bx, by) in zip(centres_full, centres_small, strict=True):
        assert abs(ax - bx) < 8 and abs(ay - by) < 8
