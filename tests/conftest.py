"""Shared fixtures: test assets from ../shared (found through FACEMATCH_TEST_ASSETS), the
real small InsightFace pack, and app/client fixtures in the style of the Flask tutorial."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from flask_backend import create_app
from flask_backend.config import Settings
from flask_backend.services import Services

# Fixtures shared by every test module, registered once here so session-scoped ones
# (the Firestore emulator) really start once per session.
from tests.firestore_fixtures import firestore_db_fixture, firestore_emulator_fixture, procs_fixture  # noqa: F401
from tests.http_fixtures import http_server  # noqa: F401
from tests.image_fixtures import png_bomb_20k  # noqa: F401
from tests.pg_fixtures import postgres_cluster, store_backend  # noqa: F401
from tests.processes import redis_server  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("FACEMATCH_TEST_ASSETS", REPO.parent / "shared")).resolve()
FACES = ASSETS / "faces"
PACK = ASSETS / "models" / "det500m_mbf128"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set FACEMATCH_TEST_ASSETS to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return _need(FACES / "manifest.csv", "labelled face photos").parent


@pytest.fixture(scope="session")
def pack_dir() -> Path:
    return _need(PACK, "test model pack det500m_mbf128")


@pytest.fixture(scope="session")
def manifest(faces_dir: Path) -> list[dict]:
    with (faces_dir / "manifest.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def group_members(faces_dir: Path) -> dict[str, set[str]]:
    members: dict[str, set[str]] = {}
    with (faces_dir / "group_members.csv").open() as f:
        for row in csv.DictReader(f):
            members.setdefault(row["file"], set()).add(row["identity"])
    return members


def make_settings(data_dir: Path, pack: Path | str, **overrides) -> Settings:
    """Test settings: temp data dir, the given v2 pack, local URLs allowed (test HTTP servers).

    Rate limits are off (every test speaks from 127.0.0.1); tests of the limits turn them on."""
    values = {"data_dir": data_dir, "v2_pack": str(pack), "allow_private_urls": True, "log_level": "WARNING",
              "rate_limits_enabled": False}
    values.update(overrides)
    return Settings.from_env({}, **values)


@pytest.fixture(scope="session")
def services(tmp_path_factory, pack_dir: Path) -> Services:
    """One process-wide Services with both engines (loaded once for the session)."""
    return Services(make_settings(tmp_path_factory.mktemp("data"), pack_dir))


@pytest.fixture(scope="module")
def app(tmp_path_factory, pack_dir: Path):
    return create_app(make_settings(tmp_path_factory.mktemp("appdata"), pack_dir))


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def app_without_v2(tmp_path_factory):
    empty_root = tmp_path_factory.mktemp("empty_models")
    return create_app(
        Settings.from_env({}, data_dir=tmp_path_factory.mktemp("nov2"), model_root=empty_root,
                          v2_pack="buffalo_l", allow_private_urls=True, log_level="WARNING")
    )


@pytest.fixture(scope="session")
def derived_files(faces_dir: Path) -> set[str]:
    """Files the assets README marks DERIVED (crops/re-encodings): excluded from accuracy pairs."""
    derived = set()
    for line in (faces_dir / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and "DERIVED" in cells[-1]:
            derived.add(cells[0])
    return derived


@pytest.fixture(scope="session")
def single_person_photos(manifest: list[dict]) -> list[dict]:
    return [r for r in manifest if r["identity"] and r["faces_expected"] == "1"]
