"""The OpenAPI 3.1 description of the HTTP API (served at ``/openapi.json``, rendered at ``/docs``).

It cannot drift silently from the code:

* ``build_spec(app)`` lists only the routes the app really has, and ``undocumented_routes(app)``
  names every route without an entry here (a test requires it to be empty);
* response schemas are closed (``additionalProperties: false``), and a test validates real
  responses of every endpoint, success and error, against them;
* a test checks that every ``ApiError`` code raised in ``flask_backend`` is listed under its
  status in ``ERROR_CODES``;
* defaults (page size, top_k limit, v1 tolerance, version) come from the running settings.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from flask import Flask

from . import __version__
from .config import Settings

OPENAPI_VERSION = "3.1.0"
Schema = dict[str, Any]

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


# --------------------------------------------------------------------------- schema helpers
def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Schema], required: tuple[str, ...] | list[str] = (), *, extra: bool = False, **more) -> Schema:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": extra, **more}


def arr(items: Schema, **more) -> Schema:
    return {"type": "array", "items": items, **more}


def s(description: str | None = None, **more) -> Schema:
    out: Schema = {"type": "string", **more}
    if description:
        out["description"] = description
    return out


def num(description: str | None = None, **more) -> Schema:
    out: Schema = {"type": "number", **more}
    if description:
        out["description"] = description
    return out


def integer(description: str | None = None, **more) -> Schema:
    out: Schema = {"type": "integer", **more}
    if description:
        out["description"] = description
    return out


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


FILE = {"type": "string", "format": "binary", "contentMediaType": "image/*"}
EVENT_CODE = s("the event's code, on a `code` event (or header `X-Event-Code`)", maxLength=256)
EVENT_CODE_HEADER = {"name": "X-Event-Code", "in": "header", "required": False,
                     "description": "the event's code, on a `code` event (or field `event_code`)",
                     "schema": s(maxLength=256)}
TEXT_NUMBER = s("a number as text; `null` for no limit where allowed")


def _schemas(settings: Settings) -> dict[str, Schema]:
    bbox = arr(num(), minItems=4, maxItems=4, description="[x1, y1, x2, y2] in pixels of the original, EXIF-oriented photo")
    vector = arr(num(), minItems=1, description="a face vector")
    engine = {
        "ready": {"type": "boolean"},
        "model": nullable(s()),
        "dim": nullable(integer()),
        "error": nullable(s()),
    }
    page_fields: dict[str, Schema] = {
        "event_id": s(),
        "model": s("model id of the space that served the match"),
        "mode": s(enum=["top_k", "all"]),
        "next_cursor": nullable(s("`mode: all` only: send back as `cursor` for the next page; null on the last page")),
        "total": nullable(integer("`mode: all`: photos above the threshold in all pages; null for top_k")),
        "queries": integer("selfies / vectors combined into the query", minimum=1),
        "combine": s("`mean` when several selfies were averaged into one template", enum=["single", "mean"]),
        "search": s("`exact`: every qualifying photo was considered. `approximate`: a large event's "
                    "approximate index served the query (recall >= 0.995 on the benchmark, not 1: a photo "
                    "exact search would return may be missing)", enum=["exact", "approximate"]),
    }
    page_required = ("event_id", "matches", "model", "mode", "next_cursor", "total", "queries", "combine",
                     "search")
    url = nullable(s("the photo's source URL (the `image_url` given at ingest), when known"))
    thumb = {
        "thumbnail_url": nullable(s("a ~480 px thumbnail (relative to this API; signed on a `code` event), or a "
                                    "Cloudinary-derived URL; null: none (ingested by vector), show `url`")),
        "image_width": nullable(integer("the original's width, in which `bbox` is; null when unknown")),
        "image_height": nullable(integer("the original's height; null when unknown")),
    }
    outcome = {
        "photo_id": s(), "status": s(enum=["done", "no_face", "failed", "retrying", "pending"],
                                     description="`retrying`: the worker tries again; `pending`: queued again "
                                     "for the worker by a retry"),
        "code": nullable(s("error code of a failure")), "message": nullable(s()),
        "source_url": nullable(s()), "via": s(enum=["api", "worker", "cli"]),
        "faces": integer(minimum=0), "attempts": integer(minimum=0), "updated_at": num("unix seconds"),
    }
    outcome_required = ("photo_id", "status", "code", "message", "source_url", "via", "faces", "attempts",
                        "updated_at")
    paging = {
        "top_k": nullable(integer(f"best photos to return (default 20, at most {settings.max_top_k}); "
                                  "null means all, like `mode: all`", minimum=1, maximum=settings.max_top_k)),
        "mode": s("`all`: every photo above the threshold, in pages", enum=["top_k", "all"], default="top_k"),
        "page_size": integer(f"`mode: all` page size (default {settings.page_size})", minimum=1,
                             maximum=settings.max_top_k),
        "cursor": s("`next_cursor` of the previous page"),
    }
    images_json = {
        "image_base64": s("one image, base64 (a `data:` URL prefix is accepted)"),
        "images": arr(s(), maxItems=10, description="several selfies of one person, base64"),
    }
    removed_per_space = {"type": "object", "additionalProperties": integer(minimum=0),
                         "description": "faces removed, per space"}
    multipart_paging = {k: TEXT_NUMBER if k in ("top_k", "page_size") else v for k, v in paging.items()}
    files = arr(FILE, maxItems=10, description="the selfie; repeat the field for several selfies")
    verify_faces = {
        "faces_a": nullable(integer("faces found in image a; null when a vector was sent", minimum=1)),
        "faces_b": nullable(integer("faces found in image b; null when a vector was sent", minimum=1)),
        "face_a": nullable(ref("IndexedFace")), "face_b": nullable(ref("IndexedFace")),
    }
    return {
        "Error": obj(
            {"error": obj({"code": s("machine-readable, see the status's list"), "message": s("for humans"),
                           "request_id": s("echoes `X-Request-ID`; quote it when reporting a problem")},
                          ("code", "message"), extra=True)},
            ("error",),
        ),
        "BBox": bbox,
        "MatchV2": obj({"photo_id": s(), "score": num("cosine similarity of the photo's best face"),
                        "bbox": ref("BBox"), "url": url, **thumb}, ("photo_id", "score", "bbox")),
        "MatchV1": obj({"photo_id": s(), "distance": num("Euclidean distance between raw descriptors"),
                        "score": num("1 - distance"), "bbox": ref("BBox"), "url": url, **thumb},
                       ("photo_id", "distance", "score", "bbox")),
        "MatchV2Response": obj(
            {**page_fields, "matches": arr(ref("MatchV2"), description="one per photo (its best face), best first"),
             "threshold": num(), "query_source": s(enum=["image", "embedding"])},
            (*page_required, "threshold", "query_source"),
        ),
        "MatchV1Response": obj(
            {**page_fields, "matches": arr(ref("MatchV1"), description="one per photo (its best face), best first"),
             "tolerance": num()},
            (*page_required, "tolerance"),
        ),
        "MatchV2Request": obj(
            {"event_id": s(), "user_embedding": vector, "embedding": vector,
             "embeddings": arr(vector, description="several selfies' embeddings, averaged"),
             **images_json, "threshold": num("cosine threshold (default: the pack's calibrated value)",
                                             minimum=-1, maximum=1), **paging, "event_code": EVENT_CODE},
            ("event_id",), extra=True,
        ),
        "MatchV1Request": obj(
            {"event_id": s(), "descriptor": arr(num(), minItems=128, maxItems=128),
             "descriptors": arr(arr(num(), minItems=128, maxItems=128)), **images_json,
             "tolerance": num(f"Euclidean tolerance (default {settings.v1_tolerance:g})", exclusiveMinimum=0,
                              maximum=2), **paging, "event_code": EVENT_CODE},
            ("event_id",), extra=True,
        ),
        "MatchMultipart": obj(
            {"event_id": s(), "image": files, "threshold": TEXT_NUMBER, "tolerance": TEXT_NUMBER,
             **multipart_paging, "event_code": EVENT_CODE},
            ("event_id", "image"), extra=True,
            description="`threshold` for v2, `tolerance` for v1",
        ),
        "IngestRequest": obj(
            {"event_id": s(), "photo_id": s(), "image_url": s("http(s) URL of the photo; kept as its source URL"),
             "image_base64": s(), "embedding": vector, "embeddings": arr(vector),
             "descriptor": arr(num(), minItems=128, maxItems=128), "descriptors": arr(arr(num())),
             "spaces": arr(s(enum=["v1", "v2"]), description="spaces to fill (default: every ready space)")},
            ("event_id", "photo_id"), extra=True,
            description="one of `image_url`, `image_base64`, or precomputed vectors (`embedding(s)` on v2, "
            "`descriptor(s)` on v1). Re-ingesting a photo_id replaces its faces.",
        ),
        "IngestMultipart": obj(
            {"event_id": s(), "photo_id": s(), "image": FILE, "spaces": s("comma-separated or JSON list")},
            ("event_id", "photo_id", "image"), extra=True,
        ),
        "IngestResponse": obj(
            {"event_id": s(), "photo_id": s(), "faces_indexed": integer(minimum=0),
             "faces": arr(ref("IndexedFace")),
             "model": nullable(s()),
             "spaces": {"type": "object", "additionalProperties": obj(
                 {"faces_indexed": integer(minimum=0), "model": s()}, ("faces_indexed", "model"))}},
            ("event_id", "photo_id", "faces_indexed", "faces", "model", "spaces"),
        ),
        "ImageRequest": obj({**images_json, "image_url": s("embed/detect only: fetch the image from this URL"),
                             "purpose": s("detect only: `ingest` uses the larger detector size",
                                          enum=["selfie", "ingest"])}, extra=True),
        "ImageMultipart": obj({"image": files}, ("image",), extra=True),
        "EmbedResponse": obj(
            {"embedding": vector, "bbox": ref("BBox"), "det_score": num(minimum=0, maximum=1),
             "quality": ref("FaceQuality"), "faces_detected": integer(minimum=1), "model": s()},
            ("embedding", "bbox", "det_score", "faces_detected", "model"),
            description="the largest face's unit-length embedding",
        ),
        "AnalyzeResponse": obj(
            {"descriptor": nullable(arr(num(), minItems=128, maxItems=128)), "bbox": ref("BBox"),
             "det_score": num(), "faces_detected": integer(minimum=1), "model": s()},
            ("descriptor", "bbox", "faces_detected"),
            description="the largest face's raw 128-d dlib descriptor (face_recognition / face-api.js compatible)",
        ),
        "DetectResponse": obj(
            {"faces": arr(obj({"bbox": ref("BBox"), "kps": arr(arr(num(), minItems=2, maxItems=2)),
                               "det_score": num(minimum=0, maximum=1), "quality": ref("FaceQuality"),
                               "embedding": vector},
                              ("bbox", "kps", "det_score", "embedding")), description="largest first"),
             "faces_detected": integer(minimum=0), "image_width": integer(), "image_height": integer(),
             "processing_time_ms": num(), "model": s()},
            ("faces", "image_width", "image_height", "processing_time_ms"),
        ),
        "FaceQuality": obj(
            {"size_px": num("longer side of the face box, original pixels", minimum=0),
             "sharpness": num("variance of the Laplacian of the grey face crop at 112 px; blur < ~20", minimum=0),
             "yaw": num("degrees, 0 = frontal, from the 5 landmarks (rough)", minimum=-90, maximum=90),
             "pitch": num("degrees, 0 = frontal, from the 5 landmarks (rough)", minimum=-90, maximum=90),
             "roll": num("degrees, tilt of the eye line in the photo", minimum=-180, maximum=180),
             "score": num("0-1: det_score x sharpness term x pose term; compared with "
                          "FACEMATCH_MIN_FACE_QUALITY at ingest", minimum=0, maximum=1)},
            ("size_px", "sharpness", "yaw", "pitch", "roll", "score"),
        ),
        "IndexedFace": obj(
            {"bbox": ref("BBox"), "det_score": num("detector score, 0-1 in both spaces (dlib's HOG margin m is "
                                                   "mapped to 1 / (1 + e^(-2m)))", minimum=0, maximum=1),
             "quality": nullable(ref("FaceQuality"))},
            ("bbox", "det_score", "quality"),
        ),
        "VerifyV2Request": obj(
            {"image_base64_a": s("first image, base64"), "image_base64_b": s("second image, base64"),
             "embedding_a": vector, "embedding_b": vector,
             "threshold": num("cosine threshold (default: the pack's calibrated value)", minimum=-1, maximum=1)},
            extra=True, description="each side: an image (`image_base64_a`) or a vector (`embedding_a`)",
        ),
        "VerifyV1Request": obj(
            {"image_base64_a": s(), "image_base64_b": s(),
             "descriptor_a": arr(num(), minItems=128, maxItems=128),
             "descriptor_b": arr(num(), minItems=128, maxItems=128),
             "tolerance": num(f"Euclidean tolerance (default {settings.v1_tolerance:g})", exclusiveMinimum=0,
                              maximum=2)},
            extra=True, description="each side: an image (`image_base64_a`) or a raw descriptor (`descriptor_a`)",
        ),
        "VerifyMultipart": obj(
            {"image_a": FILE, "image_b": FILE, "threshold": TEXT_NUMBER, "tolerance": TEXT_NUMBER},
            extra=True, description="`threshold` for v2, `tolerance` for v1; a side may be a JSON-text vector field",
        ),
        "VerifyV2Response": obj(
            {"similarity": num("cosine similarity of the two faces", minimum=-1, maximum=1), "threshold": num(),
             "is_match": {"type": "boolean"}, **verify_faces, "model": s()},
            ("similarity", "threshold", "is_match", "faces_a", "faces_b", "face_a", "face_b", "model"),
        ),
        "VerifyV1Response": obj(
            {"distance": num("Euclidean distance between the raw descriptors", minimum=0), "tolerance": num(),
             "is_match": {"type": "boolean"}, **verify_faces, "model": s()},
            ("distance", "tolerance", "is_match", "faces_a", "faces_b", "face_a", "face_b", "model"),
        ),
        "Health": obj(
            {"status": s(enum=["ok", "degraded"]), "version": s(), "insightface_ready": {"type": "boolean"},
             "engines": obj({"v1": obj(engine, ("ready", "model", "dim")),
                             "v2": obj({**engine, "providers": arr(s())}, ("ready", "model", "dim"))},
                            ("v1", "v2")),
             "storage": obj({"ok": {"type": "boolean"},
                             "reason": nullable(s("why the data directory is degraded, e.g. `storage_full: "
                                                  "disk_full`, `storage_unavailable: read_only`")),
                             "free_bytes": nullable(integer("free bytes of the data directory's file system")),
                             "writable": {"type": "boolean"}},
                            ("ok", "reason", "free_bytes", "writable"))},
            ("status", "version", "insightface_ready", "engines", "storage"),
        ),
        "EventSummary": obj(
            {"event_id": s(), "photos": integer("distinct photos in any space", minimum=0),
             "spaces": {"type": "object", "description": "per space (`v1`, `v2`)", "additionalProperties": obj(
                 {"engine": s(enum=["dlib", "insightface"]), "model": s(), "model_id": s(), "dim": integer(),
                  "photos": integer(minimum=0), "faces": integer(minimum=0),
                  "photos_without_faces": integer(minimum=0), "updated_at": num("unix seconds"),
                  "stale": nullable({"type": "boolean", "description": "built with another model than the "
                                     "engine now loaded; null when that engine is not ready"})},
                 ("engine", "model", "model_id", "dim", "photos", "faces", "photos_without_faces", "updated_at",
                  "stale"))}},
            ("event_id", "photos", "spaces"),
        ),
        "DeletedPhoto": obj({"event_id": s(), "photo_id": s(), "deleted": {"type": "boolean"},
                             "faces_removed": removed_per_space}, ("event_id", "photo_id", "deleted", "faces_removed")),
        "DeletedEvent": obj({"event_id": s(), "deleted": {"type": "boolean"}, "faces_removed": removed_per_space},
                            ("event_id", "deleted", "faces_removed")),
        "ForgetRequest": obj({**images_json, "event_code": EVENT_CODE}, extra=True,
                             description="the bar is the server's: `threshold`/`tolerance` are refused "
                             "(400 `field_not_allowed`)"),
        "ForgetMultipart": obj({"image": files, "event_code": EVENT_CODE}, ("image",), extra=True),
        "AccessRequest": obj(
            {"mode": s(enum=["open", "code"]),
             "code": s("`code` mode: what attendees type or get in their link (6 to 128 printable characters); "
                       "stored as a salted scrypt hash, never shown again", minLength=6, maxLength=128)},
            ("mode",), description="`{\"mode\": \"open\"}` or `{\"mode\": \"code\", \"code\": \"…\"}`"),
        "AccessResponse": obj(
            {"event_id": s(), "mode": s(enum=["open", "code"]),
             "default": {"type": "boolean", "description": "no setting for this event: "
                         "`FACEMATCH_DEFAULT_EVENT_ACCESS` applies"},
             "updated_at": nullable(num("unix seconds"))},
            ("event_id", "mode", "default", "updated_at"), description="the mode, never the code"),
        "ForgetRecord": obj(
            {"id": integer(minimum=1), "event_id": s(), "created_at": num("unix seconds"),
             "client_hash": s("keyed HMAC of the client address (server secret): equal for one client, "
                              "not the address"),
             "faces_removed": removed_per_space,
             "photos": arr(s(), description="photos that lost a face")},
            ("id", "event_id", "created_at", "client_hash", "faces_removed", "photos"),
            description="no image, no embedding, no address"),
        "ForgetRecords": obj(
            {"event_id": s(), "forget_requests": arr(ref("ForgetRecord"), description="newest first"),
             "next_before": nullable(integer("send as `before` for older records; null on the last page"))},
            ("event_id", "forget_requests", "next_before")),
        "PhotosZipRequest": obj(
            {"photo_ids": arr(s(), minItems=1, maxItems=settings.zip_max_photos,
                              description=f"at most {settings.zip_max_photos} (a form repeats the field)"),
             "event_code": EVENT_CODE},
            ("photo_ids",), extra=True),
        "DownloadRequest": obj({"event_code": EVENT_CODE}, extra=True),
        "PhotoOutcome": obj(outcome, outcome_required),
        "PhotoOutcomes": obj({"event_id": s(), "status": nullable(s()), "photos": arr(ref("PhotoOutcome"),
                                                                                     description="newest first")},
                             ("event_id", "status", "photos")),
        "RetryRequest": obj({}, extra=True, description="no fields: the photo's stored URL is used"),
        "RetryResponse": obj({"event_id": s(), **outcome}, ("event_id", *outcome_required),
                             description="the photo's outcome after the retry"),
        "EventStats": obj(
            {"event_id": s(), "photos": integer(minimum=0), "faces": integer(minimum=0),
             "photos_without_faces": integer(minimum=0), "failed": integer(minimum=0),
             "retrying": integer(minimum=0), "pending": integer(minimum=0),
             "stale_spaces": arr(s(), description="spaces built with another model than the one loaded"),
             "spaces": {"type": "object", "additionalProperties": obj(
                 {"photos": integer(minimum=0), "faces": integer(minimum=0), "model": s()},
                 ("photos", "faces", "model"))},
             "updated_at": nullable(num("unix seconds of the last write"))},
            ("event_id", "photos", "faces", "photos_without_faces", "failed", "retrying", "pending", "stale_spaces",
             "spaces", "updated_at"),
            description="`faces` and `photos_without_faces` of the v2 space (v1 when there is no v2)"),
        "EventList": obj({"events": arr(ref("EventStats"))}, ("events",)),
        "QrRequest": obj({"code": s("the event's code, to put in the link (must be the code set)", maxLength=128)},
                         extra=True),
        "ForgetResponse": obj(
            {"event_id": s(),
             "faces_removed": {"type": "object", "additionalProperties": integer(minimum=0)},
             "removed": {"type": "object", "additionalProperties": arr(
                 obj({"photo_id": s(), "bbox": ref("BBox"), "score": num()}, ("photo_id", "bbox", "score")))}},
            ("event_id", "faces_removed", "removed"),
        ),
    }


# --------------------------------------------------------------------------- operations
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
IGNORED_ENDPOINTS = {"static"}
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """Flask rule → OpenAPI path: ``/e/<path:x>`` → ``/e/{x}``."""
    return _CONVERTER.sub(r"{\1}", rule)


def app_routes(app: Flask) -> set[tuple[str, str]]:
    """(rule, method) of every route the app serves, but static files, HEAD and OPTIONS."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in IGNORED_ENDPOINTS:
            continue
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                out.add((rule.rule, method))
    return out


