/*
 * FaceMatch browser client: calls v2 and falls back to v1 when v2 is unavailable.
 * No dependencies, no build step. In a page: <script src="/static/facematch.js"></script>
 * then window.FaceMatch.findMyPhotos(...). In Node (tests): require("./facematch.js").
 *
 *   const res = await FaceMatch.findMyPhotos({eventId, selfie, baseUrl: "https://api.example"});
 *   res.photos   // [{photoId, score, url, bbox, thumbnailUrl, imageWidth, imageHeight}], best first
 *   res.via      // "v2" | "v1"
 *   res.reason   // why v1 served it (null when v2 did)
 *   res.next     // null, or () => the next page (mode "all")
 *
 * Fallback to v1 when v2 answers 503, 404 not_indexed (or a 404 that is not unknown_event:
 * no v2 route), 409 space_mismatch, another 5xx, times out, or the network fails. Never on
 * errors v1 would repeat (400, 401, 403 event_code_required / event_code_invalid / forbidden,
 * 413, 415, 422 no_face, 429 rate_limited, 404 unknown_event): those are thrown as
 * FaceMatchError {status, code, message, requestId, via, retryAfter} to show to the user.
 *
 * Events with an access code: pass {eventCode}; it goes with every call (v2, v1, later pages)
 * as header X-Event-Code, never in a URL.
 */
