"""Photos listed in Firestore (firebase-admin), by default at ``events/{event_id}/photos/{photo_id}``.

Discovery never depends on FaceMatch's own fields: every document of an event's photo
collection is listed, and its URL is read from the first of ``url``, ``imageUrl``,
``image_url``, ``secure_url`` that holds an http(s) URL. Status is written back by
``claims.FirestoreTracker``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import PhotoRef
from .claims import STATUS_FIELDS

log = logging.getLogger(__name__)

DEFAULT_LAYOUT = "events/{event_id}/photos/{photo_id}"
DEFAULT_URL_FIELDS = ("url", "imageUrl", "image_url", "secure_url")
PAGE_SIZE = 300
RPC_TIMEOUT = 60.0


class FirestoreConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Layout:
    """``<events collection path>/{event_id}/<photos collection>/{photo_id}``.

    The events collection may be nested under fixed documents, e.g.
    ``orgs/acme/events/{event_id}/photos/{photo_id}``.
    """

    events_path: str = "events"
    photos_collection: str = "photos"

    @classmethod
    def parse(cls, template: str) -> Layout:
        m = re.fullmatch(r"((?:[^/{}]+/[^/{}]+/)*[^/{}]+)/\{event_id\}/([^/{}]+)/\{photo_id\}", template.strip("/ "))
        if not m:
            raise FirestoreConfigError(
                f"layout {template!r} must look like 'events/{{event_id}}/photos/{{photo_id}}' "
                "(collection/{event_id}/collection/{photo_id}, optionally under fixed documents)"
            )
        return cls(m.group(1), m.group(2))


def connect(
    firebase_config: str | os.PathLike | None = None,
    project: str | None = None,
    *,
    database: str | None = None,
) -> Any:
    """A Firestore client from a service-account file, GOOGLE_APPLICATION_CREDENTIALS, or the
    emulator (FIRESTORE_EMULATOR_HOST, anonymous). Each call initialises its own firebase app."""
    import firebase_admin
    from firebase_admin import credentials, firestore

    options: dict[str, Any] = {}
    if firebase_config:
        path = Path(firebase_config)
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FirestoreConfigError(f"cannot read the Firebase service-account file {path}: {exc}") from exc
        cred: Any = credentials.Certificate(info)
        project = project or info.get("project_id")
    elif os.environ.get("FIRESTORE_EMULATOR_HOST"):
        import google.auth.credentials

        cred = google.auth.credentials.AnonymousCredentials()
    else:
        cred = credentials.ApplicationDefault()  # GOOGLE_APPLICATION_CREDENTIALS or the metadata server
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
    if not project and not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        raise FirestoreConfigError("no Firebase project id: pass --project or a service-account file with project_id")
    if project:
        options["projectId"] = project
    app = firebase_admin.initialize_app(cred, options, name=f"facematch-{uuid.uuid4().hex[:8]}")
    return firestore.client(app, database_id=database)


def photo_url(data: dict[str, Any], fields: Sequence[str] = DEFAULT_URL_FIELDS) -> str | None:
    for name in fields:
        value = data.get(name)
        if isinstance(value, str) and value.strip().lower().startswith(("http://", "https://")):
            return value.strip()
    return None


class FirestoreSource:
    name = "firestore"

    def __init__(self, client: Any, layout: Layout | None = None, url_fields: Sequence[str] = DEFAULT_URL_FIELDS) -> None:
        self.client = client
        self.layout = layout or Layout()
        self.url_fields = tuple(url_fields)

    @classmethod
    def open(
        cls,
        firebase_config: str | os.PathLike | None = None,
        project: str | None = None,
        layout: str = DEFAULT_LAYOUT,
        url_fields: Sequence[str] = (),
    ) -> FirestoreSource:
        return cls(connect(firebase_config, project), Layout.parse(layout), tuple(url_fields) or DEFAULT_URL_FIELDS)

    def events_collection(self) -> Any:
        return self.client.collection(self.layout.events_path)

    def photos_collection(self, event_id: str) -> Any:
        return self.events_collection().document(event_id).collection(self.layout.photos_collection)

    def events(self) -> list[str]:
        """Event documents, including "missing" ones that exist only as a parent of photos."""
        refs = self.events_collection().list_documents(page_size=PAGE_SIZE, timeout=RPC_TIMEOUT)
        return sorted(ref.id for ref in refs)

    def photos(self, event_id: str) -> Iterator[PhotoRef]:
        """Every photo document, paged by document id (long streams time out on big events)."""
        from google.cloud.firestore_v1.field_path import FieldPath

        fields = list(dict.fromkeys([*self.url_fields, *STATUS_FIELDS]))
        query = self.photos_collection(event_id).select(fields).order_by(FieldPath.document_id()).limit(PAGE_SIZE)
        last = None
        while True:
            page = (query.start_after(last) if last is not None else query).stream(timeout=RPC_TIMEOUT)
            n = 0
            for snap in page:
                n += 1
                last = snap
                data = snap.to_dict() or {}
                yield PhotoRef(event_id, snap.id, url=photo_url(data, self.url_fields), state=data)
            if n < PAGE_SIZE:
                return
