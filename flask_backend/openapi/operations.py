"""OpenAPI operations: every route (Flask rule, method), its body, answers and error codes."""

from __future__ import annotations

from typing import Any

from .schemas import integer, ref, s

# Every error code the service answers with, by HTTP status.
ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: (
        "bad_request", "invalid_json", "missing_field", "invalid_field", "missing_image", "too_many_images",
        "invalid_base64", "empty_image", "corrupt_image", "invalid_url", "forbidden_url", "fetch_failed",
        "invalid_event_id", "invalid_photo_id", "invalid_embedding", "invalid_face", "invalid_space",
        "dimension_mismatch", "too_many_vectors", "unknown_space", "invalid_source_url", "invalid_limit",
        "invalid_min_score", "invalid_mode", "invalid_cursor",
        "invalid_top_k", "invalid_page_size", "invalid_threshold", "invalid_tolerance", "selfies_disagree",
        "field_not_allowed", "invalid_access", "invalid_query",
        "too_many_photos",
    ),
    401: ("unauthorized",),
    403: ("forbidden", "event_code_required", "event_code_invalid"),
    404: ("unknown_event", "not_indexed", "unknown_photo", "not_found", "no_thumbnail"),
    405: ("method_not_allowed",),
    409: ("space_mismatch", "retry_unavailable"),
    413: ("image_too_large", "request_too_large"),
    415: ("unsupported_image", "unsupported_media_type"),
    422: ("no_face",),
    429: ("rate_limited",),
    500: ("internal_error",),
    503: ("engine_not_ready", "storage_unavailable", "firestore_unavailable"),
    507: ("storage_full",),
}
ERROR_MEANING = {
    400: "Bad input.",
    401: "Missing or invalid `X-API-Key` (only when the server has API keys configured).",
    404: "`unknown_event`: the event has no photos in any space. `not_indexed`: the event exists but has no "
    "index in this space (frontends fall back to v1). `unknown_photo`: no such photo in the event. "
    "`not_found`: no such route. `no_thumbnail`: the photo has none (ingested by vector, or before thumbnails: "
    "`bulk_ingest --thumbnails-only`).",
    403: "`forbidden`: the key's role or events do not cover this. `event_code_required` / "
    "`event_code_invalid`: the event is a `code` event; send its code as `X-Event-Code` (or field `event_code`).",
    405: "Method not allowed.",
    409: "`space_mismatch`: the event's index was built with another model (stale after a pack change). "
    "`retry_unavailable`: the photo has no http(s) URL to fetch again.",
    413: "Image or request too large.",
    415: "Not an image format the service accepts (JPEG, PNG, WebP, BMP, TIFF; HEIC when enabled).",
    422: "`no_face`: no face found in the selfie (verify: in the image named by `image`).",
    429: "`rate_limited`: too many requests from this address (or too many wrong codes for this event); "
    "wait `Retry-After` seconds.",
    500: "Internal error; quote the `request_id`.",
    503: "`engine_not_ready`: the engine of this space is not loaded (e.g. no v2 model pack). "
    "`storage_unavailable`: the data directory is read-only, the database unavailable or its lock not obtained "
    "in time; retry after the `Retry-After` seconds (nothing acknowledged is lost). "
    "`firestore_unavailable`: a retry of a Firestore photo could not reach Firestore.",
    507: "`storage_full`: the data directory is full; the write was not stored (it succeeds again once space "
    "is freed, no restart needed).",
}



def _body(json_schema: str | None, multipart_schema: str | None, *, required: bool = True) -> dict:
    content: dict[str, Any] = {}
    if json_schema:
        content["application/json"] = {"schema": ref(json_schema)}
    if multipart_schema:
        content["multipart/form-data"] = {"schema": ref(multipart_schema)}
    return {"required": required, "content": content}


