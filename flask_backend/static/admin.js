/* Organizer dashboard: the events an organizer key may see, live counts while photos are
   ingested, failed photos with their reasons and a retry, attendee access with the event
   code, a printable QR code of the attendee link, recent forget requests, delete-event.

   The key is typed once and kept in sessionStorage only; it goes out as X-API-Key to this
   origin's JSON API and nowhere else. No inline script: the page's CSP forbids it. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var root = $("admin");
  var REFRESH_MS = parseInt(root.dataset.refreshMs, 10) || 3000;
  var STORAGE = "facematch.organizerKey";
  var key = sessionStorage.getItem(STORAGE) || "";
  var current = null; // the event shown
  var codeForQr = null; // the code typed in this tab (the server keeps only its hash)
  var timer = null, qrUrl = null, lastEvents = [];

  // ---- API ---------------------------------------------------------------------------------
  function api(method, path, body) {
    var init = { method: method, headers: { "X-API-Key": key } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (r) {
      var type = r.headers.get("Content-Type") || "";
      var read = type.indexOf("json") >= 0 ? r.json() : r.blob();
      return read.then(function (data) {
        if (!r.ok) {
          var e = (data && data.error) || {};
          var err = new Error(e.message || "HTTP " + r.status);
          err.status = r.status;
          err.code = e.code || "http_" + r.status;
          throw err;
        }
        return data;
      });
    });
  }

  function ev(id) { return "/api/v2/events/" + encodeURIComponent(id); }

  function say(text, kind) {
    var box = $("admin-message");
    box.hidden = !text;
    box.textContent = text || "";
    box.className = "message" + (kind ? " " + kind : "");
  }

  function failed(err) {
    if (err && err.status === 401) { signOut(); say("That key is not valid (or was revoked)."); return; }
    say((err && err.message) || "Something went wrong.");
  }

  // ---- key ---------------------------------------------------------------------------------
  $("key-form").addEventListener("submit", function (e) {
    e.preventDefault();
    key = $("key-input").value.trim();
    $("key-input").value = "";
    if (!key) return;
    sessionStorage.setItem(STORAGE, key);
    start();
  });

  function signOut() {
    key = "";
    sessionStorage.removeItem(STORAGE);
    clearTimeout(timer);
    $("key-form").hidden = false;
    $("sign-out").hidden = $("events-card").hidden = $("event-card").hidden = true;
  }
  $("sign-out").addEventListener("click", function () { signOut(); say(null); });

  function start() {
    $("key-form").hidden = true;
    $("sign-out").hidden = false;
    say(null);
    refresh();
    if (location.hash.length > 1) select(decodeURIComponent(location.hash.slice(1))); // a link to one event
  }

  // ---- live counts ---------------------------------------------------------------------------
  function refresh() {
    clearTimeout(timer);
    var work = [api("GET", "/api/v2/events").then(renderEvents)];
    if (current) work.push(loadEvent(current, false));
    Promise.all(work).then(function () {
      root.dataset.refreshed = String(Date.now());
    }, failed).finally(function () {
      if (key) timer = setTimeout(refresh, REFRESH_MS);
    });
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.append(td);
    return td;
  }

  function renderEvents(data) {
    lastEvents = data.events;
    var body = $("events-body");
    body.textContent = "";
    $("events-card").hidden = false;
    $("events-empty").hidden = data.events.length > 0;
    data.events.forEach(function (e) {
      var tr = document.createElement("tr");
      tr.dataset.eventId = e.event_id;
      var th = document.createElement("th");
      th.scope = "row";
      var a = document.createElement("a");
      a.href = "#" + encodeURIComponent(e.event_id);
      a.textContent = e.event_id;
      th.append(a);
      tr.append(th);
      cell(tr, e.photos).dataset.k = "photos";
      cell(tr, e.faces).dataset.k = "faces";
      cell(tr, e.photos_without_faces).dataset.k = "photos_without_faces";
      var f = cell(tr, e.failed + (e.retrying ? " (+" + e.retrying + " retrying)" : ""));
      f.dataset.k = "failed";
      if (e.failed) f.className = "bad";
      cell(tr, e.stale_spaces.length ? e.stale_spaces.join(", ") : "\u2014").dataset.k = "stale";
      if (e.event_id === current) tr.className = "current";
      body.append(tr);
    });
    if (current) {
      var mine = data.events.filter(function (e) { return e.event_id === current; })[0];
      if (mine) renderStats(mine);
    }
  }

  function renderStats(e) {
    var dl = $("event-stats");
    dl.textContent = "";
    [["Photos", e.photos, "photos"], ["Faces", e.faces, "faces"], ["Without faces", e.photos_without_faces, "photos_without_faces"],
     ["Failed", e.failed, "failed"], ["Retrying", e.retrying, "retrying"], ["Queued again", e.pending, "pending"],
     ["Stale spaces", e.stale_spaces.join(", ") || "none", "stale"]].forEach(function (item) {
      var div = document.createElement("div");
      div.dataset.k = item[2];
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = item[0];
      dd.textContent = item[1];
      div.append(dt, dd);
      dl.append(div);
    });
  }

  // ---- one event -----------------------------------------------------------------------------
  window.addEventListener("hashchange", function () { select(decodeURIComponent(location.hash.slice(1))); });

  function select(id) {
    current = id || null;
    codeForQr = null;
    $("event-card").hidden = !current;
    if (!current) return;
    $("event-title").textContent = current;
    $("delete-label").textContent = "Type \u201c" + current + "\u201d to confirm";
    $("delete-confirm").value = "";
    $("delete-button").disabled = true;
    var known = lastEvents.filter(function (e) { return e.event_id === current; })[0];
    $("event-stats").textContent = "";
    if (known) renderStats(known); // at once; the next refresh keeps it current
    loadEvent(current, true).catch(failed);
    Array.from($("events-body").children).forEach(function (tr) {
      tr.className = tr.dataset.eventId === current ? "current" : "";
    });
  }

  function loadEvent(id, full) {
    var work = [api("GET", ev(id) + "/photos?status=failed").then(renderFailed)];
    if (full) {
      work.push(loadAccess(id));
      work.push(api("GET", ev(id) + "/forget-requests").then(renderForgets, function (err) {
        if (err.status === 404 && err.code === "not_found") { $("forget-empty").textContent = "Not available on this server."; return; }
        throw err;
      }));
    }
    return Promise.all(work);
  }

  function renderFailed(data) {
    var list = $("failed-list");
    list.textContent = "";
    $("failed-empty").hidden = data.photos.length > 0;
    data.photos.forEach(function (p) {
      var li = document.createElement("li");
      li.dataset.photoId = p.photo_id;
      var name = document.createElement("strong");
      name.textContent = p.photo_id;
      var why = document.createElement("span");
      why.className = "reason";
      why.textContent = p.code + ": " + p.message + " (" + p.via + ", " + p.attempts + (p.attempts === 1 ? " attempt)" : " attempts)");
      var retry = document.createElement("button");
      retry.type = "button";
      retry.className = "secondary retry";
      retry.textContent = "Retry";
      retry.setAttribute("aria-label", "Retry " + p.photo_id);
      retry.addEventListener("click", function () {
        retry.disabled = true;
        api("POST", ev(current) + "/photos/" + encodeURIComponent(p.photo_id) + "/retry", {}).then(function (r) {
          say(r.status === "pending" ? p.photo_id + " is queued for the photo worker again."
            : r.status === "failed" ? p.photo_id + " failed again: " + r.code + ": " + r.message
              : p.photo_id + " is indexed now (" + r.faces + (r.faces === 1 ? " face)." : " faces)."), "info");
          refresh();
        }, function (err) { retry.disabled = false; failed(err); });
      });
      li.append(name, why, retry);
      list.append(li);
    });
  }

  function renderForgets(data) {
    var list = $("forget-list");
    list.textContent = "";
    var rows = data.requests || data.forget_requests || [];
    $("forget-empty").hidden = rows.length > 0;
    rows.slice(0, 20).forEach(function (r) {
      var li = document.createElement("li");
      var removed = Object.keys(r.faces_removed || {}).map(function (s) { return s + ": " + r.faces_removed[s]; }).join(", ");
      li.textContent = new Date(r.created_at * 1000).toLocaleString() + " \u2014 " + (r.photos || []).length +
        " photo(s), faces removed " + (removed || "none");
      list.append(li);
    });
  }

  // ---- access and QR ---------------------------------------------------------------------------
  function loadAccess(id) {
    return api("GET", ev(id) + "/access").then(function (a) {
      $("access-mode").textContent = a.mode;
      root.dataset.accessMode = a.mode;
      return renderQr();
    }, function (err) {
      if (err.status === 404 && err.code === "not_found") {
        $("access-mode").textContent = "open (this server has no event codes)";
        return renderQr();
      }
      throw err;
    });
  }

  function renderQr() {
    var mode = root.dataset.accessMode || "open";
    var withCode = mode === "code" && codeForQr;
    return api("POST", ev(current) + "/qr", withCode ? { code: codeForQr } : {}).then(function (svg) {
      if (qrUrl) URL.revokeObjectURL(qrUrl);
      qrUrl = URL.createObjectURL(svg);
      var img = document.createElement("img");
      img.src = qrUrl;
      img.alt = "QR code of the attendee link for " + current;
      $("qr").textContent = "";
      $("qr").append(img);
      var link = location.origin + "/e/" + encodeURIComponent(current) + (withCode ? "?code=" + encodeURIComponent(codeForQr) : "");
      $("attendee-link").href = link;
      $("attendee-link").textContent = link;
      $("qr-note").textContent = mode !== "code" ? "Anyone with the link can search this event."
        : withCode ? "The link carries the code: print it for attendees only."
          : "Attendees will be asked for the code. Set the code again here to print a link that carries it.";
    });
  }

  $("code-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var code = $("code-input").value;
    api("PUT", ev(current) + "/access", { mode: "code", code: code }).then(function () {
      codeForQr = code;
      $("code-input").value = "";
      say("Attendees of " + current + " now need the code.", "info");
      return loadAccess(current);
    }).catch(failed);
  });

  $("open-access").addEventListener("click", function () {
    api("PUT", ev(current) + "/access", { mode: "open" }).then(function () {
      codeForQr = null;
      say(current + " is open: no code needed.", "info");
      return loadAccess(current);
    }).catch(failed);
  });

  $("print-qr").addEventListener("click", function () { window.print(); });

  // ---- delete ----------------------------------------------------------------------------------
  $("delete-confirm").addEventListener("input", function () {
    $("delete-button").disabled = this.value !== current;
  });
  $("delete-form").addEventListener("submit", function (e) {
    e.preventDefault();
    if ($("delete-confirm").value !== current) return;
    var gone = current;
    api("DELETE", ev(gone)).then(function () {
      say("Event " + gone + " was deleted.", "info");
      location.hash = "";
      select(null);
      refresh();
    }).catch(failed);
  });

  if (key) start();
})();
