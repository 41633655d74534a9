"""The ingest request, shared by /api/v1/ingest and /api/v2/ingest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .. import errors, outcomes
from ..access import keys
from ..errors import ApiError
from ..ingest import IngestResult, ingest_photo
from .fields import Fields, services


def requested_spaces(fields: Fields) -> list[str] | None:
    value = fields.json_value("spaces") if fields.has("spaces") else None
    if value is None:
        return None
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        raise errors.invalid_field("'spaces' must be a list like [\"v1\", \"v2\"]")
    return value


def ingest_request(fields: Fields, vectors: Mapping[str, Sequence[np.ndarray]] | None) -> IngestResult:
    svc = services()
    event_id = fields.text("event_id", required=True, max_len=256)
    keys.require(svc, keys.WRITE, event_id)  # a scoped key writes only its own events
    photo_id = fields.text("photo_id", required=True, max_len=1024)
    image_url = fields.text("image_url", max_len=4096)
    image = None
    if vectors is None:
        images = fields.images(svc.settings.max_image_bytes)
        if len(images) > 1:
            raise errors.too_many_images("ingest takes one photo per request")
        image = images[0] if images else None
        if image is None and image_url is None:
            raise errors.missing_image("send image_url, image_base64, a multipart file 'image' or embeddings")
    try:
        result = ingest_photo(
            svc, event_id, photo_id, image=image, image_url=image_url, vectors=vectors,
            spaces=requested_spaces(fields),
        )
    except ApiError as exc:  # the dashboard shows API failures too
        outcomes.record_error(svc, event_id, photo_id, exc, via="api", source_url=image_url)
        raise
    outcomes.record_result(svc, event_id, photo_id, result.faces_indexed, via="api", source_url=image_url)
    return result