def undocumented_routes(app: Flask) -> list[tuple[str, str]]:
    return sorted(app_routes(app) - OPERATIONS.keys())


def _error_responses() -> dict[str, Any]:
    out = {}
    for status, codes in ERROR_CODES.items():
        listed = ", ".join(f"`{c}`" for c in codes)
        out[f"E{status}"] = {
            "description": f"{ERROR_MEANING[status]} Codes: {listed}.",
            "content": {"application/json": {"schema": ref("Error")}},
            "x-error-codes": list(codes),
        }
    return out


def build_spec(app: Flask | None = None) -> dict[str, Any]:
    """The OpenAPI document for ``app`` (every documented operation when ``app`` is None)."""
    settings = app.extensions["facematch"].settings if app is not None else Settings()
    routes = app_routes(app) if app is not None else set(OPERATIONS)
    paths: dict[str, dict[str, Any]] = {}
    for (rule, method), op in OPERATIONS.items():
        if (rule, method) not in routes:
            continue
        operation = copy.deepcopy(op)
        names = _CONVERTER.findall(rule)
        params = [{"name": n, "in": "path", "required": True, "schema": s()} for n in names]
        params += operation.pop("parameters", [])
        if operation.pop("x-event-code", False):
            params.append(EVENT_CODE_HEADER)
        if params:
            operation["parameters"] = params
        operation["operationId"] = f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', openapi_path(rule))}".rstrip("_")
        paths.setdefault(openapi_path(rule), {})[method.lower()] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "FaceMatch",
            "version": __version__,
            "summary": "Find every event photo you appear in from one selfie.",
            "description": (
                "Two embedding spaces: **v2** (InsightFace, cosine `threshold`) and **v1** (dlib, legacy, "
                "Euclidean `tolerance`). An index belongs to one space; queries never cross spaces. "
                "Multipart requests carry the same fields as form fields (numbers as text, lists as repeated "
                "fields or JSON text) and images as file `image` (repeat it for several selfies). "
                "Every error is JSON: `{\"error\": {\"code\", \"message\", \"request_id\"}}`. "
                "Browsers on other origins need the origin in `FACEMATCH_CORS_ORIGINS`."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "v2", "description": "InsightFace space"},
            {"name": "v1", "description": "legacy dlib space (face_recognition / face-api.js descriptors)"},
            {"name": "events", "description": "what an event holds; deletes are for good"},
            {"name": "photos", "description": "thumbnails, downloads, ingest outcomes and retries, the dashboard"},
            {"name": "service", "description": "operations"},
            {"name": "web", "description": "pages and this description"},
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _schemas(settings),
            "responses": _error_responses(),
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                           "description": "required on write endpoints when the server has "
                                           "FACEMATCH_API_KEYS set"}},
        },
    }