def _ok(schema: str, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


def _op(summary: str, tag: str, ok: dict, errors: tuple[int, ...], *, body: dict | None = None,
        description: str = "", write: bool = False, attendee: bool = False) -> dict:
    responses: dict[str, Any] = {"200": ok}
    for status in sorted({*errors, 500}):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if body:
        op["requestBody"] = body
    if write:
        op["security"] = [{}, {"ApiKey": []}]
        op["responses"].setdefault("401", {"$ref": "#/components/responses/E401"})
        op["responses"].setdefault("403", {"$ref": "#/components/responses/E403"})
    if attendee:  # event access: the code of a `code` event
        op["x-event-code"] = True
        op["responses"].setdefault("403", {"$ref": "#/components/responses/E403"})
        op["responses"].setdefault("429", {"$ref": "#/components/responses/E429"})
    op["responses"] = dict(sorted(op["responses"].items()))
    return op


IMAGE_ERRORS = (400, 413, 415, 422, 429, 503)
MATCH_ERRORS = (400, 404, 409, 413, 415, 422, 503)
INGEST_ERRORS = (400, 413, 415, 429, 503, 507)


def _binary(mimes: tuple[str, ...], description: str) -> dict:
    return {"description": description,
            "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in mimes}}


def _form(schema: str) -> dict:
    """JSON, or a plain form post (what the page submits for a download)."""
    return {"required": True, "content": {"application/json": {"schema": ref(schema)},
                                          "application/x-www-form-urlencoded": {"schema": ref(schema)}}}


def _html(summary: str, description: str) -> dict:
    return {"summary": summary, "tags": ["web"], "description": description,
            "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": s()}}}}}


