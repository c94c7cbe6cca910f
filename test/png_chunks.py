"""Read a PNG's colour type and palette from its chunks, independently of the package's PNG code."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

PALETTE_COLOUR_TYPE = 3  # IHDR colour type of an indexed (palette) image


def colour_type_and_palette(path: Path) -> tuple[int, list[tuple[int, int, int]]]:
    """The IHDR colour type and the PLTE entries (empty without one) of the PNG at ``path``."""
    data = Path(path).read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
    pos, chunks = 8, {}
    while pos < len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        assert struct.unpack('>I', data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + payload)
        chunks.setdefault(kind, payload)
        pos += 12 + length
    plte = chunks.get(b'PLTE', b'')
    return chunks[b'IHDR'][9], [tuple(plte[i:i + 3]) for i in range(0, len(plte), 3)]
