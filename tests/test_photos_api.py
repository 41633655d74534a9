"""Thumbnails, "download all", ingest outcomes and retry through the real app, engines and store;
photos served by real local HTTP servers; the Firestore retry path on Google's emulator."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
import zipfile
from pathlib import Path

import pytest
import requests
import segno
from click.testing import CliRunner
from PIL import Image

from flask_backend import create_app
from flask_backend.store.db import DB_FILE
from flask_backend.thumbnails import cloudinary_url
from scripts.bulk_ingest import main as bulk_ingest
from tests.browser_fixtures import LiveServer
from tests.conftest import make_settings
from tests.http_fixtures import LocalHTTPServer, Reply

EV = "photos-ev"
PHOTOS = ["obama__1.jpg", "obama__2.jpg", "biden__1.jpg", "group__two_people.jpg"]
JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture(scope="module")
def srv(faces_dir):
    with LocalHTTPServer(directory=faces_dir) as server:
        yield server


@pytest.fixture(scope="module")
def app(tmp_path_factory, pack_dir, srv):
    application = create_app(make_settings(tmp_path_factory.mktemp("photos"), pack_dir, zip_max_photos=5))
    c = application.test_client()
    for name in PHOTOS:
        r = c.post("/api/v2/ingest", json={"event_id": EV, "photo_id": name, "image_url": srv.url("/" + name)})
        assert r.status_code == 200, r.get_json()
    return application


def _match(client, faces_dir, selfie="obama__3.jpg", event=EV) -> list[dict]:
    r = client.post("/api/v2/match", data={"event_id": event, "image": ((faces_dir / selfie).open("rb"), "s.jpg")})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["matches"]


def _rows(app, sql: str, *args) -> list[tuple]:
    path = app.extensions["facematch"].settings.data_dir / DB_FILE
    with sqlite3.connect(path) as c:
        return c.execute(sql, args).fetchall()


# --------------------------------------------------------------------------- thumbnails
def test_match_rows_carry_small_thumbnails_with_etag_and_private_cache(app, faces_dir):
    c = app.test_client()
    rows = _match(c, faces_dir)
    assert {r["photo_id"] for r in rows} >= {"obama__1.jpg", "obama__2.jpg", "group__two_people.jpg"}
    for row in rows:
        original = Image.open(faces_dir / row["photo_id"])
        assert (row["image_width"], row["image_height"]) == original.size  # the bbox's frame
        t = c.get(row["thumbnail_url"])
        assert t.status_code == 200 and t.mimetype == "image/webp"
        thumb = Image.open(io.BytesIO(t.data))
        assert max(thumb.size) == min(480, max(original.size))
        assert abs(thumb.size[0] / thumb.size[1] - original.size[0] / original.size[1]) < 0.02
        assert len(t.data) < 60_000 < (faces_dir / row["photo_id"]).stat().st_size
        assert t.headers["Cache-Control"] == "private, max-age=86400"
        again = c.get(row["thumbnail_url"], headers={"If-None-Match": t.headers["ETag"]})
        assert again.status_code == 304 and not again.data


def test_vector_ingest_has_no_thumbnail_and_cloudinary_urls_can_be_derived(tmp_path, pack_dir, faces_dir):
    cloud = "https://res.cloudinary.com/demo/image/upload/v1712/gala/p1.jpg"
    assert cloudinary_url(cloud, 480) == "https://res.cloudinary.com/demo/image/upload/w_480,c_limit/v1712/gala/p1.jpg"
    assert cloudinary_url("https://example.com/image/upload/p.jpg", 480) is None
    for derive, expected in ((False, None), (True, cloudinary_url(cloud, 480))):
        a = create_app(make_settings(tmp_path / str(derive), pack_dir, cloudinary_thumbnails=derive))
        c = a.test_client()
        emb = c.post("/api/v2/embed", data={"image": ((faces_dir / "obama__1.jpg").open("rb"), "a.jpg")}).get_json()
        r = c.post("/api/v2/ingest", json={"event_id": "vec", "photo_id": "p1", "embedding": emb["embedding"],
                                           "image_url": cloud})
        assert r.status_code == 200, r.get_json()
        (row,) = _match(c, faces_dir, event="vec")
        assert row["url"] == cloud and row["thumbnail_url"] == expected and row["image_width"] is None
        t = c.get("/api/v2/events/vec/photos/p1/thumbnail")
        assert t.status_code == 404 and t.get_json()["error"]["code"] == "no_thumbnail"


def test_thumbnails_are_deleted_with_their_photo_and_event(tmp_path, pack_dir, srv):
    a = create_app(make_settings(tmp_path, pack_dir, ingest_spaces=("v2",)))
    c = a.test_client()
    for name in ("obama__1.jpg", "biden__1.jpg"):
        fetched = srv.hits("/" + name)
        assert c.post("/api/v2/ingest", json={"event_id": "del", "photo_id": name,
                                              "image_url": srv.url("/" + name)}).status_code == 200
        assert srv.hits("/" + name) == fetched + 1  # the thumbnail came from the one download and decode
    url = "/api/v2/events/del/photos/obama__1.jpg/thumbnail"
    assert c.get(url).status_code == 200
    assert c.delete("/api/v2/events/del/photos/obama__1.jpg").status_code == 200
    assert c.get(url).status_code == 404
    assert _rows(a, "SELECT photo_id FROM thumbnails WHERE event_id='del'") == [("biden__1.jpg",)]
    assert _rows(a, "SELECT photo_id FROM ingest_outcomes WHERE event_id='del'") == [("biden__1.jpg",)]
    assert c.delete("/api/v2/events/del").status_code == 200
    assert _rows(a, "SELECT COUNT(*) FROM thumbnails") == [(0,)]
    assert _rows(a, "SELECT COUNT(*) FROM ingest_outcomes") == [(0,)]


def test_thumbnails_only_backfills_photos_indexed_without_thumbnails(tmp_path, pack_dir, srv, faces_dir):
    data = tmp_path / "data"
    old = create_app(make_settings(data, pack_dir, ingest_spaces=("v2",), thumbnail_side=0))  # "before thumbnails"
    for name in ("obama__1.jpg", "biden__1.jpg"):
        assert old.test_client().post("/api/v2/ingest", json={
            "event_id": "old", "photo_id": name, "image_url": srv.url("/" + name)}).status_code == 200
    assert _rows(old, "SELECT COUNT(*) FROM thumbnails") == [(0,)]
    hits = srv.hits("/obama__1.jpg")
    env = {"FACEMATCH_DATA_DIR": str(data), "FACEMATCH_V2_PACK": str(pack_dir), "FACEMATCH_ALLOW_PRIVATE_URLS": "1"}
    result = CliRunner().invoke(bulk_ingest, ["--thumbnails-only", "--all-events"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "thumbnails made: 2, failed: 0" in result.output
    assert srv.hits("/obama__1.jpg") == hits + 1
    new = create_app(make_settings(data, pack_dir))
    t = new.test_client().get("/api/v2/events/old/photos/obama__1.jpg/thumbnail")
    assert t.status_code == 200 and max(Image.open(io.BytesIO(t.data)).size) == 480
    again = CliRunner().invoke(bulk_ingest, ["--thumbnails-only", "--event-id", "old"], env=env, catch_exceptions=False)
    assert "0 photo(s) without a thumbnail" in again.output


# --------------------------------------------------------------------------- download all
def test_photos_zip_holds_the_requested_originals_and_lists_missing_ones(app, faces_dir, srv):
    c = app.test_client()
    srv.set("/vanishing.jpg", Reply(headers=JPEG, body=(faces_dir / "obama__5.jpg").read_bytes()))
    assert c.post("/api/v2/ingest", json={"event_id": EV, "photo_id": "vanishing",
                                          "image_url": srv.url("/vanishing.jpg")}).status_code == 200
    srv.set("/vanishing.jpg", 404)  # the photo host lost it after ingest
    wanted = ["obama__1.jpg", "group__two_people.jpg", "vanishing", "not-in-event"]
    r = c.post(f"/api/v2/events/{EV}/photos.zip", json={"photo_ids": wanted})
    assert r.status_code == 200 and r.mimetype == "application/zip" and r.is_streamed
    assert r.headers["Content-Disposition"] == f'attachment; filename="{EV}-photos.zip"'
    zf = zipfile.ZipFile(io.BytesIO(r.data))
    assert zf.testzip() is None
    assert zf.namelist() == ["obama__1.jpg", "group__two_people.jpg", "MISSING.txt"]
    for name in ("obama__1.jpg", "group__two_people.jpg"):
        assert zf.read(name) == (faces_dir / name).read_bytes()
    missing = zf.read("MISSING.txt").decode()
    assert "vanishing\tfetch_failed: host 127.0.0.1 answered 404 Not Found" in missing
    assert "not-in-event\tnot a photo of this event" in missing
    # a form post (the page's "Download all") works the same
    form = c.post(f"/api/v2/events/{EV}/photos.zip", data={"photo_ids": ["obama__2.jpg"]})
    assert zipfile.ZipFile(io.BytesIO(form.data)).namelist() == ["obama__2.jpg"]


def test_photos_zip_refuses_bad_requests(app):
    c = app.test_client()
    too_many = c.post(f"/api/v2/events/{EV}/photos.zip", json={"photo_ids": [f"p{i}" for i in range(6)]})
    assert too_many.status_code == 400 and too_many.get_json()["error"]["code"] == "too_many_photos"
    assert too_many.get_json()["error"]["max_photos"] == 5
    for body in ({}, {"photo_ids": []}, {"photo_ids": "x"}, {"photo_ids": [1]}):
        r = c.post(f"/api/v2/events/{EV}/photos.zip", json=body)
        assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_field", body
    r = c.post("/api/v2/events/nope/photos.zip", json={"photo_ids": ["a"]})
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "unknown_event"


def test_photos_zip_is_streamed_while_it_is_built(app, faces_dir, srv):
    """The first photo's bytes reach the client while a later photo is still downloading."""
    body = (faces_dir / "obama__2.jpg").read_bytes()
    srv.set("/slow.jpg", Reply(headers=JPEG, body=body))
    c = app.test_client()
    assert c.post("/api/v2/ingest", json={"event_id": EV, "photo_id": "slow",
                                          "image_url": srv.url("/slow.jpg")}).status_code == 200
    srv.set("/slow.jpg", Reply(headers=JPEG, body=body, delay=4))  # the photo host slowed down
    with LiveServer(app) as live:
        t0 = time.monotonic()
        r = requests.post(live.url(f"/api/v2/events/{EV}/photos.zip"), json={"photo_ids": ["biden__1.jpg", "slow"]},
                          stream=True, timeout=30)
        chunks = r.iter_content(64 * 1024)
        first = next(chunks)
        first_at = time.monotonic() - t0
        rest = b"".join(chunks)
        total_at = time.monotonic() - t0
    assert first.startswith(b"PK\x03\x04")
    assert first_at < 3.0 < total_at, (first_at, total_at)
    assert zipfile.ZipFile(io.BytesIO(first + rest)).namelist() == ["biden__1.jpg", "slow.jpg"]