# (Flask rule, method) -> operation. Rules use Flask's syntax, exactly as registered.
OPERATIONS: dict[tuple[str, str], dict] = {
    ("/health", "GET"): _op("Liveness and engine status", "service", _ok("Health"), ()),
    ("/api/face/analyze", "POST"): _op(
        "v1: selfie → raw 128-d descriptor", "v1", _ok("AnalyzeResponse"), IMAGE_ERRORS,
        body=_body("ImageRequest", "ImageMultipart")),
    ("/api/v1/ingest", "POST"): _op(
        "v1: index every face of a photo", "v1", _ok("IngestResponse"), INGEST_ERRORS,
        body=_body("IngestRequest", "IngestMultipart"), write=True,
        description="Fills every ready space unless `spaces` says otherwise; the response describes v1."),
    ("/api/v1/match", "POST"): _op(
        "v1: selfie or descriptor → the event's photos", "v1", _ok("MatchV1Response"), MATCH_ERRORS,
        body=_body("MatchV1Request", "MatchMultipart"), attendee=True,
        description="face_recognition semantics: a match when the Euclidean distance between raw descriptors "
        "is <= `tolerance`."),
    ("/api/v2/ingest", "POST"): _op(
        "v2: index every face of a photo", "v2", _ok("IngestResponse"), INGEST_ERRORS,
        body=_body("IngestRequest", "IngestMultipart"), write=True,
        description="Fills every ready space unless `spaces` says otherwise; the response describes v2."),
    ("/api/v2/match", "POST"): _op(
        "v2: selfie(s) or embedding → the event's photos", "v2", _ok("MatchV2Response"), MATCH_ERRORS,
        body=_body("MatchV2Request", "MatchMultipart"), attendee=True,
        description="Cosine similarity >= `threshold`. All my photos: `mode: all` (or `top_k: null`) with "
        "`page_size`, then `cursor` = the previous `next_cursor`. Frontends fall back to `/api/v1/match` on "
        "503, 404 `not_indexed`, timeouts and network errors (see `/static/facematch.js`)."),
    ("/api/v2/embed", "POST"): _op(
        "v2: selfie → embedding (largest face)", "v2", _ok("EmbedResponse"), IMAGE_ERRORS,
        body=_body("ImageRequest", "ImageMultipart")),
    ("/api/v2/detect", "POST"): _op(
        "v2: every face of an image", "v2", _ok("DetectResponse"), IMAGE_ERRORS,
        body=_body("ImageRequest", "ImageMultipart")),
    ("/api/v2/verify", "POST"): _op(
        "v2: are two faces the same person?", "v2", _ok("VerifyV2Response"), IMAGE_ERRORS,
        body=_body("VerifyV2Request", "VerifyMultipart"),
        description="The largest face of each image (or a vector per side) → cosine similarity and "
        "`is_match` = similarity >= `threshold`. 422 `no_face` names the image (`image`: `a` or `b`)."),
    ("/api/v1/verify", "POST"): _op(
        "v1: are two faces the same person?", "v1", _ok("VerifyV1Response"), IMAGE_ERRORS,
        body=_body("VerifyV1Request", "VerifyMultipart"),
        description="face_recognition semantics: `is_match` = Euclidean distance between raw descriptors "
        "<= `tolerance`. 422 `no_face` names the image (`image`: `a` or `b`)."),
    ("/api/v2/events/<event_id>", "GET"): _op(
        "What an event holds, per space", "events", _ok("EventSummary"), (400, 401, 404), attendee=True,
        description="An attendee read (the code on a `code` event); with `X-API-Key` the key must cover the "
        "event (any role)."),
    ("/api/v2/events/<event_id>", "DELETE"): _op(
        "Delete an event in every space, for good", "events", _ok("DeletedEvent"), (400, 404, 503, 507), write=True),
    ("/api/v2/events/<event_id>/photos/<path:photo_id>", "DELETE"): _op(
        "Delete one photo in every space, for good", "events", _ok("DeletedPhoto"), (400, 404, 503, 507),
        write=True),
    ("/api/v2/events/<event_id>/forget", "POST"): _op(
        "Forget me: a selfie removes that person's faces from the event", "events", _ok("ForgetResponse"),
        (400, 404, 413, 415, 422, 503, 507), body=_body("ForgetRequest", "ForgetMultipart"), attendee=True,
        description="The selfie (and the code of a `code` event) is the proof: no API key needed. Every forget is "
        "recorded without biometric data (`forget-requests`); rate-limited per address. The bar is the server's "
        "(`FACEMATCH_FORGET_THRESHOLD`, default stricter than matching), never the request's: a request "
        "sending `threshold` or `tolerance` is refused with 400 `field_not_allowed`."),
    ("/api/v2/events/<event_id>/access", "PUT"): _op(
        "Set who may search the event: open, or its code", "events", _ok("AccessResponse"), (400,),
        body=_body("AccessRequest", None), write=True,
        description="Organizer key for the event (or admin). On a `code` event, match (v1 and v2), forget and "
        "the event summary need the code; wrong codes are rate-limited per address and event."),
    ("/api/v2/events/<event_id>/access", "GET"): _op(
        "The event's access mode (never its code)", "events", _ok("AccessResponse"), (400,), write=True),
    ("/api/v2/events/<event_id>/forget-requests", "GET"): _op(
        "The forget-me log of the event, newest first", "events", _ok("ForgetRecords"), (400,), write=True,
        description="Organizer key for the event. No image, no embedding, no address."),
    ("/api/v2/events/<event_id>/photos/<path:photo_id>/thumbnail", "GET"): _op(
        "A photo's thumbnail (~480 px), made at ingest", "photos",
        _binary(("image/webp", "image/jpeg"), "the thumbnail, with `ETag` and `Cache-Control: private`"),
        (400, 404), attendee=True,
        description="Same access as match: free on an `open` event; on a `code` event the code (header), a key "
        "covering the event, or the signed `exp`/`sig` of a `thumbnail_url` from a match answer. "
        "`If-None-Match` answers 304."),
    ("/api/v2/events/<event_id>/photos.zip", "POST"): _op(
        "Download all: the photos' originals as one zip, streamed as it is built", "photos",
        _binary(("application/zip",), "a zip (STORED entries); photos that could not be fetched are listed in "
                "`MISSING.txt` inside it"), (400, 404), body=_form("PhotosZipRequest"), attendee=True,
        description="Originals are fetched through the SSRF-safe fetcher. Same access as match; rate-limited "
        "per address (`FACEMATCH_RATE_LIMIT_DOWNLOAD`)."),
    ("/api/v2/events/<event_id>/photos/<path:photo_id>/download", "POST"): _op(
        "One original, as a download (the page's viewer)", "photos",
        _binary(("image/jpeg", "image/png", "image/webp", "image/tiff", "image/bmp", "image/heif",
                 "application/octet-stream"), "the original, `Content-Disposition: attachment`"), (400, 404, 409),
        body=_form("DownloadRequest"), attendee=True),
    ("/api/v2/events/<event_id>/photos", "GET"): _op(
        "What the pipeline did with the event's photos (the dashboard's failures)", "photos", _ok("PhotoOutcomes"),
        (400,), write=True,
        description="One row per photo the pipeline was asked to ingest (API, worker, CLI), newest first. "
        "Any key covering the event."),
    ("/api/v2/events/<event_id>/photos/<path:photo_id>/retry", "POST"): _op(
        "Retry a photo: ingest it again from its stored URL", "photos", _ok("RetryResponse"), (400, 404, 409, 503),
        write=True, body={"required": False, "content": {"application/json": {"schema": ref("RetryRequest")}}},
        description="A Firestore photo is set back to `pending` for the photo worker instead (status `pending`). "
        "Organizer key for the event."),
    ("/api/v2/events", "GET"): _op(
        "The events a key may see, with their counts (the dashboard)", "photos", _ok("EventList"), (), write=True,
        description="A scoped key sees the events its patterns match; the dashboard polls it while ingests run."),
    ("/api/v2/events/<event_id>/qr", "POST"): _op(
        "The attendee link as a printable SVG QR code", "photos",
        _binary(("image/svg+xml",), "SVG"), (400,), body={"required": False, "content": {
            "application/json": {"schema": ref("QrRequest")}}}, write=True,
        description="`/e/<event_id>`, with `?code=` when `code` is sent (403 `event_code_invalid` unless it is "
        "the event's code). POST: the code travels in the body, never in an address."),
    ("/admin", "GET"): _html("Organizer dashboard", "Counts, failures and retries, access code, QR code, "
                             "delete-event; the organizer key stays in the tab (sessionStorage)."),
    ("/openapi.json", "GET"): {
        "summary": "This description (OpenAPI 3.1)", "tags": ["web"],
        "responses": {"200": {"description": "OpenAPI document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}},
    ("/docs", "GET"): _html("Human-readable API reference", "This description rendered as HTML."),
    ("/", "GET"): _html("Selfie page", "Pick an event, take a selfie, see your photos."),
    ("/e/<event_id>", "GET"): _html("Selfie page for one event", "Share this link with attendees."),
    ("/metrics", "GET"): {
        "summary": "Prometheus metrics", "tags": ["service"],
        "responses": {"200": {"description": "Prometheus text format",
                              "content": {"text/plain": {"schema": s()}}}}},
}
OPERATIONS[("/api/v2/events/<event_id>/forget-requests", "GET")]["parameters"] = [
    {"name": "limit", "in": "query", "required": False, "description": "records per page (default 100)",
     "schema": integer(minimum=1, maximum=1000)},
    {"name": "before", "in": "query", "required": False, "description": "`next_before` of the previous page",
     "schema": integer(minimum=1)},
]
OPERATIONS[("/api/v2/events/<event_id>/photos", "GET")]["parameters"] = [
    {"name": "status", "in": "query", "required": False, "description": "only photos with this status",
     "schema": s(enum=["done", "no_face", "failed", "retrying", "pending"])},
    {"name": "limit", "in": "query", "required": False, "description": "photos per answer (default 100)",
     "schema": integer(minimum=1, maximum=1000)},
]
