"""The selfie page on a `code` event, in Debian's Chromium: the code from the link (and gone
from the address bar), the code asked for, a wrong code's message, and no referrer to the
photo host. The photos (../shared/faces) are ingested by URL from a local HTTP server, so the
gallery loads real thumbnails from another origin."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from flask_backend import create_app
from tests.browser_fixtures import LiveServer, launch_browser, require_browser, wait_until
from tests.conftest import make_settings
from tests.http_fixtures import LocalHTTPServer

EVENT = "priv-gala"
CODE = "gala-7Q4K"
SELFIE = "obama__4.jpg"  # never ingested
PHOTOS = ["obama__1.jpg", "obama__2.jpg", "biden__1.jpg", "rose_leslie__1.jpg"]
PHONE = {"width": 390, "height": 844}


@dataclass
class Env:
    site: LiveServer
    photos: LocalHTTPServer
    browser: object
    selfie: str


@pytest.fixture(scope="module")
def env(faces_dir, pack_dir, tmp_path_factory) -> Iterator[Env]:
    require_browser()
    data = tmp_path_factory.mktemp("browser-access") / "data"
    with LocalHTTPServer(directory=faces_dir) as photos:
        app = create_app(make_settings(data, pack_dir, rate_limits_enabled=True))
        client = app.test_client()
        for name in PHOTOS:
            r = client.post("/api/v2/ingest", json={"event_id": EVENT, "photo_id": name,
                                                    "image_url": photos.url("/" + name)})
            assert r.status_code == 200, r.get_json()
        assert client.put(f"/api/v2/events/{EVENT}/access", json={"mode": "code", "code": CODE}).status_code == 200
        with LiveServer(app) as site, launch_browser() as browser:
            yield Env(site, photos, browser, str(faces_dir / SELFIE))


@pytest.fixture
def page(env):
    context = env.browser.new_context(viewport=PHONE)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.sent = []  # type: ignore[attr-defined]
    pg.on("request", lambda req: pg.sent.append((req.method, req.url, req.headers)))
    yield pg
    context.close()


def _search(page) -> str:
    page.set_input_files("#selfie", page.selfie_path)
    page.wait_for_selector(".preview img")
    page.click("#search")
    page.wait_for_selector("#app[data-state=done], #app[data-state=error], #app[data-state=empty]")
    return page.get_attribute("#app", "data-state")


def _api_calls(page) -> list[tuple[str, str, dict]]:
    return [c for c in page.sent if "/api/" in c[1]]


def test_code_from_the_link_is_used_and_removed_from_the_address_bar(env, page):
    page.selfie_path = env.selfie
    env.photos.reset()
    page.goto(env.site.url(f"/e/{EVENT}?code={CODE}&page_size=10"))
    wait_until(page, "document.getElementById('event-size').textContent.includes('photos')")
    assert CODE not in page.url and page.url.endswith(f"/e/{EVENT}?page_size=10")
    assert _search(page) == "done"
    wait_until(page, "performance.getEntriesByName('fm:thumbs-loaded').length > 0")
    ids = set(page.eval_on_selector_all(".photo", "els => els.map(e => e.dataset.photoId)"))
    assert ids == {"obama__1.jpg", "obama__2.jpg"}
    calls = [c for c in _api_calls(page) if "/thumbnail?" not in c[1]]
    assert calls and all(h.get("x-event-code") == CODE for _m, _u, h in calls), calls
    # gallery thumbnails are <img>s: the match answer signed their URLs instead (issue 12)
    thumbs = [url for _m, url, _h in _api_calls(page) if "/thumbnail?" in url]
    assert len(thumbs) == 2 and all("&exp=" in url and "&sig=" in url for url in thumbs), thumbs
    assert page.sent[0][1].endswith(f"?code={CODE}&page_size=10")  # the link itself
    assert all(CODE not in url for _m, url, _h in page.sent[1:])  # never in a URL after it
    page.click(".photo .frame")  # the viewer shows the original, from the photo host
    wait_until(page, "document.getElementById('viewer-img').complete")
    originals = env.photos.records()
    assert originals and all("referer" not in {k.lower() for k in r.headers} for r in originals)
    page.keyboard.press("Escape")
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    page.go_back()  # the entry was replaced, not pushed: Back does not bring the code back
    assert CODE not in page.url


def test_code_in_the_fragment_works_too_and_is_removed(env, page):
    page.selfie_path = env.selfie
    page.goto(env.site.url(f"/e/{EVENT}#code={CODE}"))
    wait_until(page, "document.getElementById('event-size').textContent.includes('photos')")
    assert CODE not in page.url and page.url.endswith(f"/e/{EVENT}")
    assert page.is_visible("#selfie-card") and page.is_hidden("#code-form")


def test_the_code_is_asked_for_when_the_event_needs_one(env, page):
    page.selfie_path = env.selfie
    page.goto(env.site.url(f"/e/{EVENT}"))
    page.wait_for_selector("#code-form:not([hidden])")
    assert page.is_hidden("#selfie-card")
    assert page.get_attribute("#message", "data-code") == "event_code_required"
    assert "private" in page.inner_text("#message")
    page.fill("#code-input", CODE)
    page.click("#code-form button")
    page.wait_for_selector("#selfie-card:not([hidden])")
    assert page.is_hidden("#code-form") and page.is_hidden("#message")
    assert _search(page) == "done"
    assert page.eval_on_selector_all(".photo", "els => els.length") == 2


def test_a_wrong_code_gets_a_clear_message_and_another_try(env, page):
    page.selfie_path = env.selfie
    page.goto(env.site.url(f"/e/{EVENT}?code=not-the-code"))
    page.wait_for_selector("#code-form:not([hidden])")
    assert "not-the-code" not in page.url
    assert page.get_attribute("#message", "data-code") == "event_code_invalid"
    assert "isn't right" in page.inner_text("#message")
    page.fill("#code-input", CODE)
    page.click("#code-form button")
    page.wait_for_selector("#selfie-card:not([hidden])")
    assert _search(page) == "done"
