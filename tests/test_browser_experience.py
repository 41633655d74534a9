"""Attendee and organizer experience in a real browser (Debian's Chromium via playwright):
thumbnails and their weight on a phone, the photo viewer, "download all", the organizer
dashboard (scoped key, failures and retry, event code, QR code, delete, live counts while the
real photo worker ingests from the Firestore emulator). Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flask_backend import create_app
from flask_backend.access import keys
from tests.browser_fixtures import (
    LiveServer,
    artifact,
    gallery,
    launch_browser,
    require_browser,
    search,
    shoot,
    wait_until,
)
from tests.conftest import ASSETS, make_settings
from tests.firestore_fixtures import service_env, start_worker
from tests.http_fixtures import LocalHTTPServer, Reply

EVENT = "gala-exp"
OTHER = "other-ev"
SELFIE = "obama__4.jpg"  # never ingested
OBAMA = ["obama__1.jpg", "obama__2.jpg", "obama__3.jpg", "group__two_people.jpg", "group__obama_and_biden.jpg"]
OTHERS = ["biden__1.jpg", "kit_harington__1.jpeg", "rose_leslie__1.jpg"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
JPEG = {"Content-Type": "image/jpeg"}
ADMIN = {"X-API-Key": "admin-k"}
WEIGHT_LIMIT = 1_500_000  # bytes the phone's first screen may transfer (the target)


@dataclass
class Env:
    live: LiveServer
    photos: LocalHTTPServer  # the photo host: ../shared/faces plus scripted routes
    faces: Path
    organizer_key: str
    data: Path
    browser: object


@pytest.fixture(scope="module")
def env(faces_dir, pack_dir, tmp_path_factory) -> Iterator[Env]:
    require_browser()
    data = tmp_path_factory.mktemp("experience") / "data"
    app = create_app(make_settings(data, pack_dir, api_keys=("admin-k",), ingest_spaces=("v2",)))
    org = keys.create_key(app.extensions["facematch"], "gala-org", "organizer", ["gala-*"])
    c = app.test_client()
    with LocalHTTPServer(directory=faces_dir) as photos:
        photos.set("/vanishing.jpg", Reply(headers=JPEG, body=(faces_dir / "obama__5.jpg").read_bytes()))
        photos.set("/late.jpg", 404)
        for name in OBAMA + OTHERS:
            r = c.post("/api/v2/ingest", headers=ADMIN, json={"event_id": EVENT, "photo_id": name,
                                                             "image_url": photos.url("/" + name)})
            assert r.status_code == 200, r.get_json()
        assert c.post("/api/v2/ingest", headers=ADMIN, json={"event_id": EVENT, "photo_id": "vanishing.jpg",
                                                            "image_url": photos.url("/vanishing.jpg")}).status_code == 200
        photos.set("/vanishing.jpg", 404)  # the photo host lost it after ingest: "download all" must say so
        late = c.post("/api/v2/ingest", headers=ADMIN, json={"event_id": EVENT, "photo_id": "late.jpg",
                                                            "image_url": photos.url("/late.jpg")})
        assert late.status_code == 400  # recorded as a failure for the dashboard
        for name in OTHERS[:2]:
            assert c.post("/api/v2/ingest", headers=ADMIN, json={"event_id": OTHER, "photo_id": name,
                                                                "image_url": photos.url("/" + name)}).status_code == 200
        with LiveServer(app) as live, launch_browser() as browser:
            yield Env(live, photos, faces_dir, org, data, browser)


def new_page(env: Env, viewport=PHONE, **context_args):
    context = env.browser.new_context(viewport=viewport, device_scale_factor=1, accept_downloads=True, **context_args)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.log = []  # type: ignore[attr-defined]
    pg.on("console", lambda msg: msg.type == "error" and pg.log.append(("console", msg.text)))
    pg.on("pageerror", lambda exc: pg.log.append(("pageerror", str(exc))))
    return pg


@pytest.fixture
def page(env):
    pg = new_page(env)
    yield pg
    pg.context.close()


def _results(env: Env, page) -> list[dict]:
    page.goto(env.live.url(f"/e/{EVENT}"))
    assert search(page, env.faces / SELFIE) == "done"
    wait_until(page, "Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete)")
    return gallery(page)


# --------------------------------------------------------------------------- attendee
def test_gallery_shows_thumbnails_outlined(env, page):
    shown = _results(env, page)
    ids = {p["id"] for p in shown}
    assert ids >= set(OBAMA) and ids <= set(OBAMA) | {"vanishing.jpg"}, ids
    assert all("/thumbnail?v=" in p["url"] for p in shown), shown
    assert all(p["loaded"] and p["outlined"] for p in shown), shown
    shoot(page, "experience-gallery-phone.png")
    assert not page.log, page.log


def test_viewer_opens_moves_downloads_and_closes_with_escape(env, page):
    shown = _results(env, page)
    page.click(".photo:nth-child(1) .frame")
    wait_until(page, "document.getElementById('viewer').open")
    first = page.get_attribute("#viewer", "data-photo-id")
    assert first == shown[0]["id"]
    assert page.get_attribute("#viewer-img", "src") == env.photos.url("/" + first)  # the original, not the thumbnail
    wait_until(page, "document.getElementById('viewer-img').complete && !document.getElementById('viewer-face').hidden")
    box = page.eval_on_selector("#viewer-face", "f => [f.offsetWidth, f.offsetHeight]")
    assert box[0] > 10 and box[1] > 10, box
    assert page.evaluate("document.activeElement.id") == "viewer-close"  # focus moved into the dialog
    assert page.inner_text("#viewer-title") == f"Photo 1 of {len(shown)}"
    page.screenshot(path=str(artifact("viewer-phone.png")))  # what the phone shows: the dialog fills it
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#viewer", "data-photo-id") == shown[1]["id"]
    assert page.inner_text("#viewer-title") == f"Photo 2 of {len(shown)}"
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")  # wraps to the last
    assert page.get_attribute("#viewer", "data-photo-id") == shown[-1]["id"]
    page.click("#viewer-next")
    assert page.get_attribute("#viewer", "data-photo-id") == first
    with page.expect_download() as dl:
        page.click("#viewer-download")
    assert dl.value.suggested_filename == first
    assert Path(dl.value.path()).read_bytes() == (env.faces / first).read_bytes()
    for _ in range(10):  # Tab stays inside the modal dialog
        page.keyboard.press("Tab")
        assert page.evaluate("!!document.activeElement.closest('#viewer')")
    page.keyboard.press("Escape")
    wait_until(page, "!document.getElementById('viewer').open")
    assert page.evaluate("document.activeElement === document.querySelector('.photo:nth-child(1) .frame')")
    page.set_viewport_size(DESKTOP)
    page.click(".photo:nth-child(2) .frame")
    wait_until(page, "document.getElementById('viewer-img').complete && !document.getElementById('viewer-face').hidden")
    page.screenshot(path=str(artifact("viewer-desktop.png")))
    page.click("#viewer-close")
    assert not page.evaluate("document.getElementById('viewer').open")
    assert not page.log, page.log


def test_download_all_gives_the_results_as_a_zip_with_missing_listed(env, page):
    shown = _results(env, page)
    ids = [p["id"] for p in shown]
    assert "vanishing.jpg" in ids  # matched, but its original is gone from the photo host
    with page.expect_download() as dl:
        page.click("#download-all")
    assert dl.value.suggested_filename == f"{EVENT}-photos.zip"
    zf = zipfile.ZipFile(Path(dl.value.path()))
    assert zf.testzip() is None
    assert zf.namelist() == [i for i in ids if i != "vanishing.jpg"] + ["MISSING.txt"]
    for name in zf.namelist()[:-1]:
        assert zf.read(name) == (env.faces / name).read_bytes()
    assert "vanishing.jpg\tfetch_failed" in zf.read("MISSING.txt").decode()
    assert page.get_attribute("#app", "data-state") == "done"  # the page stayed


# --------------------------------------------------------------------------- weight on a phone
@pytest.fixture(scope="module")
def bench_event(tmp_path_factory, pack_dir) -> Iterator[tuple[Path, LocalHTTPServer]]:
    """A few 24 MP event photos (../shared/bench/make_event_photos.py), ingested by URL."""
    maker = ASSETS / "bench" / "make_event_photos.py"
    if not maker.exists():
        pytest.skip(f"{maker} not found")
    out = tmp_path_factory.mktemp("bench24mp")
    subprocess.run([sys.executable, str(maker), "--out", str(out), "-n", "6", "--seed", "1234"], check=True,
                   capture_output=True, timeout=600)
    data = tmp_path_factory.mktemp("bench-data")
    app = create_app(make_settings(data, pack_dir, ingest_spaces=("v2",)))
    with LocalHTTPServer(directory=out) as srv:
        for photo in sorted(out.glob("event_*.jpg")):
            r = app.test_client().post("/api/v2/ingest", json={"event_id": "bench", "photo_id": photo.name,
                                                               "image_url": srv.url("/" + photo.name)})
            assert r.status_code == 200, r.get_json()
        yield data, srv


def _first_screen_bytes(env: Env, app, selfie: Path) -> tuple[int, int]:
    """(bytes transferred, photos shown) from opening the page to the first screen's images loaded."""
    with LiveServer(app) as live:
        page = new_page(env, PHONE)
        try:
            cdp = page.context.new_cdp_session(page)
            cdp.send("Network.enable")
            cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
            sizes: dict[str, int] = {}
            cdp.on("Network.loadingFinished", lambda e: sizes.__setitem__(e["requestId"], e["encodedDataLength"]))
            page.goto(live.url("/e/bench"))
            assert search(page, selfie) == "done"
            wait_until(page, """Array.from(document.querySelectorAll('#gallery img')).filter(i => {
                const r = i.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0;
            }).every(i => i.complete)""", timeout=120)
            page.wait_for_timeout(1500)  # let lazy images near the viewport finish too: they count
            shown = page.locator(".photo").count()
            return sum(sizes.values()), shown
        finally:
            page.context.close()


