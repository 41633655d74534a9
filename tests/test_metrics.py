"""/metrics without PROMETHEUS_MULTIPROC_DIR (dev server, tests): the in-process registry.
Multi-worker correctness is tested with a real gunicorn in test_deploy.py."""

from __future__ import annotations

import base64
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flask_backend import create_app
from tests.conftest import make_settings


def _value(text: str, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def client(tmp_path_factory, pack_dir):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        pytest.skip("PROMETHEUS_MULTIPROC_DIR is set: this module tests the single-process fallback")
    return create_app(make_settings(tmp_path_factory.mktemp("metrics"), pack_dir, ingest_spaces=("v2",))).test_client()


def test_requests_ingest_match_and_gauges(client, faces_dir):
    before = client.get("/metrics").get_data(as_text=True)
    assert client.get("/metrics").headers["Content-Type"].startswith("text/plain")
    for _ in range(3):
        client.get("/health")
    client.get("/api/v2/events/nope")  # 404: counted under its route rule, not its URL
    photo = base64.b64encode((faces_dir / "group__two_people.jpg").read_bytes()).decode()
    ok = client.post("/api/v2/ingest", json={"event_id": "m", "photo_id": "g", "image_base64": photo})
    assert ok.status_code == 200 and ok.get_json()["faces_indexed"] == 2
    bad = client.post("/api/v2/ingest", json={"event_id": "m", "photo_id": "x", "image_base64": "aGVsbG8="})
    assert bad.status_code == 415
    emb = client.post("/api/v2/embed", json={"image_base64": base64.b64encode(
        (faces_dir / "obama__1.jpg").read_bytes()).decode()}).get_json()["embedding"]
    assert client.post("/api/v2/match", json={"event_id": "m", "user_embedding": emb}).status_code == 200

    after = client.get("/metrics").get_data(as_text=True)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("facematch_http_requests_total", endpoint="/health", method="GET", status="200") == 3
    assert delta("facematch_http_requests_total", endpoint="/api/v2/events/<event_id>", status="404") == 1
    assert delta("facematch_http_request_duration_seconds_count", endpoint="/health") == 3
    assert delta("facematch_ingest_photos_total", source="api", outcome="done") == 1
    assert delta("facematch_ingest_faces_total", source="api") == 2
    assert delta("facematch_ingest_failures_total", source="api", code="unsupported_image") == 1
    assert delta("facematch_match_duration_seconds_count", space="v2") == 1
    assert _value(after, "facematch_engine_ready", space="v2") == 1.0
    assert _value(after, "facematch_engine_ready", space="v1") == 1.0
    assert _value(after, "facematch_index_faces", space="v2") == 2.0
    assert _value(after, "facematch_index_photos", space="v2") == 1.0
    assert _value(after, "facematch_index_events", space="v2") == 1.0
    assert "event_id=" not in after and 'photo_id="' not in after  # bounded labels only
