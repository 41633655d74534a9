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


def test_loaded_models_are_shared_per_process_keyed_by_their_settings(tmp_path, pack_dir, faces_dir):
    """Every Services of a process reuses the models another one loaded with the same
    settings (the suite builds dozens of apps); other settings load their own."""
    from flask_backend.faces import shared
    from flask_backend.services import Services
    from tests.conftest import make_settings

    img = decode_image((faces_dir / "obama__1.jpg").read_bytes())
    first = Services(make_settings(tmp_path / "a", pack_dir))
    want = first.engines.get("v2").detect(img, "selfie")[0].embedding
    first.engines.get("v1").detect(img, "selfie")
    loads = dict(shared.loads)
    second = Services(make_settings(tmp_path / "b", pack_dir))
    got = second.engines.get("v2").detect(img, "selfie")[0].embedding
    second.engines.get("v1").detect(img, "selfie")
    assert shared.loads == loads  # nothing loaded again
    assert second.engines.get("v2")._det is first.engines.get("v2")._det
    np.testing.assert_array_equal(got, want)
    strict = Services(make_settings(tmp_path / "c", pack_dir, v2_det_thresh=0.9))
    assert strict.engines.get("v2")._det is not first.engines.get("v2")._det  # its own threshold, its own load
    assert shared.loads["v2"] == loads["v2"] + 1
    assert strict.engines.get("v2")._det.det_thresh == 0.9 and first.engines.get("v2")._det.det_thresh == 0.5


def test_an_engine_loads_only_when_its_space_is_used(tmp_path, pack_dir, faces_dir):
    from flask_backend.ingest import ingest_photo
    from flask_backend.services import Services
    from tests.conftest import make_settings

    only_v2 = Services(make_settings(tmp_path / "d", pack_dir, ingest_spaces=("v2",)))
    result = ingest_photo(only_v2, "ev", "p", image=(faces_dir / "obama__1.jpg").read_bytes())
    assert set(result.outcomes) == {"v2"}
    assert only_v2.engines._by_space["v1"]._models is None  # dlib never asked for
    asked = Services(make_settings(tmp_path / "e", pack_dir))
    ingest_photo(asked, "ev", "p", image=(faces_dir / "obama__1.jpg").read_bytes(), spaces=["v2"])
    assert asked.engines._by_space["v1"]._models is None
