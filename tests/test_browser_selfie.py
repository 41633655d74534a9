"""The selfie page in a real browser (Debian's Chromium via playwright) against live servers.

One event is ingested from ../shared/faces by image_url (a local HTTP server serves the
photos, so the thumbnails have real source URLs). Two live apps share its data directory:
one with both engines, one started without a v2 pack (v1 only). Screenshots and timings go
to test-artifacts/.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from flask_backend import create_app
from flask_backend.config import Settings
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
from tests.conftest import make_settings
from tests.http_fixtures import LocalHTTPServer, Reply

EVENT = "gala-2025"
SELFIE = "obama__4.jpg"  # held out: never ingested
SECOND_SELFIE = "obama__10.jpg"  # not ingested either
OBAMA_PHOTOS = {"obama__1.jpg", "obama__2.jpg", "obama__3.jpg", "obama__5.jpg",
                "group__two_people.jpg", "group__obama_and_biden.jpg"}
OTHER_PHOTOS = ["biden__1.jpg", "biden__2.jpg", "alex_lacamoire__2.jpg", "kit_harington__1.jpeg",
                "rose_leslie__1.jpg", "group__kit_with_rose.jpg"]
PHONE = {"width": 390, "height": 844}
PARTNER_PAGE = '<!doctype html><meta charset="utf-8"><title>partner</title><script src="{api}/static/facematch.js"></script>'


@dataclass
class Env:
    full: LiveServer  # v1 + v2, CORS allows `partner`
    v1_only: LiveServer  # started without a v2 pack, same data
    photos: LocalHTTPServer  # serves ../shared/faces (ingest sources and thumbnails)
    partner: LocalHTTPServer  # a configured frontend origin
    stranger: LocalHTTPServer  # an origin nobody configured
    selfie: Path
    no_face: Path
    browser: object


def _partner_server(api: dict, selfie: bytes) -> LocalHTTPServer:
    server = LocalHTTPServer()
    server.set("/partner.html", lambda info: Reply(
        headers={"Content-Type": "text/html; charset=utf-8"}, body=PARTNER_PAGE.format(api=api["url"]).encode()))
    server.set("/selfie.jpg", Reply(headers={"Content-Type": "image/jpeg"}, body=selfie))
    return server


@pytest.fixture(scope="module")
def env(faces_dir, pack_dir, tmp_path_factory) -> Iterator[Env]:
    require_browser()
    tmp = tmp_path_factory.mktemp("browser")
    data = tmp / "data"
    no_face = tmp / "landscape.jpg"
    Image.linear_gradient("L").resize((640, 480)).convert("RGB").save(no_face, "JPEG")
    api: dict[str, str] = {}
    selfie_bytes = (faces_dir / SELFIE).read_bytes()
    with LocalHTTPServer(directory=faces_dir) as photos, _partner_server(api, selfie_bytes) as partner, \
            _partner_server(api, selfie_bytes) as stranger:
        full_app = create_app(make_settings(data, pack_dir, cors_origins=(partner.base_url,)))
        client = full_app.test_client()
        for name in sorted(OBAMA_PHOTOS - {SELFIE}) + OTHER_PHOTOS:
            r = client.post("/api/v2/ingest", json={"event_id": EVENT, "photo_id": name, "image_url": photos.url("/" + name)})
            assert r.status_code == 200, r.get_json()
        v1_app = create_app(Settings.from_env({}, data_dir=data, model_root=tmp / "no-models", v2_pack="buffalo_l",
                                              allow_private_urls=True, log_level="WARNING"))
        with LiveServer(full_app, capture=("/api/v2/match",)) as full, LiveServer(v1_app) as v1_only, launch_browser() as browser:
            api["url"] = full.base_url
            yield Env(full, v1_only, photos, partner, stranger, faces_dir / SELFIE, no_face, browser)


@pytest.fixture
def page(env):
    context = env.browser.new_context(viewport=PHONE, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.log = []  # type: ignore[attr-defined]
    pg.on("request", lambda req: pg.log.append((req.method, req.url)))
    pg.on("console", lambda msg: msg.type == "error" and pg.log.append(("console", msg.text)))
    pg.on("pageerror", lambda exc: pg.log.append(("pageerror", str(exc))))
    yield pg
    context.close()


def record_timing(name: str, ms: float) -> None:
    """Browser-side timings (performance marks of the page) collected in test-artifacts/timings.json."""
    path = artifact("timings.json")
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = round(ms, 1)
    path.write_text(json.dumps(data, indent=2) + "\n")


def api_calls(page, path: str) -> list[str]:
    return [url for method, url in page.log if method == "POST" and url.endswith(path)]


def measure(page, start: str, end: str) -> float:
    return page.evaluate(f"""() => {{
        const a = performance.getEntriesByName('{start}')[0], b = performance.getEntriesByName('{end}')[0];
        return a && b ? b.startTime - a.startTime : -1; }}""")


def uploaded_sizes(bodies: list) -> list[tuple[int, int]]:
    """(width, height) of every JPEG inside the given multipart bodies."""
    sizes = []
    for body in bodies:
        for m in re.finditer(rb"\xff\xd8.*?\xff\xd9(?=\r\n--)", body, re.DOTALL):
            sizes.append(Image.open(io.BytesIO(m.group(0))).size)
    return sizes


def test_v2_gallery_for_an_identity_with_several_photos(env, page):
    page.goto(env.full.url(f"/e/{EVENT}?page_size=4"))
    wait_until(page, "document.getElementById('event-size').textContent.includes('photos')")
    assert search(page, env.selfie) == "done"
    wait_until(page, "performance.getEntriesByName('fm:thumbs-loaded').length > 0")
    shown = gallery(page)
    assert page.get_attribute("#results", "data-via") == "v2"
    assert "v2" in page.inner_text("#via")
    ids = [p["id"] for p in shown]
    assert len(ids) == 4 and set(ids) <= OBAMA_PHOTOS, ids  # first page of 4, only his photos
    assert all(p["url"] for p in shown), "match rows carry no 'url': no thumbnails"
    assert all(p["loaded"] and p["outlined"] for p in shown), shown
    timings = {"upload_to_gallery_ms": measure(page, "fm:search-start", "fm:gallery"),
               "upload_to_thumbnails_ms": measure(page, "fm:search-start", "fm:thumbs-loaded"),
               "pick_to_gallery_ms": measure(page, "fm:selfie-picked", "fm:gallery")}
    shoot(page, "v2-gallery-phone.png")
    # "all my photos": load more until the last page
    page.click("#more")
    wait_until(page, "document.querySelectorAll('.photo').length > 4")
    page.wait_for_selector("#more", state="hidden")
    ids = [p["id"] for p in gallery(page)]
    assert set(ids) <= OBAMA_PHOTOS and len(ids) >= 5 and len(ids) == len(set(ids)), ids
    assert page.inner_text("#results-title") == f"{len(ids)} photos of you"
    page.set_viewport_size({"width": 1280, "height": 900})
    page.wait_for_timeout(200)
    shoot(page, "v2-gallery-desktop.png")
    assert len(api_calls(page, "/api/v2/match")) == 2 and not api_calls(page, "/api/v1/match")
    # the selfie was downscaled in the browser (1480x832 on disk) and re-encoded
    sizes = uploaded_sizes([h.body for h in env.full.hits_to("/api/v2/match", "POST")][-2:])
    assert sizes and all(size == (1280, 720) for size in sizes), sizes
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert not [e for e in page.log if e[0] in ("console", "pageerror")], page.log
    for name, value in timings.items():
        record_timing(name, value)


def test_falls_back_to_v1_when_the_server_has_no_v2_pack(env, page):
    page.goto(env.v1_only.url(f"/e/{EVENT}"))
    page.set_input_files("#selfie", str(env.selfie))
    page.wait_for_selector(".preview img")
    page.click("#search")
    page.screenshot(path=str(artifact("searching-phone.png")))  # usually catches the progress state
    page.wait_for_selector("#app[data-state=done], #app[data-state=error], #app[data-state=empty]")
    assert page.get_attribute("#app", "data-state") == "done"
    wait_until(page, "performance.getEntriesByName('fm:thumbs-loaded').length > 0")
    assert page.get_attribute("#results", "data-via") == "v1"
    shown = gallery(page)
    ids = {p["id"] for p in shown}
    assert len(ids) >= 3 and ids <= OBAMA_PHOTOS, ids
    assert all(p["loaded"] and p["outlined"] for p in shown if p["url"]), shown
    assert len(api_calls(page, "/api/v2/match")) == 1 and len(api_calls(page, "/api/v1/match")) == 1
    assert [h.status for h in env.v1_only.hits_to("/api/v2/match")][-1:] == [503]
    shoot(page, "v1-fallback-phone.png")
    record_timing("v1_fallback_upload_to_gallery_ms", measure(page, "fm:search-start", "fm:gallery"))


def test_two_selfies_are_combined_and_can_be_removed(env, page):
    page.goto(env.full.url(f"/e/{EVENT}"))
    page.set_input_files("#selfie", str(env.selfie))
    page.wait_for_selector(".preview img")
    page.set_input_files("#more-selfies", str(env.selfie.parent / SECOND_SELFIE))
    page.wait_for_selector(".preview:nth-child(2) img")
    page.click("#search")
    page.wait_for_selector("#app[data-state=done], #app[data-state=error], #app[data-state=empty]")
    assert page.get_attribute("#app", "data-state") == "done"
    assert {p["id"] for p in gallery(page)} <= OBAMA_PHOTOS
    assert len(uploaded_sizes([env.full.hits_to("/api/v2/match", "POST")[-1].body])) == 2
    # someone else's face as the second selfie is refused with a clear message
    page.click(".preview:nth-child(2) .remove")
    assert page.locator(".preview").count() == 1
    page.set_input_files("#more-selfies", str(env.selfie.parent / "biden__2.jpg"))
    page.wait_for_selector(".preview:nth-child(2) img")
    page.click("#search")
    page.wait_for_selector("#app[data-state=error]")
    assert page.get_attribute("#message", "data-code") == "selfies_disagree"
    assert api_calls(page, "/api/v1/match") == []


def test_no_face_shows_a_message_and_does_not_fall_back(env, page):
    page.goto(env.full.url(f"/e/{EVENT}"))
    assert search(page, env.no_face) == "error"
    assert page.get_attribute("#message", "data-code") == "no_face"
    assert "couldn't find a face" in page.inner_text("#message")
    assert len(api_calls(page, "/api/v2/match")) == 1
    assert api_calls(page, "/api/v1/match") == [], "no_face must not be retried on v1"
    shoot(page, "no-face-phone.png")


def test_unknown_event_shows_a_message(env, page):
    page.goto(env.full.url("/e/no-such-event"))
    page.wait_for_selector("#message:not([hidden])")
    assert page.get_attribute("#message", "data-code") == "unknown_event"
    assert "can't find the event" in page.inner_text("#message") and "no-such-event" in page.inner_text("#message")
    assert page.is_hidden("#selfie-card")
    shoot(page, "unknown-event-phone.png")
    # the match call itself says so too, and the client does not try v1
    result = page.evaluate("""async () => {
        const c = document.createElement('canvas'); c.width = c.height = 64;
        const blob = await new Promise(r => c.toBlob(r, 'image/jpeg'));
        try { await FaceMatch.findMyPhotos({eventId: 'no-such-event', selfie: blob}); return {ok: true}; }
        catch (e) { return {ok: false, code: e.code, via: e.via}; } }""")
    assert result == {"ok": False, "code": "unknown_event", "via": "v2"}
    assert api_calls(page, "/api/v1/match") == []


CROSS_ORIGIN = """async ({api, event}) => {
    const selfie = await (await fetch('/selfie.jpg')).blob();
    const out = {};
    try {
        const r = await FaceMatch.findMyPhotos({eventId: event, selfie, baseUrl: api});
        out.multipart = {ok: true, via: r.via, ids: r.photos.map(p => p.photoId)};
    } catch (e) { out.multipart = {ok: false, code: e.code, via: e.via}; }
    let emb;
    try {
        emb = await FaceMatch.embedSelfie({selfie, baseUrl: api});
        out.embed = {ok: true, via: emb.via};
    } catch (e) {
        out.embed = {ok: false, code: e.code};
        emb = {via: 'v2', embedding: Array(128).fill(0.1)};  // still try the JSON (preflighted) match
    }
    try {
        const r = await FaceMatch.findMyPhotos({eventId: event, embedding: emb, baseUrl: api});
        out.json = {ok: true, via: r.via, ids: r.photos.map(p => p.photoId)};
    } catch (e) { out.json = {ok: false, code: e.code, via: e.via}; }
    return out;
}"""


def test_cross_origin_page_works_only_from_a_configured_origin(env, page):
    args = {"api": env.full.base_url, "event": EVENT}
    page.goto(env.partner.url("/partner.html"))
    allowed = page.evaluate(CROSS_ORIGIN, args)
    assert allowed["multipart"]["ok"] and allowed["multipart"]["via"] == "v2", allowed
    assert set(allowed["multipart"]["ids"]) <= OBAMA_PHOTOS and len(allowed["multipart"]["ids"]) >= 4
    assert allowed["json"]["ok"] and allowed["json"]["via"] == "v2", allowed
    preflights = [h for h in env.full.hits_to("/api/v2/match", "OPTIONS") if h.origin == env.partner.base_url]
    assert preflights and preflights[-1].status == 204, "the JSON match needs a CORS preflight"

    page.goto(env.stranger.url("/partner.html"))
    refused = page.evaluate(CROSS_ORIGIN, args)
    assert refused["multipart"] == {"ok": False, "code": "network", "via": "v1"}, refused
    assert refused["embed"] == {"ok": False, "code": "network"}, refused
    assert refused["json"] == {"ok": False, "code": "network", "via": "v2"}, refused
    posts = [h for h in env.full.hits_to("/api/v2/match", "POST") if h.origin == env.stranger.base_url]
    refusals = [h for h in env.full.hits_to("/api/v2/match", "OPTIONS") if h.origin == env.stranger.base_url]
    # the simple multipart POST was sent (its answer hidden from the page); the JSON one stopped at the preflight
    assert len(posts) == 1 and len(refusals) == 1


def test_page_is_usable_on_a_phone_without_an_event(env, page):
    page.goto(env.full.url("/"))
    assert page.is_visible("#event-form") and page.is_hidden("#selfie-card")
    shoot(page, "home-phone.png")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "no horizontal scrolling on a phone"
    page.fill("#event-input", EVENT)
    page.click("#event-form button")
    page.wait_for_url(f"**/e/{EVENT}")
    assert page.is_visible("#selfie-card") and page.is_visible("label[for=selfie]")
    shoot(page, "event-phone.png")


def test_docs_page_renders(env, page):
    page.set_viewport_size({"width": 1100, "height": 900})
    page.goto(env.full.url("/docs"))
    assert page.locator("article.op").count() >= 12
    assert page.is_visible("#schema-MatchV2Response") and page.is_visible("text=/openapi.json")
    page.screenshot(path=str(artifact("docs.png")))
    assert not [e for e in page.log if e[0] in ("console", "pageerror")], page.log
