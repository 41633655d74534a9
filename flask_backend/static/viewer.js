/* The selfie page's photo viewer: a tile → the photo large (its source URL) with the matched
   face outlined; previous/next, download of the original, Esc and arrow keys.

   A native <dialog> opened with showModal(): the rest of the page is inert (keyboard and
   screen-reader focus stay inside), Esc closes it, and focus goes back to the tile that
   opened it. The tiles are the gallery's <figure>s; selfie.js hangs each one's photo on it. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var dialog = $("viewer");
  var gallery = $("gallery");
  if (!dialog || !gallery || typeof dialog.showModal !== "function") return; // the tiles stay plain links
  var img = $("viewer-img"), face = $("viewer-face"), title = $("viewer-title");
  var eventId = $("app").dataset.eventId || "";
  var index = -1, opener = null;

  function tiles() { return Array.from(gallery.querySelectorAll("figure.photo")).filter(function (f) { return f.photo; }); }

  function show(i) {
    var list = tiles();
    if (!list.length) return;
    index = (i + list.length) % list.length;
    var p = list[index].photo;
    dialog.dataset.photoId = p.photoId;
    title.textContent = "Photo " + (index + 1) + " of " + list.length;
    face.hidden = true;
    img.alt = "Event photo " + p.photoId + ", you are outlined";
    img.src = p.url || p.thumbnailUrl || "";
    $("viewer-prev").disabled = $("viewer-next").disabled = list.length < 2;
    $("viewer-download-form").action = "/api/v2/events/" + encodeURIComponent(eventId) + "/photos/" +
      encodeURIComponent(p.photoId) + "/download";
    $("viewer-download").disabled = !p.url;
    var code = window.FaceMatchPage ? window.FaceMatchPage.eventCode() : "";
    $("viewer-code").disabled = !code;
    $("viewer-code").value = code || "";
  }

  /* The face box is in the original's pixels; the image is shown "contain"-fitted in its frame. */
  function outline() {
    var list = tiles();
    var p = list[index] && list[index].photo;
    var w = img.naturalWidth, h = img.naturalHeight;
    if (!p || !p.bbox || !w || !h) { face.hidden = true; return; }
    var srcW = p.url ? w : (p.imageWidth || w); // a thumbnail fallback is scaled like the tiles
    var k = w / srcW;
    var box = img.getBoundingClientRect(), frame = img.parentNode.getBoundingClientRect();
    var s = Math.min(box.width / w, box.height / h);
    var ox = box.left - frame.left + (box.width - w * s) / 2, oy = box.top - frame.top + (box.height - h * s) / 2;
    face.style.left = ox + p.bbox[0] * k * s + "px";
    face.style.top = oy + p.bbox[1] * k * s + "px";
    face.style.width = (p.bbox[2] - p.bbox[0]) * k * s + "px";
    face.style.height = (p.bbox[3] - p.bbox[1]) * k * s + "px";
    face.hidden = false;
  }

  function open(fig) {
    var i = tiles().indexOf(fig);
    if (i < 0) return;
    opener = fig.querySelector(".frame") || fig;
    show(i);
    dialog.showModal();
    $("viewer-close").focus();
  }

  gallery.addEventListener("click", function (ev) {
    var frame = ev.target.closest(".frame");
    if (!frame || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return; // new-tab clicks stay links
    ev.preventDefault();
    open(frame.closest("figure.photo"));
  });
  img.addEventListener("load", outline);
  img.addEventListener("error", function () { face.hidden = true; });
  window.addEventListener("resize", function () { if (dialog.open) outline(); });
  $("viewer-prev").addEventListener("click", function () { show(index - 1); });
  $("viewer-next").addEventListener("click", function () { show(index + 1); });
  $("viewer-close").addEventListener("click", function () { dialog.close(); });
  dialog.addEventListener("click", function (ev) { if (ev.target === dialog) dialog.close(); }); // the backdrop
  dialog.addEventListener("keydown", function (ev) {
    if (ev.key === "ArrowLeft") { ev.preventDefault(); show(index - 1); }
    else if (ev.key === "ArrowRight") { ev.preventDefault(); show(index + 1); }
    else if (ev.key === "Tab") keepFocusInside(ev);
  });

  /* The rest of the page is inert, but Tab past the last button would leave for the browser's
     own UI: cycle through the dialog's controls instead. */
  function keepFocusInside(ev) {
    var items = Array.from(dialog.querySelectorAll("button, [href]")).filter(function (el) { return !el.disabled; });
    if (!items.length) return;
    var first = items[0], last = items[items.length - 1];
    if (ev.shiftKey && document.activeElement === first) { ev.preventDefault(); last.focus(); }
    else if (!ev.shiftKey && document.activeElement === last) { ev.preventDefault(); first.focus(); }
  }
  dialog.addEventListener("close", function () {
    img.removeAttribute("src");
    delete dialog.dataset.photoId;
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  });
})();