def test_download_gives_one_original(app, faces_dir):
    c = app.test_client()
    r = c.post(f"/api/v2/events/{EV}/photos/obama__2.jpg/download", data={})
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    assert r.headers["Content-Disposition"] == 'attachment; filename="obama__2.jpg"'
    assert r.data == (faces_dir / "obama__2.jpg").read_bytes()
    assert c.post(f"/api/v2/events/{EV}/photos/nope/download", data={}).status_code == 404


# --------------------------------------------------------------------------- outcomes and retry
def test_api_failures_are_recorded_and_a_retry_after_the_fix_indexes_the_photo(app, faces_dir, srv):
    c = app.test_client()
    srv.set("/late.jpg", 404)
    r = c.post("/api/v2/ingest", json={"event_id": EV, "photo_id": "late", "image_url": srv.url("/late.jpg")})
    assert r.status_code == 400
    failed = c.get(f"/api/v2/events/{EV}/photos?status=failed").get_json()["photos"]
    (row,) = [p for p in failed if p["photo_id"] == "late"]
    assert row["code"] == "fetch_failed" and "404" in row["message"] and row["via"] == "api"
    listed = {e["event_id"]: e for e in c.get("/api/v2/events").get_json()["events"]}
    assert listed[EV]["failed"] >= 1 and listed[EV]["photos"] >= len(PHOTOS)
    again = c.post(f"/api/v2/events/{EV}/photos/late/retry", json={}).get_json()
    assert again["status"] == "failed" and again["attempts"] == 2  # not fixed yet
    srv.set("/late.jpg", Reply(headers=JPEG, body=(faces_dir / "obama__10.jpg").read_bytes()))  # fixed
    done = c.post(f"/api/v2/events/{EV}/photos/late/retry", json={}).get_json()
    assert done["status"] == "done" and done["faces"] == 1 and done["code"] is None
    assert "late" in {m["photo_id"] for m in _match(c, faces_dir)}
    assert "late" not in {p["photo_id"] for p in c.get(f"/api/v2/events/{EV}/photos?status=failed").get_json()["photos"]}
    assert c.post(f"/api/v2/events/{EV}/photos/never-seen/retry", json={}).status_code == 404
    bad = c.get(f"/api/v2/events/{EV}/photos?status=bogus")
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_query"
    assert c.get(f"/api/v2/events/{EV}/photos?limit=0").get_json()["error"]["code"] == "invalid_query"