(function (root, factory) {
  "use strict";
  var api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.FaceMatch = api;
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  var DEFAULT_TIMEOUT_MS = 20000;
  var MAX_SIDE = 1280;
  var V2 = { match: "/api/v2/match", embed: "/api/v2/embed" };
  var V1 = { match: "/api/v1/match", embed: "/api/face/analyze" };

  class FaceMatchError extends Error {
    constructor(message, info) {
      super(message);
      info = info || {};
      this.name = "FaceMatchError";
      this.status = info.status || 0;
      this.code = info.code || "error";
      this.requestId = info.requestId || null;
      this.via = info.via || null;
      this.reason = info.reason || null;
      this.retryAfter = info.retryAfter == null ? null : info.retryAfter;  // seconds, on 429
    }
  }

  /**
   * Why a failed v2 call should be retried on v1, or null when it must not be.
   * failure: {kind: "http", status, code} | {kind: "timeout"} | {kind: "network"} | {kind: "abort"}
   */
  function fallbackReason(failure) {
    if (!failure) return null;
    if (failure.kind === "timeout") return "v2 timed out";
    if (failure.kind === "network") return "v2 unreachable";
    if (failure.kind !== "http") return null; // "abort": the caller cancelled
    var status = failure.status;
    if (status === 403 || status === 429) return null; // access and limits: v1 would say the same
    var code = failure.code || "";
    if (status === 503) return "v2 not ready (" + (code || "503") + ")";
    if (status === 404 && code === "not_indexed") return "event not indexed in v2";
    if (status === 404 && code !== "unknown_event") return "v2 endpoint not found";
    if (status === 409) return "v2 index unusable (" + (code || "409") + ")";
    if (status >= 500) return "v2 server error " + status;
    return null;
  }

  function joinUrl(baseUrl, path) {
    return (baseUrl || "").replace(/\/+$/, "") + path;
  }

  function selfiesOf(opts) {
    var list = opts.selfies ? Array.from(opts.selfies) : opts.selfie ? [opts.selfie] : [];
    return list.filter(Boolean);
  }

  /** One POST with a timeout; resolves {ok, status, body} or rejects with a failure object. */
  async function post(url, makeBody, opts) {
    var fetchImpl = opts.fetch || globalThis.fetch;
    var controller = new AbortController();
    var timedOut = false;
    var timeoutMs = opts.timeoutMs == null ? DEFAULT_TIMEOUT_MS : opts.timeoutMs;
    var timer = setTimeout(function () { timedOut = true; controller.abort(); }, timeoutMs);
    var outer = opts.signal;
    var onAbort = function () { controller.abort(); };
    if (outer) {
      if (outer.aborted) controller.abort();
      else outer.addEventListener("abort", onAbort, { once: true });
    }
    var body = makeBody();
    var init = { method: "POST", body: body, signal: controller.signal, headers: {}, referrerPolicy: "no-referrer" };
    if (typeof body === "string") init.headers["Content-Type"] = "application/json";
    if (opts.eventCode) init.headers["X-Event-Code"] = opts.eventCode;
    try {
      var response = await fetchImpl(url, init);
      var data = null;
      try { data = await response.json(); } catch (e) { data = null; }
      var retry = response.headers && response.headers.get ? response.headers.get("Retry-After") : null;
      return { ok: response.ok, status: response.status, body: data, retryAfter: retry == null ? null : Number(retry) };
    } catch (err) {
      if (outer && outer.aborted) throw { kind: "abort", error: err };
      if (timedOut) throw { kind: "timeout", error: err };
      throw { kind: "network", error: err };
    } finally {
      clearTimeout(timer);
      if (outer) outer.removeEventListener("abort", onAbort);
    }
  }

  /** Failure object → FaceMatchError for the caller. */
  function toError(failure, via, reason) {
    if (failure instanceof FaceMatchError) return failure;
    if (failure.kind === "http") {
      var e = (failure.body && failure.body.error) || {};
      var err = new FaceMatchError(e.message || "request failed (HTTP " + failure.status + ")", {
        status: failure.status, code: e.code || "http_" + failure.status, requestId: e.request_id, via: via,
        reason: reason, retryAfter: failure.retryAfter,
      });
      if (e.image) err.image = e.image; // verify: which image had no face
      return err;
    }
    if (failure.kind === "abort") return new FaceMatchError("cancelled", { code: "aborted", via: via });
    if (failure.kind === "timeout") return new FaceMatchError("the server took too long to answer", {
      code: "timeout", via: via, reason: reason });
    if (failure.kind === "network") return new FaceMatchError("could not reach the server", {
      code: "network", via: via, reason: reason });
    return new FaceMatchError(String((failure && failure.message) || failure), { via: via });
  }

  /** POST and return the JSON body, or throw a failure object (http/timeout/network/abort). */
  async function call(url, makeBody, opts) {
    var res = await post(url, makeBody, opts);
    if (!res.ok) {
      var code = res.body && res.body.error ? res.body.error.code : null;
      throw { kind: "http", status: res.status, code: code, body: res.body, retryAfter: res.retryAfter };
    }
    return res.body;
  }

  /** Try v2; on a fallback-worthy failure try v1. Returns {data, via, reason}. */
  async function withFallback(v2Call, v1Call) {
    try {
      return { data: await v2Call(), via: "v2", reason: null };
    } catch (failure) {
      var reason = fallbackReason(failure);
      if (!reason || !v1Call) throw toError(failure, "v2", reason);
      try {
        return { data: await v1Call(), via: "v1", reason: reason };
      } catch (failure1) {
        throw toError(failure1, "v1", reason);
      }
    }
  }

  function matchForm(space, opts, selfies) {
    return function () {
      var form = new FormData();
      form.append("event_id", opts.eventId);
      selfies.forEach(function (blob, i) { form.append("image", blob, (blob && blob.name) || "selfie-" + (i + 1) + ".jpg"); });
      addPaging(opts, function (k, v) { form.append(k, String(v)); });
      if (space === "v2" && opts.threshold != null) form.append("threshold", String(opts.threshold));
      if (space === "v1" && opts.tolerance != null) form.append("tolerance", String(opts.tolerance));
      return form;
    };
  }

  function matchJson(space, opts, vector) {
    return function () {
      var body = { event_id: opts.eventId };
      body[space === "v2" ? "user_embedding" : "descriptor"] = vector;
      addPaging(opts, function (k, v) { body[k] = v; });
      if (space === "v2" && opts.threshold != null) body.threshold = opts.threshold;
      if (space === "v1" && opts.tolerance != null) body.tolerance = opts.tolerance;
      return JSON.stringify(body);
    };
  }

  function addPaging(opts, put) {
    if (opts.mode === "all" || opts.topK === null) {
      put("mode", "all");
      if (opts.pageSize) put("page_size", opts.pageSize);
      if (opts.cursor) put("cursor", opts.cursor);
    } else if (opts.topK) {
      put("top_k", opts.topK);
    }
  }

  function toPhotos(matches, photoUrl, baseUrl) {
    return (matches || []).map(function (m) {
      var url = m.url || m.source_url || (photoUrl ? photoUrl(m.photo_id) : null) || null;
      var photo = { photoId: m.photo_id, score: m.score, url: url, bbox: m.bbox || null,
        thumbnailUrl: thumbUrl(m.thumbnail_url, baseUrl), imageWidth: m.image_width || null, imageHeight: m.image_height || null };
      if (m.distance != null) photo.distance = m.distance;
      return photo;
    });
  }

  /** Thumbnails served by this API are relative: make them absolute for pages on other origins. */
  function thumbUrl(url, baseUrl) {
    if (!url) return null;
    return url.charAt(0) === "/" && baseUrl ? joinUrl(baseUrl, url) : url;
  }

  function requestFor(space, opts, selfies) {
    var paths = space === "v2" ? V2 : V1;
    var emb = opts.embedding;
    if (emb && emb.via === space) return function () { return call(joinUrl(opts.baseUrl, paths.match), matchJson(space, opts, emb.embedding), opts); };
    if (!selfies.length) return null;
    return function () { return call(joinUrl(opts.baseUrl, paths.match), matchForm(space, opts, selfies), opts); };
  }

  function result(out, opts, selfies) {
    var data = out.data || {};
    var res = {
      photos: toPhotos(data.matches, opts.photoUrl, opts.baseUrl),
      via: out.via,
      reason: out.reason,
      nextCursor: data.next_cursor || null,
      total: data.total == null ? null : data.total,
      model: data.model || null,
      next: null,
    };
    if (res.nextCursor) {
      // The cursor belongs to the space that issued it: later pages stay there.
      res.next = function (more) {
        var nextOpts = Object.assign({}, opts, more || {}, { mode: "all", cursor: res.nextCursor });
        var go = requestFor(out.via, nextOpts, selfies);
        return go().then(
          function (d) { return result({ data: d, via: out.via, reason: out.reason }, nextOpts, selfies); },
          function (f) { throw toError(f, out.via, out.reason); });
      };
    }
    return res;
  }

  /**
   * Find the photos of the person in the selfie(s).
   * opts: {eventId, eventCode, selfie | selfies, embedding (from embedSelfie), baseUrl, signal, timeoutMs,
   *        mode: "all", pageSize, cursor, topK, threshold (v2), tolerance (v1), photoUrl(photoId), fetch}
   */
  async function findMyPhotos(opts) {
    opts = Object.assign({}, opts);
    if (!opts.eventId) throw new FaceMatchError("eventId is required", { code: "missing_field" });
    var selfies = selfiesOf(opts);
    var v2 = requestFor("v2", opts, selfies);
    var v1 = requestFor("v1", opts, selfies);
    if (!v2 && !v1) throw new FaceMatchError("a selfie is required", { code: "missing_image" });
    if (!v2) return result({ data: await v1().catch(function (f) { throw toError(f, "v1", null); }), via: "v1", reason: "embedding is in v1" }, opts, selfies);
    return result(await withFallback(v2, v1), opts, selfies);
  }

  /**
   * Selfie → embedding, for frontends that cache it instead of re-uploading the photo.
   * Returns {embedding, via, reason, model, bbox, facesDetected}; pass it back as
   * findMyPhotos({eventId, embedding}) (it is matched in the space it came from).
   */
  async function embedSelfie(opts) {
    opts = Object.assign({}, opts);
    var selfie = selfiesOf(opts)[0];
    if (!selfie) throw new FaceMatchError("a selfie is required", { code: "missing_image" });
    var form = function () { var f = new FormData(); f.append("image", selfie, selfie.name || "selfie.jpg"); return f; };
    var out = await withFallback(
      function () { return call(joinUrl(opts.baseUrl, V2.embed), form, opts); },
      function () { return call(joinUrl(opts.baseUrl, V1.embed), form, opts); });
    var d = out.data;
    return {
      embedding: out.via === "v2" ? d.embedding : d.descriptor,
      via: out.via, reason: out.reason, model: d.model || null, bbox: d.bbox || null,
      facesDetected: d.faces_detected,
    };
  }

  /**
   * Are two faces the same person? (organizers checking a claimed match)
   * opts: {imageA, imageB (Blob/File) | embeddingA, embeddingB (vectors of `space`), space: "v2" (default) |
   *        "v1", threshold (v2), tolerance (v1), baseUrl, signal, timeoutMs, fetch}
   * Returns {isMatch, similarity (v2) | distance (v1), threshold | tolerance, facesA, facesB, faceA, faceB,
   * model, via, reason}. Two images on v2 fall back to v1 like findMyPhotos; vectors stay in their space.
   * A side without a face throws FaceMatchError {status: 422, code: "no_face", image: "a" | "b"}.
   */
  async function verifyFaces(opts) {
    opts = Object.assign({}, opts);
    var space = opts.space || "v2";
    var vecField = function (sp) { return sp === "v2" ? "embedding" : "descriptor"; };
    var sides = [["a", opts.imageA, opts.embeddingA], ["b", opts.imageB, opts.embeddingB]];
    sides.forEach(function (s) {
      if (!s[1] && !s[2]) throw new FaceMatchError("image " + s[0] + " is required", { code: "missing_image" });
    });
    var anyVector = sides.some(function (s) { return !!s[2]; });
    var body = function (sp) {
      return function () {
        var f = new FormData();
        sides.forEach(function (s) {
          if (s[2]) f.append(vecField(sp) + "_" + s[0], JSON.stringify(Array.from(s[2])));
          else f.append("image_" + s[0], s[1], s[1].name || "image_" + s[0] + ".jpg");
        });
        if (sp === "v2" && opts.threshold != null) f.append("threshold", String(opts.threshold));
        if (sp === "v1" && opts.tolerance != null) f.append("tolerance", String(opts.tolerance));
        return f;
      };
    };
    var request = function (sp) { return function () { return call(joinUrl(opts.baseUrl, "/api/" + sp + "/verify"), body(sp), opts); }; };
    var out = space === "v2"
      ? await withFallback(request("v2"), anyVector ? null : request("v1"))
      : { data: await request("v1")().catch(function (f) { throw toError(f, "v1", null); }), via: "v1", reason: null };
    var d = out.data;
    return {
      isMatch: d.is_match, similarity: d.similarity, distance: d.distance, threshold: d.threshold,
      tolerance: d.tolerance, facesA: d.faces_a, facesB: d.faces_b, faceA: d.face_a, faceB: d.face_b,
      model: d.model, via: out.via, reason: out.reason,
    };
  }

  /**
   * Downscale an image file in the browser (long side <= maxSide) and re-encode it as JPEG:
   * smaller uploads, and the EXIF block (GPS...) is dropped. Files the browser cannot decode
   * (e.g. HEIC outside Safari) are returned unchanged for the server to judge.
   */
  async function resizeImage(file, maxSide, quality) {
    maxSide = maxSide || MAX_SIDE;
    var bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (e) {
      return file;
    }
    var scale = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height));
    var w = Math.max(1, Math.round(bitmap.width * scale));
    var h = Math.max(1, Math.round(bitmap.height * scale));
    var canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").drawImage(bitmap, 0, 0, w, h);
    if (bitmap.close) bitmap.close();
    var blob = await new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", quality || 0.9); });
    if (!blob) return file;
    blob.width = w;
    blob.height = h;
    return blob;
  }

  return {
    findMyPhotos: findMyPhotos,
    embedSelfie: embedSelfie,
    verifyFaces: verifyFaces,
    resizeImage: resizeImage,
    fallbackReason: fallbackReason,
    FaceMatchError: FaceMatchError,
    MAX_SIDE: MAX_SIDE,
  };
});
