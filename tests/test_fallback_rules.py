"""Unit tests of facematch.js's v2 → v1 fallback rules.

The real client (flask_backend/static/facematch.js) runs in Node, or in headless Chromium
when Node is absent, against a scripted ``fetch``: every case records which endpoints were
called and what the client returned or threw. No server, no network.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parent.parent / "flask_backend" / "static" / "facematch.js"
CHROMIUM = Path("/usr/bin/chromium")

# Scripted-fetch harness: `async (FM) => results`. Works in Node 18+ and in browsers.
HARNESS = r"""
async (FM) => {
  const json = (status, body) => ({ status, text: JSON.stringify(body) });
  const err = (status, code) => json(status, { error: { code, message: code + " message", request_id: "rid" } });
  const html = (status) => ({ status, text: "<html>bad gateway</html>" });
  const ok2 = json(200, { event_id: "ev", matches: [
      { photo_id: "p1", score: 0.9, bbox: [1, 2, 3, 4], url: "http://img/p1.jpg",
        thumbnail_url: "/api/v2/events/ev/photos/p1/thumbnail?v=abc", image_width: 640, image_height: 480 },
      { photo_id: "p2", score: 0.8, bbox: [5, 6, 7, 8] }],
    model: "m2", threshold: 0.4, mode: "all", next_cursor: "CUR2", total: 3, queries: 1, combine: "single",
    query_source: "image" });
  const ok1 = json(200, { event_id: "ev", matches: [{ photo_id: "p1", distance: 0.3, score: 0.7, bbox: [1, 2, 3, 4] }],
    model: "m1", tolerance: 0.6, mode: "all", next_cursor: null, total: 1, queries: 1, combine: "single" });
  const embed2 = json(200, { embedding: [0.1, 0.2], bbox: [1, 2, 3, 4], det_score: 0.9, faces_detected: 1, model: "m2" });
  const analyze1 = json(200, { descriptor: [0.3, 0.4], bbox: [1, 2, 3, 4], det_score: 1, faces_detected: 1, model: "m1" });

  function fakeFetch(routes, calls) {
    return (url, init) => {
      const path = new URL(url, "http://api.test").pathname;
      let body = init.body;
      if (typeof body === "string") body = JSON.parse(body);
      else if (body && body.entries) body = Array.from(body.entries()).map(([k, v]) => [k, typeof v === "string" ? v : "blob:" + v.size]);
      calls.push({ path, url, body, headers: Object.assign({}, init.headers) });
      const queue = routes[path] || [];
      const spec = queue.length > 1 ? queue.shift() : queue[0];
      if (!spec) return Promise.resolve({ ok: false, status: 404, json: () => Promise.reject(new SyntaxError("not json")) });
      if (spec === "network") return Promise.reject(new TypeError("Failed to fetch"));
      if (spec === "hang") return new Promise((_, reject) => {
        init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      });
      return Promise.resolve({ ok: spec.status >= 200 && spec.status < 300, status: spec.status,
                               headers: { get: (n) => (n === "Retry-After" && spec.retryAfter) || null },
                               json: async () => JSON.parse(spec.text) });
    };
  }

  async function run(routes, opts, fn) {
    const calls = [];
    const selfie = new Blob([new Uint8Array(10)], { type: "image/jpeg" });
    const base = { eventId: "ev", selfie, baseUrl: "http://api.test/", timeoutMs: 200, fetch: fakeFetch(routes, calls) };
    const all = Object.assign(base, opts || {});
    try {
      const res = await (fn || FM.findMyPhotos)(all);
      const out = { ok: true, via: res.via, reason: res.reason, calls, res };
      if (res.next) {
        const page2 = await res.next();
        out.page2 = { via: page2.via, photos: page2.photos.length };
      }
      delete res.next;
      return out;
    } catch (e) {
      return { ok: false, name: e.name, code: e.code, status: e.status, via: e.via, reason: e.reason,
               requestId: e.requestId, message: e.message, retryAfter: e.retryAfter, calls };
    }
  }

  const M2 = "/api/v2/match", M1 = "/api/v1/match";
  const cases = {};
  const v2Status = {
    "200": [ok2], "503": [err(503, "engine_not_ready")], "404_not_indexed": [err(404, "not_indexed")],
    "404_unknown_event": [err(404, "unknown_event")], "404_no_route": [html(404)],
    "400": [err(400, "invalid_field")], "401": [err(401, "unauthorized")], "413": [err(413, "image_too_large")],
    "415": [err(415, "unsupported_image")], "422": [err(422, "no_face")], "429": [err(429, "rate_limited")],
    "409": [err(409, "space_mismatch")], "500": [err(500, "internal_error")], "502": [html(502)],
    "403_required": [err(403, "event_code_required")], "403_invalid": [err(403, "event_code_invalid")],
    "403_forbidden": [err(403, "forbidden")],
    "timeout": ["hang"], "network": ["network"],
  };
  for (const [name, spec] of Object.entries(v2Status)) {
    cases["v2_" + name] = await run({ [M2]: spec, [M1]: [ok1] });
  }
  const ctl = new AbortController();
  const pending = run({ [M2]: ["hang"], [M1]: [ok1] }, { signal: ctl.signal, timeoutMs: 5000 });
  setTimeout(() => ctl.abort(), 20);
  cases.user_abort = await pending;
  cases.v1_also_fails = await run({ [M2]: [err(503, "engine_not_ready")], [M1]: [err(422, "no_face")] });
  cases.v1_unreachable = await run({ [M2]: ["network"], [M1]: ["network"] });
  cases.paging_v2 = await run({ [M2]: [ok2, ok2] , [M1]: [ok1] }, { mode: "all", pageSize: 2 });
  cases.paging_after_fallback = await run({ [M2]: [err(503, "engine_not_ready")],
    [M1]: [json(200, Object.assign(JSON.parse(ok1.text), { next_cursor: "CUR1" })), ok1] }, { mode: "all", pageSize: 1 });
  cases.photo_url_fn = await run({ [M2]: [ok2] }, { photoUrl: (id) => "/photos/" + id });
  cases.two_selfies = await run({ [M2]: [ok2] }, { selfie: null, selfies: [new Blob(["a"]), new Blob(["bb"])], topK: 5 });
  cases.embed_v2 = await run({ "/api/v2/embed": [embed2], "/api/face/analyze": [analyze1] }, {}, FM.embedSelfie);
  cases.embed_fallback = await run({ "/api/v2/embed": [err(503, "engine_not_ready")], "/api/face/analyze": [analyze1] }, {}, FM.embedSelfie);
  cases.embed_no_face = await run({ "/api/v2/embed": [err(422, "no_face")], "/api/face/analyze": [analyze1] }, {}, FM.embedSelfie);
  cases.match_embedding_v2 = await run({ [M2]: [ok2] }, { selfie: null, embedding: { via: "v2", embedding: [0.1, 0.2] } });
  cases.match_embedding_v2_down = await run({ [M2]: [err(503, "engine_not_ready")], [M1]: [ok1] },
                                           { selfie: null, embedding: { via: "v2", embedding: [0.1, 0.2] } });
  cases.match_embedding_v1 = await run({ [M2]: [ok2], [M1]: [ok1] }, { selfie: null, embedding: { via: "v1", embedding: [0.3] } });
  cases.no_selfie = await run({ [M2]: [ok2] }, { selfie: null });
  cases.code_on_every_call = await run({ [M2]: [err(503, "engine_not_ready")],
    [M1]: [json(200, Object.assign(JSON.parse(ok1.text), { next_cursor: "CUR1" })), ok1] },
    { mode: "all", pageSize: 1, eventCode: "gala-7Q4K" });
  cases.retry_after = await run({ [M2]: [Object.assign(err(429, "rate_limited"), { retryAfter: "42" })], [M1]: [ok1] });
  const table = {};
  for (const [status, code] of [[503, "engine_not_ready"], [404, "not_indexed"], [404, "unknown_event"], [400, "bad_request"],
                                [413, "image_too_large"], [415, "unsupported_image"], [422, "no_face"], [401, "unauthorized"],
                                [429, "rate_limited"], [409, "space_mismatch"], [500, "internal_error"],
                                [403, "event_code_required"], [403, "event_code_invalid"], [403, "forbidden"]]) {
    table[status + " " + code] = FM.fallbackReason({ kind: "http", status, code });
  }
  table.timeout = FM.fallbackReason({ kind: "timeout" });
  table.network = FM.fallbackReason({ kind: "network" });
  table.abort = FM.fallbackReason({ kind: "abort" });
  return { cases, table };
}
"""


def _run_in_node(node: str) -> dict:
    script = f"const FM = require({json.dumps(str(CLIENT))});\n({HARNESS})(FM).then(r => console.log(JSON.stringify(r)));"
    out = subprocess.run([node, "-"], input=script, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def _run_in_chromium() -> dict:
    from tests.browser_fixtures import launch_browser

    with launch_browser() as browser:
        page = browser.new_page()
        page.set_content("<!doctype html><title>fallback</title>")
        page.add_script_tag(content=CLIENT.read_text())
        return page.evaluate(f"({HARNESS})(window.FaceMatch)")


@pytest.fixture(scope="module")
def js() -> dict:
    node = shutil.which("node") or shutil.which("nodejs")
    if node:
        return _run_in_node(node)
    if CHROMIUM.exists():
        pytest.importorskip("playwright", reason="neither Node.js nor playwright is installed")
        return _run_in_chromium()
    pytest.skip("neither Node.js nor /usr/bin/chromium is installed: cannot run facematch.js")


def paths(case: dict) -> list[str]:
    return [c["path"] for c in case["calls"]]


FALLS_BACK = ["503", "404_not_indexed", "404_no_route", "409", "500", "502", "timeout", "network"]
SHOWN_TO_USER = {
    "404_unknown_event": "unknown_event", "400": "invalid_field", "401": "unauthorized", "413": "image_too_large",
    "415": "unsupported_image", "422": "no_face", "429": "rate_limited",
    "403_required": "event_code_required", "403_invalid": "event_code_invalid", "403_forbidden": "forbidden",
}


def test_v2_success_is_served_by_v2(js):
    case = js["cases"]["v2_200"]
    assert case["ok"] and case["via"] == "v2" and case["reason"] is None
    assert paths(case)[:1] == ["/api/v2/match"] and "/api/v1/match" not in paths(case)
    photos = case["res"]["photos"]
    assert photos[0] == {"photoId": "p1", "score": 0.9, "url": "http://img/p1.jpg", "bbox": [1, 2, 3, 4],
                         # this API's relative thumbnail URL, made absolute for a page on another origin
                         "thumbnailUrl": "http://api.test/api/v2/events/ev/photos/p1/thumbnail?v=abc",
                         "imageWidth": 640, "imageHeight": 480}
    assert photos[1]["url"] is None  # no url in the row and no photoUrl(): null, never a guess
    assert photos[1]["thumbnailUrl"] is None and photos[1]["imageWidth"] is None


@pytest.mark.parametrize("name", FALLS_BACK)
def test_falls_back_to_v1(js, name):
    case = js["cases"][f"v2_{name}"]
    assert case["ok"], case
    assert case["via"] == "v1" and case["reason"]
    assert paths(case) == ["/api/v2/match", "/api/v1/match"]
    assert case["res"]["photos"][0]["distance"] == 0.3


@pytest.mark.parametrize("name", sorted(SHOWN_TO_USER))
def test_errors_v1_would_repeat_are_shown_not_retried(js, name):
    case = js["cases"][f"v2_{name}"]
    assert not case["ok"]
    assert case["code"] == SHOWN_TO_USER[name] and case["via"] == "v2" and case["name"] == "FaceMatchError"
    assert case["requestId"] == "rid" and case["message"].endswith("message")
    assert paths(case) == ["/api/v2/match"], "no fallback call for an error v1 would repeat"


def test_reason_table(js):
    table = js["table"]
    for key in ("503 engine_not_ready", "404 not_indexed", "409 space_mismatch", "500 internal_error", "timeout", "network"):
        assert table[key], key
    for key in ("404 unknown_event", "400 bad_request", "413 image_too_large", "415 unsupported_image",
                "422 no_face", "401 unauthorized", "429 rate_limited", "abort",
                "403 event_code_required", "403 event_code_invalid", "403 forbidden"):
        assert table[key] is None, key


def test_user_abort_is_not_a_fallback(js):
    case = js["cases"]["user_abort"]
    assert not case["ok"] and case["code"] == "aborted"
    assert paths(case) == ["/api/v2/match"]


def test_v1_failure_after_fallback_is_reported_with_the_reason(js):
    case = js["cases"]["v1_also_fails"]
    assert not case["ok"] and case["code"] == "no_face" and case["via"] == "v1" and "not ready" in case["reason"]
    case = js["cases"]["v1_unreachable"]
    assert not case["ok"] and case["code"] == "network" and case["via"] == "v1"


def test_paging_stays_in_the_space_that_issued_the_cursor(js):
    case = js["cases"]["paging_v2"]
    assert case["page2"] == {"via": "v2", "photos": 2}
    first, second = case["calls"]
    assert ["mode", "all"] in first["body"] and ["page_size", "2"] in first["body"]
    assert ["cursor", "CUR2"] in second["body"] and second["path"] == "/api/v2/match"
    case = js["cases"]["paging_after_fallback"]
    assert case["via"] == "v1" and case["page2"]["via"] == "v1"
    assert paths(case) == ["/api/v2/match", "/api/v1/match", "/api/v1/match"]
    assert ["cursor", "CUR1"] in case["calls"][2]["body"]


def test_request_shape(js):
    case = js["cases"]["two_selfies"]
    call = case["calls"][0]
    assert call["url"] == "http://api.test/api/v2/match"  # baseUrl's trailing slash handled
    body = call["body"]
    assert ["event_id", "ev"] in body and ["top_k", "5"] in body
    assert [k for k, _ in body].count("image") == 2
    assert js["cases"]["photo_url_fn"]["res"]["photos"][1]["url"] == "/photos/p2"
    case = js["cases"]["no_selfie"]
    assert not case["ok"] and case["code"] == "missing_image" and case["calls"] == []


def test_embed_selfie(js):
    case = js["cases"]["embed_v2"]
    assert case["ok"] and case["via"] == "v2" and case["res"]["embedding"] == [0.1, 0.2]
    case = js["cases"]["embed_fallback"]
    assert case["ok"] and case["via"] == "v1" and case["res"]["embedding"] == [0.3, 0.4]
    assert paths(case) == ["/api/v2/embed", "/api/face/analyze"]
    case = js["cases"]["embed_no_face"]
    assert not case["ok"] and case["code"] == "no_face" and paths(case) == ["/api/v2/embed"]


def test_match_by_cached_embedding(js):
    case = js["cases"]["match_embedding_v2"]
    assert case["ok"] and case["via"] == "v2"
    assert case["calls"][0]["body"]["user_embedding"] == [0.1, 0.2]
    case = js["cases"]["match_embedding_v2_down"]  # no selfie to re-send: cannot fall back
    assert not case["ok"] and case["code"] == "engine_not_ready" and paths(case) == ["/api/v2/match"]
    case = js["cases"]["match_embedding_v1"]  # a v1 descriptor is matched in v1 only
    assert case["ok"] and case["via"] == "v1" and paths(case) == ["/api/v1/match"]
    assert case["calls"][0]["body"]["descriptor"] == [0.3]


def test_event_code_goes_with_every_call_as_a_header(js):
    case = js["cases"]["code_on_every_call"]
    assert case["ok"] and case["via"] == "v1" and case["page2"]["via"] == "v1"
    assert paths(case) == ["/api/v2/match", "/api/v1/match", "/api/v1/match"]
    assert all(c["headers"].get("X-Event-Code") == "gala-7Q4K" for c in case["calls"]), case["calls"]
    assert all("gala-7Q4K" not in c["url"] for c in case["calls"])
    assert "X-Event-Code" not in js["cases"]["v2_200"]["calls"][0]["headers"]


def test_rate_limited_error_carries_retry_after(js):
    case = js["cases"]["retry_after"]
    assert not case["ok"] and case["code"] == "rate_limited" and paths(case) == ["/api/v2/match"]
    assert case["retryAfter"] == 42
