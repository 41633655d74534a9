"""The rows a search returns: a result page's faces with their photos (and thumbnails), by
face id, in one statement; the photo names a page's tie-break needs. Functions that take an
open connection, as store/sql.py (whose dialect helpers they use)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from .sql import _SPACE_KEYS, _postgres, in_ids


def _faces_by_id(c: Any, cols: str, face_ids: Iterable[int], thumbs_of: str | None = None) -> tuple[str, tuple]:
    """``(sql, param)``: ``SELECT cols`` over the listed faces (alias ``f``) joined to their
    photos (alias ``p``), for the few rows of a result page.

    PostgreSQL: a primary-key probe per listed face (a nested loop over the unnested ids,
    no bitmap scan) and per face's photo, whatever the statistics say. A plain join of
    ``face_id = ANY(…)`` is planned as a hash join over a sequential scan of ``photos``
    while that table is small or freshly loaded (0.3 ms at 3k photos, more as it grows,
    until autovacuum analyzes it); ``OFFSET 0`` keeps the lateral subquery a per-row lookup.

    ``thumbs_of`` (the event): also each photo's thumbnail, alias ``t`` (NULLs without one),
    in the same statement: one round trip less per match on PostgreSQL."""
    if _postgres(c):
        sql = (
            f"SELECT {cols} FROM unnest(?::bigint[]) AS u(id) JOIN faces f ON f.face_id = u.id "
            "CROSS JOIN LATERAL (SELECT photo_id, source_url FROM photos WHERE pid = f.pid OFFSET 0) p"
        )
        ids = [int(v) for v in face_ids]
        if thumbs_of is None:
            return sql, (ids,)
        sql += (" LEFT JOIN LATERAL (SELECT etag, src_width, src_height FROM thumbnails "
                "WHERE event_id = ? AND photo_id = p.photo_id OFFSET 0) t ON true")
        return sql, (ids, thumbs_of)
    frag, param = in_ids(c, "f.face_id", face_ids)
    if thumbs_of is None:
        return f"SELECT {cols} FROM faces f JOIN photos p ON p.pid = f.pid WHERE {frag}", (param,)
    sql = (f"SELECT {cols} FROM faces f JOIN photos p ON p.pid = f.pid LEFT JOIN thumbnails t "
           f"ON t.event_id = ? AND t.photo_id = p.photo_id WHERE {frag}")
    return sql, (thumbs_of, param)


def hit_rows(c: Any, face_ids: list[int]) -> dict[int, Sequence[Any]]:
    """face_id -> (face_id, photo_id, x1, y1, x2, y2, det_score, norm)."""
    sql, params = _faces_by_id(c, "f.face_id, p.photo_id, f.x1, f.y1, f.x2, f.y2, f.det_score, f.norm", face_ids)
    rows = c.execute(sql, params).fetchall()
    return {int(r[0]): r for r in rows}


class PageRow(NamedTuple):
    face_id: int
    photo_id: str
    source_url: str | None
    x1: float
    y1: float
    x2: float
    y2: float
    etag: str | None = None  # the photo's thumbnail (page_rows with thumbs_of), else None
    src_width: int | None = None
    src_height: int | None = None


_PAGE_COLS = "f.face_id, p.photo_id, p.source_url, f.x1, f.y1, f.x2, f.y2"


def page_rows(c: Any, face_ids: list[int], thumbs_of: str | None = None) -> dict[int, PageRow]:
    """{face_id: row} for a result page's best faces (their photo and box, with ``thumbs_of``
    the photo's thumbnail too), one query."""
    cols = _PAGE_COLS if thumbs_of is None else _PAGE_COLS + ", t.etag, t.src_width, t.src_height"
    sql, params = _faces_by_id(c, cols, face_ids, thumbs_of)
    return {int(r[0]): PageRow(*r) for r in c.execute(sql, params).fetchall()}


def space_and_page_rows(c: Any, event_id: str, name: str, face_ids: list[int],
                        thumbs_of: str | None) -> tuple[dict[str, Any] | None, dict[int, PageRow]]:
    """The space row and a page's rows (as ``page_rows``) in ONE statement: a statement sees one
    snapshot by itself, so without a transaction the rows are those of the seq it returns
    (PostgreSQL: one round trip where a read transaction takes four)."""
    cols = _PAGE_COLS if thumbs_of is None else _PAGE_COLS + ", t.etag, t.src_width, t.src_height"
    inner, params = _faces_by_id(c, cols, face_ids, thumbs_of)
    space_cols = ", ".join(f"s.{k}" for k in _SPACE_KEYS)
    rows = c.execute(
        f"SELECT {space_cols}, r.* FROM spaces s LEFT JOIN LATERAL ({inner}) r ON true "
        "WHERE s.event_id = ? AND s.name = ?",
        (*params, event_id, name),
    ).fetchall()
    if not rows:
        return None, {}
    n = len(_SPACE_KEYS)
    page = {int(r[n]): PageRow(*r[n:]) for r in rows if r[n] is not None}
    return dict(zip(_SPACE_KEYS, rows[0][:n], strict=True)), page


def photo_names(c: Any, pids: list[int]) -> list[Sequence[Any]]:
    if _postgres(c):  # a primary-key probe per photo (see _faces_by_id), not a scan of a fresh table
        return c.execute(
            "SELECT p.pid, p.photo_id, p.source_url FROM unnest(?::bigint[]) AS u(id) CROSS JOIN LATERAL "
            "(SELECT pid, photo_id, source_url FROM photos WHERE pid = u.id OFFSET 0) p",
            ([int(v) for v in pids],),
        ).fetchall()
    frag, param = in_ids(c, "pid", pids)
    return c.execute(f"SELECT pid, photo_id, source_url FROM photos WHERE {frag}", (param,)).fetchall()
