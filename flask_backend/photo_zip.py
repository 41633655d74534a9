"""“Download all”: the chosen photos' originals as one zip, streamed while it is built.

Each original is fetched through the SSRF-safe fetcher (the same policy as ingest), a few
ahead of the one being written so downloads overlap; entries are STORED (JPEGs do not
compress) and written to the response as they are made, so memory stays at a few photos
whatever the zip's size. A photo that cannot be fetched, or is not in the event, is listed
in ``MISSING.txt`` inside the zip: the archive is always complete and valid.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from .errors import ApiError
from .imaging import sniff_format
from .ingest import fetch_bytes
from .services import Services

log = logging.getLogger(__name__)

LOOKAHEAD = 3  # photos fetched ahead of the one being written
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp", "HEIF": ".heic"}
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff", "BMP": "image/bmp",
        "HEIF": "image/heif"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


class _Sink:
    """A write-only, unseekable file: zipfile writes into it, the generator drains it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.pos = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def entry_name(photo_id: str, data: bytes, taken: set[str]) -> str:
    stem = _UNSAFE.sub("_", photo_id.replace("/", "_")).strip(" .") or "photo"
    ext = EXTENSIONS.get(sniff_format(data) or "", "")
    if stem.lower().endswith(ext) and ext:
        stem = stem[: -len(ext)]
    name, n = f"{stem[:150]}{ext}", 1
    while name.lower() in taken:
        n += 1
        name = f"{stem[:150]}-{n}{ext}"
    taken.add(name.lower())
    return name


def stream_zip(services: Services, photos: Sequence[tuple[str, str | None]], missing: Sequence[tuple[str, str]] = ()
               ) -> Iterator[bytes]:
    """Zip bytes for ``photos`` ([(photo_id, source_url)]); ``missing``: (photo_id, why) known upfront."""
    sink = _Sink()
    absent = list(missing)
    taken: set[str] = {"missing.txt"}

    def fetch(url: str | None) -> bytes:
        if not url or not url.lower().startswith(("http://", "https://")):
            raise ValueError("no http(s) source URL is known for this photo")
        return fetch_bytes(services, url)

    with ThreadPoolExecutor(LOOKAHEAD, thread_name_prefix="zip-fetch") as pool:
        queue: deque[tuple[str, Future]] = deque()
        todo = iter(photos)

        def top_up() -> None:
            while len(queue) < LOOKAHEAD:
                nxt = next(todo, None)
                if nxt is None:
                    return
                queue.append((nxt[0], pool.submit(fetch, nxt[1])))

        top_up()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            while queue:
                photo_id, future = queue.popleft()
                top_up()
                try:
                    data = future.result()
                except ApiError as exc:
                    absent.append((photo_id, f"{exc.code}: {exc.message}"))
                    continue
                except Exception as exc:  # noqa: BLE001 - any failure of one photo goes to MISSING.txt
                    absent.append((photo_id, str(exc) or type(exc).__name__))
                    continue
                zf.writestr(entry_name(photo_id, data, taken), data)
                del data
                yield sink.drain()
            if absent:
                lines = [f"{len(absent)} photo(s) could not be included:", ""]
                lines += [f"{pid}\t{why}" for pid, why in absent]
                zf.writestr("MISSING.txt", "\n".join(lines) + "\n")
        yield sink.drain()
