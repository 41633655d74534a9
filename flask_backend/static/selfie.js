/* The selfie page: pick selfie(s) → FaceMatch.findMyPhotos → gallery. Nothing is stored.
   Private events: the code comes from the link (/e/<event>?code=…) and is removed from the
   address bar at once (history, bookmarks, screenshots), or is asked for when the API says
   it is needed; it lives in memory only and goes with every call as X-Event-Code. */
(function () {
  "use strict";
  var FM = window.FaceMatch;
  var MAX_SELFIES = 5;
  var $ = function (id) { return document.getElementById(id); };
  var app = $("app");
  var PAGE_SIZE = parseInt(app.dataset.pageSize, 10) || 24;
  var eventId = app.dataset.eventId || "";
  var eventCode = codeFromAddress();
  var selfies = []; // [{blob, url}] — kept in memory only, never in storage
  var busy = false;
  var controller = null;

  var MESSAGES = {
    no_face: "We couldn't find a face in your selfie. Try again with your face clearly visible and in good light.",
    unknown_event: "We can't find the event \u201c{event}\u201d. Check the link or the event code.",
    invalid_event_id: "\u201c{event}\u201d isn't a valid event code. Check the link.",
    not_indexed: "This event's photos aren't ready to search yet. Please try again later.",
    engine_not_ready: "Face search is starting up. Please try again in a minute.",
    selfies_disagree: "Those selfies don't seem to show the same person. Remove one and try again.",
    too_many_images: "That's too many selfies. Remove some and try again.",
    image_too_large: "That photo is too large. Please try a smaller one.",
    request_too_large: "That photo is too large. Please try a smaller one.",
    unsupported_image: "We can't read that file. Please use a JPEG or PNG photo.",
    unsupported_media_type: "We can't read that file. Please use a JPEG or PNG photo.",
    corrupt_image: "That photo seems damaged. Please try another one.",
    empty_image: "That file is empty. Please pick a photo.",
    rate_limited: "Too many tries from your network. Please wait {wait} and try again.",
    event_code_required: "This event is private. Enter the access code from your invitation or the event's QR code.",
    event_code_invalid: "That access code isn't right for this event. Check it and try again.",
    timeout: "The server took too long to answer. Please try again.",
    network: "We can't reach the server. Check your connection and try again.",
    nothing: "No photos of you in this event yet. Photos are added as they're processed, so check back later.",
  };

  function text(code, retryAfter) {
    var wait = retryAfter > 90 ? Math.ceil(retryAfter / 60) + " minutes" : retryAfter > 0 ? retryAfter + " seconds" : "a moment";
    return (MESSAGES[code] || "Something went wrong ({code}). Please try again.")
      .replace("{event}", eventId).replace("{code}", code).replace("{wait}", wait);
  }

  /** ?code=… (or #code=…, which never reaches any server log) from the link, then gone from
      the address bar (other parameters stay). */
  function codeFromAddress() {
    var url = new URL(window.location.href);
    var fragment = new URLSearchParams(url.hash.replace(/^#/, ""));
    var code = url.searchParams.get("code");
    if (code === null) code = fragment.get("code");
    if (code === null) return "";
    url.searchParams.delete("code");
    fragment.delete("code");
    var hash = fragment.toString();
    history.replaceState(history.state, "", url.pathname + url.search + (hash ? "#" + hash : ""));
    return code.trim();
  }

  function askForCode(reason) {
    $("selfie-card").hidden = true;
    $("code-form").hidden = false;
    setState("code");
    showMessage(reason, reason === "event_code_required" ? "info" : null);
    $("code-input").value = "";
    $("code-input").focus();
  }

  function setState(state) { app.dataset.state = state; }

  function showStatus(msg) {
    $("status").hidden = !msg;
    $("status").textContent = msg || "";
  }

  function showMessage(code, kind, retryAfter) {
    var box = $("message");
    box.hidden = !code;
    box.textContent = code ? text(code, retryAfter) : "";
    box.dataset.code = code || "";
    box.className = "message" + (kind ? " " + kind : "");
  }

  // ---- event ------------------------------------------------------------------------
  $("event-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var code = $("event-input").value.trim();
    if (code) window.location.href = "/e/" + encodeURIComponent(code);
  });

  $("code-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var code = $("code-input").value.trim();
    if (!code) return;
    eventCode = code;
    $("code-form").hidden = true;
    showMessage(null);
    checkEvent();
  });

  function checkEvent() {
    if (!eventId) return;
    var headers = eventCode ? { "X-Event-Code": eventCode } : {};
    fetch("/api/v2/events/" + encodeURIComponent(eventId), { headers: headers }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (body) {
        var code = body && body.error && body.error.code;
        if (r.status === 404 && code === "unknown_event" || r.status === 400 && code === "invalid_event_id") {
          $("selfie-card").hidden = true;
          setState("error");
          showMessage(code);
        } else if (r.status === 403 && (code === "event_code_required" || code === "event_code_invalid")) {
          askForCode(code);
        } else if (r.status === 429) {
          $("selfie-card").hidden = true;
          $("code-form").hidden = false;
          setState("error");
          showMessage("rate_limited", null, Number(r.headers.get("Retry-After")));
        } else {
          $("selfie-card").hidden = false;
          if (app.dataset.state === "code") setState("idle");
          if (r.ok && body && body.photos) {
            $("event-size").textContent = "\u00b7 " + body.photos + (body.photos === 1 ? " photo" : " photos");
          }
        }
      });
    }).catch(function () { /* the search itself will tell */ });
  }

  // ---- selfies ------------------------------------------------------------------------
  async function addSelfie(input) {
    var file = input.files && input.files[0];
    input.value = ""; // the same file can be picked again
    if (!file || selfies.length >= MAX_SELFIES) return;
    performance.mark("fm:selfie-picked");
    showMessage(null);
    var blob = await FM.resizeImage(file, FM.MAX_SIDE);
    selfies.push({ blob: blob, url: URL.createObjectURL(blob) });
    renderPreviews();
  }

  function renderPreviews() {
    var box = $("previews");
    box.textContent = "";
    selfies.forEach(function (s, i) {
      var item = document.createElement("div");
      item.className = "preview";
      var img = document.createElement("img");
      img.src = s.url;
      img.alt = "Selfie " + (i + 1);
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.setAttribute("aria-label", "Remove selfie " + (i + 1));
      remove.textContent = "\u00d7";
      remove.addEventListener("click", function () {
        URL.revokeObjectURL(s.url);
        selfies.splice(i, 1);
        renderPreviews();
      });
      item.append(img, remove);
      box.append(item);
    });
    $("search").disabled = busy || !selfies.length;
    $("pick-label").hidden = selfies.length > 0;
    $("add-label").hidden = !selfies.length || selfies.length >= MAX_SELFIES;
  }

  $("selfie").addEventListener("change", function () { addSelfie(this); });
  $("more-selfies").addEventListener("change", function () { addSelfie(this); });

  // ---- search -------------------------------------------------------------------------
  function setBusy(on, msg) {
    busy = on;
    app.classList.toggle("busy", on);
    $("search").disabled = on || !selfies.length;
    $("more").disabled = on;
    showStatus(on ? msg : null);
  }

  async function search() {
    if (busy || !selfies.length) return;
    if (controller) controller.abort();
    controller = new AbortController();
    showMessage(null);
    $("results").hidden = true;
    $("gallery").textContent = "";
    setState("searching");
    setBusy(true, "Looking for you in the event's photos\u2026");
    performance.mark("fm:search-start");
    try {
      var res = await FM.findMyPhotos({
        eventId: eventId,
        eventCode: eventCode,
        selfies: selfies.map(function (s) { return s.blob; }),
        mode: "all",
        pageSize: PAGE_SIZE,
        signal: controller.signal,
      });
      render(res, true);
    } catch (err) {
      fail(err);
    } finally {
      setBusy(false);
    }
  }

  async function loadMore() {
    var next = $("more").nextPage;
    if (!next || busy) return;
    setBusy(true, "Loading more photos\u2026");
    try {
      render(await next({ signal: controller && controller.signal }), false);
    } catch (err) {
      fail(err);
    } finally {
      setBusy(false);
    }
  }

  function fail(err) {
    var code = (err && err.code) || "error";
    if (code === "event_code_required" || code === "event_code_invalid") return askForCode(code);
    setState("error");
    showMessage(code, null, err && err.retryAfter);
    app.dataset.via = (err && err.via) || "";
  }

  function render(res, first) {
    app.dataset.via = res.via;
    var gallery = $("gallery");
    res.photos.forEach(function (p) { gallery.append(tile(p)); });
    var shown = gallery.children.length;
    if (first) performance.mark("fm:gallery");
    if (first) whenImagesLoaded(gallery, function () { performance.mark("fm:thumbs-loaded"); });
    if (!shown) {
      setState("empty");
      showMessage("nothing", "info");
      return;
    }
    setState("done");
    var total = res.total != null ? res.total : shown;
    $("results-title").textContent = total === 1 ? "1 photo of you" : total + " photos of you";
    $("results").hidden = false;
    $("results").dataset.via = res.via;
    $("via").textContent = "Matched with " + res.via + (res.reason ? " \u2014 " + res.reason : "");
    $("more").hidden = !res.next;
    $("download-all").hidden = false;
    $("more").nextPage = res.next;
  }

  function whenImagesLoaded(root, done) {
    var imgs = Array.from(root.querySelectorAll("img"));
    var left = imgs.length;
    if (!left) return done();
    imgs.forEach(function (img) {
      var one = function () { if (--left === 0) done(); };
      if (img.complete) one();
      else { img.addEventListener("load", one, { once: true }); img.addEventListener("error", one, { once: true }); }
    });
  }

  function tile(p) {
    var fig = document.createElement("figure");
    fig.className = "photo";
    fig.dataset.photoId = p.photoId;
    fig.dataset.score = p.score;
    fig.photo = p; // the viewer (viewer.js) reads it
    var frame = document.createElement(p.url ? "a" : "div");
    frame.className = "frame";
    if (p.url) {
      frame.href = p.url;
      frame.target = "_blank";
      frame.rel = "noopener noreferrer";
      var img = document.createElement("img");
      img.alt = "Event photo " + p.photoId;
      img.loading = "lazy";
      img.decoding = "async";
      img.referrerPolicy = "no-referrer";
      var face = document.createElement("span");
      face.className = "face";
      face.hidden = true;
      img.addEventListener("load", function () { outlineFace(img, face, thumbBox(p, img)); });
      img.addEventListener("error", function () { fig.classList.add("broken"); });
      img.src = p.thumbnailUrl || p.url; // a ~30 KB thumbnail, not the multi-megabyte original
      frame.append(img, face);
    } else {
      frame.classList.add("placeholder");
      frame.textContent = p.photoId;
    }
    fig.append(frame);
    return fig;
  }

  /* The tile is a square showing the photo "cover"-cropped around the matched face, with
     the face outlined. Everything is in fractions of the tile, so no resize handling. */
  function outlineFace(img, box, bbox) {
    var w = img.naturalWidth, h = img.naturalHeight;
    if (!w || !h || !bbox || bbox[2] - bbox[0] <= 0 || bbox[3] - bbox[1] <= 0) return;
    var s = 1 / Math.min(w, h);
    var dw = w * s, dh = h * s;
    var ox = clamp(0.5 - (bbox[0] + bbox[2]) / 2 * s, 1 - dw, 0);
    var oy = clamp(0.5 - (bbox[1] + bbox[3]) / 2 * s, 1 - dh, 0);
    img.style.objectPosition = pct(dw > 1 ? ox / (1 - dw) : 0.5) + " " + pct(dh > 1 ? oy / (1 - dh) : 0.5);
    box.style.left = pct(ox + bbox[0] * s);
    box.style.top = pct(oy + bbox[1] * s);
    box.style.width = pct((bbox[2] - bbox[0]) * s);
    box.style.height = pct((bbox[3] - bbox[1]) * s);
    box.hidden = false;
  }

  /* bbox is in the original's pixels; a thumbnail is the original scaled down. */
  function thumbBox(p, img) {
    if (!p.bbox || !p.thumbnailUrl || !p.imageWidth) return p.bbox;
    var k = img.naturalWidth / p.imageWidth;
    return p.bbox.map(function (v) { return v * k; });
  }

  // ---- download all: every photo of the result (remaining pages first), as one zip ------
  async function downloadAll() {
    if (busy) return;
    while ($("more").nextPage) {
      await loadMore();
      if (app.dataset.state === "error") return;
    }
    var ids = Array.from($("gallery").children).map(function (f) { return f.dataset.photoId; });
    if (!ids.length) return;
    var form = document.createElement("form");
    form.method = "post";
    form.action = "/api/v2/events/" + encodeURIComponent(eventId) + "/photos.zip";
    form.hidden = true;
    var fields = ids.map(function (id) { return ["photo_ids", id]; });
    if (eventCode) fields.push(["event_code", eventCode]); // a form field: never in the address
    fields.forEach(function (f) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = f[0];
      input.value = f[1];
      form.append(input);
    });
    document.body.append(form);
    form.submit(); // a download: the browser streams it to disk, the page stays
    form.remove();
  }

  function clamp(v, lo, hi) { return Math.min(hi, Math.max(lo, v)); }
  function pct(f) { return (f * 100).toFixed(3) + "%"; }

  $("search").addEventListener("click", search);
  $("more").addEventListener("click", loadMore);
  $("download-all").addEventListener("click", downloadAll);
  window.FaceMatchPage = { eventCode: function () { return eventCode; } }; // viewer.js's downloads
  setState("idle");
  checkEvent();
})();
