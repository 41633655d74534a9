"""Local sources end to end: a folder and a CSV/JSON list through the real bulk CLI, the
real pipeline and store; then a real match over the Flask app on the same data dir."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flask_backend import create_app
from flask_backend.config import Settings
from flask_backend.services import Services
from flask_backend.sources.local import DirectorySource, ListSource, SourceError
from scripts.bulk_ingest import main as bulk_ingest
from tests.conftest import make_settings
from tests.http_fixtures import LocalHTTPServer, Reply

PEOPLE = ["obama__1.jpg", "biden__1.jpg", "kit_harington__1.jpeg"]


def _cli(args: list[str], data_dir: Path, pack: Path) -> object:
    env = {"FACEMATCH_DATA_DIR": str(data_dir), "FACEMATCH_V2_PACK": str(pack), "FACEMATCH_ALLOW_PRIVATE_URLS": "1",
           "FACEMATCH_INGEST_SPACES": "v2"}
    return CliRunner().invoke(bulk_ingest, [*args, "--no-progress"], env=env, catch_exceptions=False)


def _store(data_dir: Path, pack: Path) -> Services:
    return Services(make_settings(data_dir, pack))


def _link(folder: Path, faces_dir: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(faces_dir / name)  # the shared photos are never copied


def test_folder_end_to_end_resumable_and_matchable(tmp_path, faces_dir, pack_dir):
    event = tmp_path / "gala-2026"
    _link(event, faces_dir, PEOPLE[:2])
    _link(event / "day2", faces_dir, ["group__two_people.jpg"])
    (event / "notes.txt").write_text("ignored: not an image suffix")
    (event / "broken.jpg").write_text("<html>not really a jpeg</html>")
    data = tmp_path / "data"

    first = _cli(["--from-dir", str(event)], data, pack_dir)
    assert first.exit_code == 1, first.output  # broken.jpg failed ...
    assert "broken.jpg  unsupported_image" in first.output
    assert "3 indexed" in first.output  # ... and did not stop the others

    store = _store(data, pack_dir).store
    states = {p.photo_id: p for p in store.list_photos("gala-2026", "v2")}
    assert set(states) == {"obama__1.jpg", "biden__1.jpg", "day2/group__two_people.jpg"}
    assert states["day2/group__two_people.jpg"].faces == 2
    assert states["obama__1.jpg"].source_url == (event / "obama__1.jpg").absolute().as_uri()

    again = _cli(["--from-dir", str(event)], data, pack_dir)
    assert "already indexed 3" in again.output, again.output
    after = {p.photo_id: p.ingested_at for p in store.list_photos("gala-2026", "v2")}
    assert after == {k: v.ingested_at for k, v in states.items()}  # nothing re-ingested

    client = create_app(make_settings(data, pack_dir)).test_client()
    selfie = (faces_dir / "obama__2.jpg").read_bytes()
    resp = client.post("/api/v2/match", data={"event_id": "gala-2026", "image": (io.BytesIO(selfie), "s.jpg")},
                       content_type="multipart/form-data")
    assert resp.status_code == 200, resp.get_json()
    found = [m["photo_id"] for m in resp.get_json()["matches"]]
    assert set(found) == {"obama__1.jpg", "day2/group__two_people.jpg"}


def test_folder_all_events(tmp_path, faces_dir, pack_dir):
    _link(tmp_path / "photos" / "ev-a", faces_dir, ["obama__1.jpg"])
    _link(tmp_path / "photos" / "ev-b", faces_dir, ["biden__1.jpg", "rose_leslie__1.jpg"])
    data = tmp_path / "data"
    result = _cli(["--from-dir", str(tmp_path / "photos"), "--all-events"], data, pack_dir)
    assert result.exit_code == 0, result.output
    store = _store(data, pack_dir).store
    assert store.list_events() == ["ev-a", "ev-b"]
    assert [p.photo_id for p in store.list_photos("ev-b", "v2")] == ["biden__1.jpg", "rose_leslie__1.jpg"]


def test_csv_and_json_lists_over_http(tmp_path, faces_dir, pack_dir):
    data = tmp_path / "data"
    with LocalHTTPServer(directory=faces_dir) as srv:
        srv.set("/gone.jpg", 404)
        srv.set("/page", Reply(headers={"Content-Type": "text/html"}, body=b"<html>login</html>"))
        rows = ["event_id,photo_id,url"]
        rows += [f"csv-a,{n},{srv.url('/' + n)}?sig=abc" for n in PEOPLE]
        rows += [f"csv-a,gone,{srv.url('/gone.jpg')}", f"csv-a,page,{srv.url('/page')}",
                 f"csv-b,rose,{srv.url('/rose_leslie__1.jpg')}"]
        listing = tmp_path / "photos.csv"
        listing.write_text("\n".join(rows) + "\n")

        first = _cli(["--from-csv", str(listing), "--all-events", "--concurrency", "3"], data, pack_dir)
        assert first.exit_code == 1, first.output
        assert "csv-a/gone  fetch_failed" in first.output and "404" in first.output
        assert "csv-a/page  unsupported_image" in first.output
        assert "4 indexed" in first.output
        hits = srv.hits()

        again = _cli(["--from-csv", str(listing), "--all-events"], data, pack_dir)
        assert "already indexed 4" in again.output, again.output
        assert srv.hits() - hits == 2  # only the two failures were tried again

        # a JSON map for one event; a new URL for an indexed photo is ingested again
        js = tmp_path / "photos.json"
        js.write_text(json.dumps({"obama__1.jpg": srv.url("/obama__1.jpg") + "?v=2", "new": srv.url("/biden__2.jpg")}))
        third = _cli(["--from-csv", str(js), "--event-id", "csv-a"], data, pack_dir)
        assert third.exit_code == 0, third.output
        assert "2 indexed" in third.output
    store = _store(data, pack_dir).store
    state = store.photo_state("csv-a", "obama__1.jpg", "v2")
    assert state is not None and state.source_url.endswith("?v=2")
    assert store.photo_state("csv-b", "rose", "v2").faces == 1


def test_dry_run_changes_nothing(tmp_path, faces_dir, pack_dir):
    _link(tmp_path / "ev", faces_dir, PEOPLE)
    data = tmp_path / "data"
    result = _cli(["--from-dir", str(tmp_path / "ev"), "--dry-run"], data, pack_dir)
    assert result.exit_code == 0, result.output
    assert "3 of 3 photos would be ingested" in result.output
    assert _store(data, pack_dir).store.list_events() == []


def test_list_parsing(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("# photo_id,url without header\np1,https://x.example/1.jpg\np2,https://x.example/2.jpg\n")
    refs = list(ListSource(plain, event_id="ev").photos("ev"))
    assert [(r.photo_id, r.url) for r in refs] == [("p1", "https://x.example/1.jpg"), ("p2", "https://x.example/2.jpg")]

    aliases = tmp_path / "a.json"
    aliases.write_text(json.dumps({"photos": [{"id": "p1", "secure_url": "https://c.example/1.jpg", "event": "e"}]}))
    assert [r.url for r in ListSource(aliases).photos("e")] == ["https://c.example/1.jpg"]

    dup = tmp_path / "dup.csv"
    dup.write_text("photo_id,url\np1,https://x/1.jpg\np1,https://x/2.jpg\n")
    with pytest.raises(SourceError, match="listed twice"):
        ListSource(dup, event_id="ev")
    no_event = tmp_path / "noev.csv"
    no_event.write_text("photo_id,url\np1,https://x/1.jpg\n")
    with pytest.raises(SourceError, match="no event_id"):
        ListSource(no_event)
    with pytest.raises(SourceError, match="not a directory"):
        DirectorySource(tmp_path / "nope")


def test_settings_reach_the_cli(tmp_path, faces_dir, pack_dir):
    """--data-dir wins over FACEMATCH_DATA_DIR; an unknown space is a clean error, not a traceback."""
    _link(tmp_path / "ev", faces_dir, ["obama__1.jpg"])
    result = _cli(["--from-dir", str(tmp_path / "ev"), "--spaces", "v3"], tmp_path / "d1", pack_dir)
    assert result.exit_code == 1 and "unknown_space" in result.output
    other = tmp_path / "d2"
    result = _cli(["--from-dir", str(tmp_path / "ev"), "--data-dir", str(other)], tmp_path / "d1", pack_dir)
    assert result.exit_code == 0, result.output
    assert Services(Settings.from_env({}, data_dir=other, v2_pack=str(pack_dir))).store.list_events() == ["ev"]
