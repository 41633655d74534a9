"""The tables next to the faces (thumbnails, ingest outcomes: store/thumbnails_db.py) on both
backends: written, read, replaced, and removed with their photo / event by the store's deletes."""

from __future__ import annotations

import numpy as np

from flask_backend.store import FaceRecord, Space
from flask_backend.store import thumbnails_db as tdb
from flask_backend.store.ranking import RankSpec

V2 = Space("v2", "insightface", "det500m_mbf128", 8)


def _thumb(data: bytes) -> tdb.Thumbnail:
    return tdb.Thumbnail("image/webp", data, tdb.etag_of(data), 48, 32, 480, 320)


def _outcome(photo_id: str, status: str, attempts: int) -> tdb.Outcome:
    return tdb.Outcome("ev", photo_id, status, None if status == "done" else "fetch_failed", None,
                       f"https://x/{photo_id}.jpg", "worker", None, 1, attempts, 1000.0 + attempts)


def test_thumbnails_and_outcomes_follow_their_photos(tmp_path, store_backend):
    store = store_backend.open(tmp_path / "data")
    face = FaceRecord(np.ones(8), (1, 2, 3, 4), 0.9)
    for p in ("a", "b"):
        store.put_photo("ev", p, V2, [face], source_url=f"https://x/{p}.jpg")
    with store.db.write() as c:
        tdb.put_thumbnail(c, "ev", "a", _thumb(b"\x00old"))
        tdb.put_thumbnail(c, "ev", "a", _thumb(b"\x00\xffnew"))  # replaced, not duplicated
        tdb.put_thumbnail(c, "ev", "b", _thumb(b"b"))
        tdb.put_outcome(c, _outcome("a", "failed", 1))
        tdb.put_outcome(c, _outcome("a", "done", 2))
        tdb.put_outcome(c, _outcome("c", "failed", 3))
    with store.db.read() as c:
        assert tdb.get_thumbnail(c, "ev", "a").data == b"\x00\xffnew"
        new_etag = tdb.get_thumbnail(c, "ev", "a").etag
        assert tdb.get_outcome(c, "ev", "a").status == "done"
        assert [o.photo_id for o in tdb.list_outcomes(c, "ev", "failed", 10)] == ["c"]
        assert tdb.outcome_counts(c) == {"ev": {"done": 1, "failed": 1}}
        assert tdb.photos_without_thumbnail(c, "ev") == []
    # match rows carry their photo's thumbnail (read with the rows: one statement)
    page = store.match("ev", V2, np.ones(8), RankSpec(0.5), limit=10, thumbnails=True)
    assert {r.photo_id for r in page.rows} == {"a", "b"} and set(page.thumbs) == {"a", "b"}
    assert page.thumbs["a"].etag == new_etag
    assert store.match("ev", V2, np.ones(8), RankSpec(0.5), limit=10).thumbs == {}
    store.delete_photo("ev", "a")
    with store.db.read() as c:
        assert tdb.get_thumbnail(c, "ev", "a") is None and tdb.get_outcome(c, "ev", "a") is None
        assert tdb.get_thumbnail(c, "ev", "b") is not None
    store.delete_event("ev")
    with store.db.read() as c:
        assert not tdb.event_has_rows(c, "ev")
    store.close()


def test_face_quality_is_stored_on_both_backends(tmp_path, store_backend):
    """Schema 2 (issue 10): each face's quality columns, NULL for precomputed vectors."""
    from flask_backend.store import FaceQualityRow

    store = store_backend.open(tmp_path / "data")
    q = FaceQualityRow(size_px=120.0, sharpness=0.7, yaw=5.0, pitch=-3.0, score=0.85)
    store.put_photo("ev", "a", V2, [FaceRecord(np.ones(8), (1, 2, 3, 4), 0.9, quality=q)])
    store.put_photo("ev", "b", V2, [FaceRecord(-np.ones(8), (1, 2, 3, 4), 0.9)])
    with store.db.read() as c:
        rows = c.execute("SELECT p.photo_id, f.size_px, f.sharpness, f.yaw, f.pitch, f.quality FROM faces f "
                         "JOIN photos p ON p.pid = f.pid ORDER BY p.photo_id").fetchall()
    assert [tuple(r) for r in rows] == [("a", 120.0, 0.7, 5.0, -3.0, 0.85), ("b", None, None, None, None, None)]
    store.close()
