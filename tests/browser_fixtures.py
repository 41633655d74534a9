"""Real-browser test support: Debian's Chromium driven by Python playwright, and a live app.

    with launch_browser() as browser: ...          # skips when chromium/playwright is missing
    with LiveServer(app) as srv: srv.url("/e/x")   # the real Flask app, threaded, 127.0.0.1

Chromium is never downloaded (``playwright install`` is not used): the system binary runs
with flags that keep it off the (closed) network.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
from werkzeug.serving import make_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
]


def require_browser() -> None:
    """Skip (with the reason) unless Debian's chromium and Python playwright are installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium chromium-driver")
    pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed (pip install playwright)")


@contextmanager
def launch_browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def wait_until(page: Any, expression: str, timeout: float = 30.0) -> None:
    """Poll ``expression`` with page.evaluate: the page's CSP forbids the eval that wait_for_function needs."""
    end = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > end:
            raise TimeoutError(f"still false after {timeout}s: {expression}")
        time.sleep(0.05)


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def shoot(page, name: str) -> None:
    """Full-page screenshot once every loaded thumbnail is decoded (they decode asynchronously)."""
    page.evaluate("""() => Promise.all(Array.from(document.images).map(img =>
        img.complete ? img.decode().catch(() => null)
                     : new Promise(done => { img.onload = img.onerror = done; setTimeout(done, 5000); })))""")
    page.screenshot(path=str(artifact(name)), full_page=True)


def search(page, selfie: Path) -> str:
    page.set_input_files("#selfie", str(selfie))
    page.wait_for_selector(".preview img")
    page.click("#search")
    page.wait_for_selector("#app[data-state=done], #app[data-state=error], #app[data-state=empty]")
    return page.get_attribute("#app", "data-state")


def gallery(page) -> list[dict]:
    return page.eval_on_selector_all(".photo", """els => els.map(f => {
        const img = f.querySelector('img'), face = f.querySelector('.face');
        return {id: f.dataset.photoId, url: img ? img.src : null,
                loaded: !!img && img.complete && img.naturalWidth > 0,
                outlined: !!face && !face.hidden && face.offsetWidth > 4 && face.offsetHeight > 4};
    })""")


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    origin: str | None
    status: int
    body: bytes | None = None  # kept for paths in LiveServer.capture only


class LiveServer:
    """A WSGI app served by werkzeug in a background thread on a free 127.0.0.1 port.

    ``hits`` records every request the server answered (preflights included, which the
    browser's own network events do not show).
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", capture: tuple[str, ...] = ()) -> None:
        self.app = app
        self.hits: list[Hit] = []
        self.capture = capture
        self._server = make_server(host, 0, self._recording, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def _recording(self, environ: dict, start_response: Any) -> Any:
        body = None
        if environ.get("PATH_INFO") in self.capture and environ["REQUEST_METHOD"] == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)

        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            self.hits.append(Hit(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                                 environ.get("HTTP_ORIGIN"), int(status.split()[0]), body))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)

    def hits_to(self, path: str, method: str | None = None) -> list[Hit]:
        return [h for h in self.hits if h.path == path and (method is None or h.method == method)]

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
