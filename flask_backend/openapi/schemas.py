"""OpenAPI component schemas: small constructors and every request/response schema."""

from __future__ import annotations

from typing import Any

from ..config import Settings

Schema = dict[str, Any]


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


def schemas(settings: Settings) -> dict[str, Schema]:
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

