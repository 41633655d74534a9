"""Image test data shared by several test modules (built once per session where costly)."""

from __future__ import annotations

import struct
import zlib

import pytest

BOMB_SIDE = 20000


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of width x height, all black: tiny on disk, huge decoded."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def png_bomb_20k() -> bytes:
    """The 20000x20000 (400 MP) PNG bomb, encoded once for the whole session."""
    return png_bomb(BOMB_SIDE, BOMB_SIDE)