def test_cli_outcomes_are_recorded_and_file_sources_cannot_be_retried_over_http(tmp_path, pack_dir, faces_dir):
    folder = tmp_path / "cli-ev"
    folder.mkdir()
    (folder / "good.jpg").write_bytes((faces_dir / "biden__1.jpg").read_bytes())
    (folder / "broken.jpg").write_bytes((faces_dir / "biden__1.jpg").read_bytes()[:2000])
    env = {"FACEMATCH_DATA_DIR": str(tmp_path / "data"), "FACEMATCH_V2_PACK": str(pack_dir),
           "FACEMATCH_INGEST_SPACES": "v2"}
    result = CliRunner().invoke(bulk_ingest, ["--from-dir", str(folder), "--no-progress"], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 1, result.output
    a = create_app(make_settings(tmp_path / "data", pack_dir))
    c = a.test_client()
    rows = {p["photo_id"]: p for p in c.get("/api/v2/events/cli-ev/photos").get_json()["photos"]}
    assert rows["good.jpg"]["status"] == "done" and rows["good.jpg"]["via"] == "cli"
    assert rows["broken.jpg"]["status"] == "failed" and rows["broken.jpg"]["code"] == "corrupt_image"
    r = c.post("/api/v2/events/cli-ev/photos/broken.jpg/retry", json={})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "retry_unavailable"


def test_retry_of_a_firestore_photo_sets_it_pending_for_the_worker(firestore_db, monkeypatch, tmp_path, pack_dir,
                                                                   faces_dir):
    db = firestore_db
    for k, v in db.env().items():
        monkeypatch.setenv(k, v)
    data = tmp_path / "data"
    env = {**db.env(), "FACEMATCH_DATA_DIR": str(data), "FACEMATCH_V2_PACK": str(pack_dir),
           "FACEMATCH_ALLOW_PRIVATE_URLS": "1", "FACEMATCH_INGEST_SPACES": "v2"}
    with LocalHTTPServer() as photos:
        photos.set("/a.jpg", Reply(headers=JPEG, body=(faces_dir / "obama__1.jpg").read_bytes()))
        photos.set("/b.jpg", 503)
        db.photos("fs-ev").document("a").set({"url": photos.url("/a.jpg")})
        db.photos("fs-ev").document("b").set({"url": photos.url("/b.jpg")})
        cli = CliRunner().invoke(bulk_ingest, ["--event-id", "fs-ev", "--no-progress"], env=env, catch_exceptions=False)
        assert cli.exit_code == 1, cli.output
        assert db.photo("fs-ev", "b")["faceStatus"] == "failed"
        a = create_app(make_settings(data, pack_dir))
        c = a.test_client()
        (row,) = c.get("/api/v2/events/fs-ev/photos?status=failed").get_json()["photos"]
        assert row["photo_id"] == "b" and row["code"] == "fetch_failed" and row["via"] == "cli"
        photos.set("/b.jpg", Reply(headers=JPEG, body=(faces_dir / "obama__2.jpg").read_bytes()))  # fixed
        fetched = photos.hits("/b.jpg")
        r = c.post("/api/v2/events/fs-ev/photos/b/retry", json={})
        assert r.status_code == 200 and r.get_json()["status"] == "pending", r.get_json()
        doc = db.photo("fs-ev", "b")
        assert doc["faceStatus"] == "pending" and doc["faceAttempts"] == 0 and doc["faceError"] is None
        assert photos.hits("/b.jpg") == fetched  # the web app did not fetch it: the worker will
        again = CliRunner().invoke(bulk_ingest, ["--event-id", "fs-ev", "--no-progress"], env=env,
                                   catch_exceptions=False)
        assert again.exit_code == 0, again.output
    assert db.photo("fs-ev", "b")["faceStatus"] == "done"
    (row,) = [p for p in c.get("/api/v2/events/fs-ev/photos").get_json()["photos"] if p["photo_id"] == "b"]
    assert row["status"] == "done" and row["faces"] == 1


def test_concurrent_api_ingests_all_land_with_their_outcomes(app, srv):
    """Outcome and thumbnail rows go through the store's single-writer transactions: parallel
    API ingests all land, each with its outcome."""
    c = app.test_client()
    errors: list[str] = []

    def go(i: int) -> None:
        r = app.test_client().post("/api/v2/ingest", json={"event_id": "par", "photo_id": f"p{i}",
                                                            "image_url": srv.url("/" + PHOTOS[i % 4])})
        if r.status_code != 200:
            errors.append(str(r.get_json()))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = c.get("/api/v2/events/par/photos").get_json()["photos"]
    assert sorted(p["photo_id"] for p in rows) == ["p0", "p1", "p2", "p3"]
    assert {p["status"] for p in rows} == {"done"}


def test_qr_code_is_an_svg_of_the_attendee_link_with_the_code_only_when_it_is_right(tmp_path, pack_dir, srv):
    a = create_app(make_settings(tmp_path, pack_dir, ingest_spaces=("v2",)))
    c = a.test_client()
    assert c.post("/api/v2/ingest", json={"event_id": "qr", "photo_id": "p",
                                          "image_url": srv.url("/obama__1.jpg")}).status_code == 200
    r = c.post("/api/v2/events/qr/qr", json={})
    assert r.status_code == 200 and r.mimetype == "image/svg+xml"
    assert r.data.startswith(b"<svg") and b"<path" in r.data and r.headers["X-Attendee-Link-Has-Code"] == "0"
    assert c.post("/api/v2/events/qr/qr", json={"code": "sesame-42"}).status_code == 403  # open event: no code
    assert c.put("/api/v2/events/qr/access", json={"mode": "code", "code": "sesame-42"}).status_code == 200
    coded = c.post("/api/v2/events/qr/qr", json={"code": "sesame-42"})
    assert coded.headers["X-Attendee-Link-Has-Code"] == "1" and coded.data != r.data
    for body, link in ((r.data, "http://localhost/e/qr"), (coded.data, "http://localhost/e/qr?code=sesame-42")):
        expected = io.BytesIO()  # the same link, encoded independently: the QR code holds exactly it
        segno.make(link, error="m").save(expected, kind="svg", scale=8, border=4, xmldecl=False, svgclass="qr",
                                         title="FaceMatch: photos of qr")
        assert body == expected.getvalue(), link
    wrong = c.post("/api/v2/events/qr/qr", json={"code": "sesame-43"})
    assert wrong.status_code == 403 and wrong.get_json()["error"]["code"] == "event_code_invalid"


def test_thumbnail_paths_survive_odd_photo_ids(tmp_path, pack_dir, srv):
    a = create_app(make_settings(tmp_path, pack_dir, ingest_spaces=("v2",)))
    c = a.test_client()
    pid = "2026/day 1/IMG_01#x?.jpg"
    assert c.post("/api/v2/ingest", json={"event_id": "odd", "photo_id": pid,
                                          "image_url": srv.url("/obama__1.jpg")}).status_code == 200
    emb = c.post("/api/v2/embed", data={"image": (io.BytesIO(Path(srv.directory, "obama__3.jpg").read_bytes()), "s.jpg")}).get_json()
    row = c.post("/api/v2/match", json={"event_id": "odd", "user_embedding": emb["embedding"]}).get_json()["matches"][0]
    assert row["photo_id"] == pid
    assert c.get(row["thumbnail_url"]).status_code == 200


# --------------------------------------------------------------------------- access (issue 11's rules)
def test_thumbnails_and_downloads_of_a_code_event_need_the_code(tmp_path, pack_dir, srv, faces_dir):
    a = create_app(make_settings(tmp_path, pack_dir, ingest_spaces=("v2",), thumbnail_url_ttl=60))
    c = a.test_client()
    for name in ("obama__1.jpg", "obama__2.jpg"):
        assert c.post("/api/v2/ingest", json={"event_id": "priv", "photo_id": name,
                                              "image_url": srv.url("/" + name)}).status_code == 200
    plain = "/api/v2/events/priv/photos/obama__1.jpg/thumbnail"
    assert c.get(plain).status_code == 200  # open event: free, like match
    assert c.put("/api/v2/events/priv/access", json={"mode": "code", "code": "gala-2026!"}).status_code == 200
    refused = c.get(plain)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "event_code_required"
    assert c.get(plain, headers={"X-Event-Code": "wrong-code"}).get_json()["error"]["code"] == "event_code_invalid"
    assert c.get(plain, headers={"X-Event-Code": "gala-2026!"}).status_code == 200
    emb = c.post("/api/v2/embed", data={"image": ((faces_dir / "obama__3.jpg").open("rb"), "s.jpg")}).get_json()
    rows = c.post("/api/v2/match", json={"event_id": "priv", "user_embedding": emb["embedding"],
                                         "event_code": "gala-2026!"}).get_json()["matches"]
    signed = {r["photo_id"]: r["thumbnail_url"] for r in rows}
    assert "&exp=" in signed["obama__1.jpg"] and "&sig=" in signed["obama__1.jpg"]
    assert c.get(signed["obama__1.jpg"]).status_code == 200  # the match answer's URL works in an <img>
    swapped = signed["obama__1.jpg"].replace("obama__1.jpg", "obama__2.jpg")  # one photo's signature, another photo
    assert c.get(swapped).status_code == 403
    assert c.get(signed["obama__1.jpg"][:-4] + "0000").status_code == 403
    stale = signed["obama__1.jpg"].split("&exp=")[0] + "&exp=1000&sig=" + signed["obama__1.jpg"].split("&sig=")[1]
    assert c.get(stale).status_code == 403
    z = c.post("/api/v2/events/priv/photos.zip", json={"photo_ids": ["obama__1.jpg"]})
    assert z.status_code == 403 and z.get_json()["error"]["code"] == "event_code_required"
    ok = c.post("/api/v2/events/priv/photos.zip", data={"photo_ids": "obama__1.jpg", "event_code": "gala-2026!"})
    assert ok.status_code == 200 and zipfile.ZipFile(io.BytesIO(ok.data)).namelist() == ["obama__1.jpg"]
    assert c.post("/api/v2/events/priv/photos/obama__1.jpg/download", data={}).status_code == 403
    assert c.post("/api/v2/events/priv/photos/obama__1.jpg/download",
                  headers={"X-Event-Code": "gala-2026!"}, data={}).status_code == 200


def test_organizer_keys_see_and_act_on_their_events_only(tmp_path, pack_dir, srv):
    from flask_backend.access import keys

    a = create_app(make_settings(tmp_path, pack_dir, ingest_spaces=("v2",), api_keys=("admin-k",)))
    svc = a.extensions["facematch"]
    acme = {"X-API-Key": keys.create_key(svc, "acme", "organizer", ["acme-*"])}
    reader = {"X-API-Key": keys.create_key(svc, "acme-ro", "reader", ["acme-*"])}
    admin = {"X-API-Key": "admin-k"}
    c = a.test_client()
    srv.set("/broken.jpg", 404)
    for ev in ("acme-gala", "other-party"):
        assert c.post("/api/v2/ingest", headers=admin, json={"event_id": ev, "photo_id": "p1",
                                                             "image_url": srv.url("/obama__1.jpg")}).status_code == 200
        c.post("/api/v2/ingest", headers=admin, json={"event_id": ev, "photo_id": "bad",
                                                      "image_url": srv.url("/broken.jpg")})
    assert c.get("/api/v2/events").status_code == 401
    assert [e["event_id"] for e in c.get("/api/v2/events", headers=acme).get_json()["events"]] == ["acme-gala"]
    assert [e["event_id"] for e in c.get("/api/v2/events", headers=reader).get_json()["events"]] == ["acme-gala"]
    assert [e["event_id"] for e in c.get("/api/v2/events", headers=admin).get_json()["events"]] == [
        "acme-gala", "other-party"]
    assert c.get("/api/v2/events/acme-gala/photos?status=failed", headers=acme).status_code == 200
    assert c.get("/api/v2/events/other-party/photos?status=failed", headers=acme).status_code == 403
    assert c.post("/api/v2/events/other-party/photos/bad/retry", headers=acme, json={}).status_code == 403
    assert c.post("/api/v2/events/acme-gala/photos/bad/retry", headers=reader, json={}).status_code == 403
    assert c.post("/api/v2/events/acme-gala/photos/bad/retry", headers=acme, json={}).status_code == 200
    assert c.post("/api/v2/events/other-party/qr", headers=acme, json={}).status_code == 403
    assert c.post("/api/v2/events/acme-gala/qr", headers=acme, json={}).status_code == 200


def test_downloads_are_rate_limited_per_address(tmp_path, pack_dir, srv):
    a = create_app(make_settings(tmp_path, pack_dir, ingest_spaces=("v2",), rate_limits_enabled=True,
                                 rate_limit_download="2 per minute"))
    c = a.test_client()
    assert c.post("/api/v2/ingest", json={"event_id": "rl", "photo_id": "p",
                                          "image_url": srv.url("/obama__1.jpg")}).status_code == 200
    for _ in range(2):  # each endpoint has its budget per address (as issue 11's limits do)
        assert c.post("/api/v2/events/rl/photos.zip", json={"photo_ids": ["p"]}).status_code == 200
        assert c.post("/api/v2/events/rl/photos/p/download", data={}).status_code == 200
    assert c.post("/api/v2/events/rl/photos/p/download", data={}).status_code == 429
    r = c.post("/api/v2/events/rl/photos.zip", json={"photo_ids": ["p"]})
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) > 0
    assert c.get("/api/v2/events/rl/photos/p/thumbnail").status_code == 200  # thumbnails are not downloads