def test_first_screen_on_a_phone_transfers_under_1_5_mb(env, bench_event, pack_dir, faces_dir):
    data, _srv = bench_event
    selfie = faces_dir / "obama__10.jpg"  # pasted into none of the bench photos
    before, shown_before = _first_screen_bytes(env, create_app(make_settings(data, pack_dir, thumbnail_side=0)), selfie)
    after, shown_after = _first_screen_bytes(env, create_app(make_settings(data, pack_dir)), selfie)
    figures = {"photos_matched": shown_after, "before_originals_bytes": before, "after_thumbnails_bytes": after,
               "ratio": round(before / max(after, 1), 1), "limit_bytes": WEIGHT_LIMIT}
    artifact("page_weight.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("first screen on a phone (390x844):", figures)
    assert shown_before == shown_after >= 2
    assert after < WEIGHT_LIMIT < before, figures


# --------------------------------------------------------------------------- organizer
def sign_in(env: Env, page, key: str, event: str | None = None) -> None:
    page.goto(env.live.url("/admin?refresh_ms=500" + (f"#{event}" if event else "")))
    page.fill("#key-input", key)
    page.click("#key-form button")
    page.wait_for_selector("#events-body tr")


def row(page, event: str) -> dict:
    return page.eval_on_selector(f"#events-body tr[data-event-id='{event}']", """tr => Object.fromEntries(
        Array.from(tr.querySelectorAll('td')).map(td => [td.dataset.k, td.textContent]))""")


def test_dashboard_with_an_organizer_key(env, faces_dir):
    page = new_page(env, DESKTOP)
    try:
        sign_in(env, page, env.organizer_key)
        events = page.eval_on_selector_all("#events-body tr", "rows => rows.map(r => r.dataset.eventId)")
        assert events == [EVENT]  # not other-ev: the key is scoped to gala-*
        assert page.evaluate("sessionStorage.length") == 1 and page.evaluate("localStorage.length") == 0
        counts = row(page, EVENT)
        assert counts["photos"] == str(len(OBAMA + OTHERS) + 1) and counts["failed"] == "1", counts
        page.click(f"#events-body a[href='#{EVENT}']")
        page.wait_for_selector("#failed-list li")
        reason = page.inner_text("#failed-list li[data-photo-id='late.jpg'] .reason")
        assert "fetch_failed: host 127.0.0.1 answered 404 Not Found" in reason and "(api, 1 attempt)" in reason
        wait_until(page, "document.querySelector('#qr img') && document.querySelector('#qr img').naturalWidth > 100")
        assert page.inner_text("#attendee-link").endswith(f"/e/{EVENT}")
        shoot(page, "dashboard-desktop.png")
        page.set_viewport_size(PHONE)
        shoot(page, "dashboard-phone.png")
        page.set_viewport_size(DESKTOP)

        # the photo host is fixed: retry indexes the photo
        env.photos.set("/late.jpg", Reply(headers=JPEG, body=(faces_dir / "obama__10.jpg").read_bytes()))
        page.click("#failed-list li[data-photo-id='late.jpg'] .retry")
        wait_until(page, "document.getElementById('admin-message').textContent.includes('indexed now')")
        wait_until(page, "!document.querySelector('#failed-list li')")
        wait_until(page, f"document.querySelector(\"#events-body tr[data-event-id='{EVENT}'] td[data-k=failed]\")"
                         ".textContent === '0'")

        # set a code: the QR code carries it, and the attendee page then asks for it
        page.fill("#code-input", "gala-code-2026")
        page.click("#code-form button")
        wait_until(page, "document.getElementById('access-mode').textContent === 'code'")
        wait_until(page, "document.getElementById('attendee-link').textContent.includes('?code=gala-code-2026')")
        wait_until(page, "document.querySelector('#qr img') && document.querySelector('#qr img').naturalWidth > 100")
        shoot(page, "dashboard-code-desktop.png")
        attendee = new_page(env)
        try:
            attendee.goto(env.live.url(f"/e/{EVENT}"))
            attendee.wait_for_selector("#code-form:not([hidden])")
            assert attendee.get_attribute("#message", "data-code") == "event_code_required"
            attendee.fill("#code-input", "gala-code-2026")
            attendee.click("#code-form button")
            shown = _search_with_code(env, attendee)
            assert all("&sig=" in p["url"] and p["loaded"] for p in shown), shown  # signed thumbnails load
        finally:
            attendee.context.close()
        page.click("#open-access")
        wait_until(page, "document.getElementById('access-mode').textContent === 'open'")
        assert not page.log, page.log
    finally:
        page.context.close()


def _search_with_code(env: Env, page) -> list[dict]:
    assert search(page, env.faces / SELFIE) == "done"
    wait_until(page, "Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete)")
    return gallery(page)


def test_dashboard_deletes_an_event_only_after_its_name_is_typed(env, faces_dir):
    c = env.live.app.test_client()
    assert c.post("/api/v2/ingest", headers=ADMIN, json={"event_id": "gala-tmp", "photo_id": "p1",
                                                        "image_url": env.photos.url("/biden__1.jpg")}).status_code == 200
    page = new_page(env, DESKTOP)
    try:
        sign_in(env, page, env.organizer_key, "gala-tmp")
        page.wait_for_selector("#event-card:not([hidden])")
        assert page.inner_text("#delete-label") == "Type \u201cgala-tmp\u201d to confirm"
        page.fill("#delete-confirm", "gala-tm")
        assert page.is_disabled("#delete-button")
        page.fill("#delete-confirm", "gala-tmp")
        page.click("#delete-button")
        wait_until(page, "document.getElementById('admin-message').textContent.includes('was deleted')")
        wait_until(page, "!document.querySelector(\"#events-body tr[data-event-id='gala-tmp']\")")
    finally:
        page.context.close()
    assert c.get("/api/v2/events/gala-tmp/photos/p1/thumbnail").status_code == 404  # deleted with the event
    assert c.get("/api/v2/events/gala-tmp", headers=ADMIN).status_code == 404


def test_dashboard_counts_refresh_while_the_worker_ingests(env, firestore_db, pack_dir, faces_dir, tmp_path, procs):
    """The real photo worker ingests a Firestore event into the dashboard's store; the page's
    counts move while it runs, and a photo that cannot be fetched shows up as failed."""
    db = firestore_db
    names = (OBAMA + OTHERS)[:7]
    for i, name in enumerate(names):
        env.photos.set(f"/live{i}.jpg", Reply(headers=JPEG, body=(faces_dir / name).read_bytes(), delay=1.0))
        db.photos("gala-live").document(f"p{i}").set({"url": env.photos.url(f"/live{i}.jpg")})
    db.photos("gala-live").document("broken").set({"url": env.photos.url("/missing-on-host.jpg")})
    page = new_page(env, DESKTOP)
    seen: list[tuple[float, dict]] = []
    try:
        sign_in(env, page, env.organizer_key)
        worker_env = service_env(db, env.data, pack_dir, FACEMATCH_INGEST_SPACES="v2")
        procs.append(start_worker(worker_env, tmp_path / "worker.log", "--once", "--poll-interval", "1",
                                  "--concurrency", "1", "--compute-threads", "1", "--summary-interval", "0",
                                  "--max-attempts", "1", "--event-id", "gala-live"))
        t0 = time.monotonic()
        shot = threading.Event()
        while procs[-1].poll() is None and time.monotonic() - t0 < 180:
            if page.locator("#events-body tr[data-event-id='gala-live']").count():
                counts = row(page, "gala-live")
                if not seen or seen[-1][1] != counts:
                    seen.append((round(time.monotonic() - t0, 1), counts))
                if not shot.is_set() and 0 < int(counts["photos"]) < len(names):
                    shoot(page, "dashboard-while-worker-ingests-desktop.png")
                    shot.set()
            page.wait_for_timeout(200)
        assert procs[-1].wait(timeout=60) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        wait_until(page, f"document.querySelector(\"#events-body tr[data-event-id='gala-live'] td[data-k=photos]\")"
                         f".textContent === '{len(names)}'")
        final = row(page, "gala-live")
        seen.append((round(time.monotonic() - t0, 1), final))
    finally:
        page.context.close()
    artifact("dashboard_live_counts.json").write_text(json.dumps(seen, indent=1) + "\n")
    print("dashboard counts while the worker ingested gala-live:", seen)
    photo_counts = [int(c["photos"]) for _t, c in seen]
    assert photo_counts == sorted(photo_counts) and len(set(photo_counts)) >= 3, seen  # it moved, live
    assert final["failed"] == "1" and final["faces"] != "0", final
