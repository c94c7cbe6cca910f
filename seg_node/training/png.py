"""Label PNGs: read 8-bit indexed (palette) annotations as their palette indices, write indexed masks.

SageMaker recommends 8-bit indexed (``P`` mode) annotations and PASCAL VOC ships them; their class
id is the palette index, not the colour. OpenCV always expands a palette to colours, and Pillow is
not a dependency of the ROS-side tools, so an indexed PNG is read through OpenCV after its palette
is swapped for a grey ramp (entry i = (i, i, i)): libpng then decodes every bit depth, filter and
interlacing, and each pixel comes out as its own index. Writing needs no codec at all: a PNG is a
few zlib-compressed chunks.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

__all__ = ['PngError', 'encode_indexed_png', 'png_color_type', 'read_label_image', 'write_indexed_png']

SIGNATURE = b'\x89PNG\r\n\x1a\n'
INDEXED = 3  # IHDR colour type of palette images
_CRITICAL = {b'IHDR', b'PLTE', b'IDAT', b'IEND'}


class PngError(ValueError):
    """A PNG file is truncated or malformed."""


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk; raise PngError on a truncated file."""
    chunks, pos = [], len(SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            msg = 'truncated PNG chunk header'
            raise PngError(msg)
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            msg = f'truncated PNG chunk {kind!r}'
            raise PngError(msg)
        chunks.append((kind, data[pos + 8:pos + 8 + length]))
        pos = end
        if kind == b'IEND':
            break
    if not chunks or chunks[0][0] != b'IHDR' or len(chunks[0][1]) != 13:
        msg = 'PNG without a valid IHDR chunk'
        raise PngError(msg)
    return chunks


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))


def png_color_type(data: bytes) -> int | None:
    """IHDR colour type of PNG ``data`` (0 grey, 2 RGB, 3 indexed, 4 grey+alpha, 6 RGBA); None if not a PNG."""
    if not data.startswith(SIGNATURE) or len(data) < 33 or data[12:16] != b'IHDR':
        return None
    return data[25]


def _palette_as_indices(data: bytes) -> bytes:
    """The same indexed PNG with a grey-ramp palette and only its critical chunks.

    Ancillary chunks go too (tRNS, gAMA, iCCP, eXIf...), so nothing can alter the decoded values.
    """
    chunks = _chunks(data)
    bit_depth = chunks[0][1][8]
    if bit_depth not in (1, 2, 4, 8):
        msg = f'indexed PNG with bit depth {bit_depth}'
        raise PngError(msg)
    ramp = bytes(v for i in range(2 ** bit_depth) for v in (i, i, i))
    out = [SIGNATURE]
    for kind, payload in chunks:
        if kind in _CRITICAL:
            out.append(_chunk(kind, ramp if kind == b'PLTE' else payload))
    return b''.join(out)


def read_label_image(path: str | Path) -> np.ndarray | None:
    """A label image as stored: palette indices for an indexed PNG, else OpenCV's unchanged read.

    Returns None when the file is missing or cannot be decoded (as ``cv2.imread`` does).
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if png_color_type(data) == INDEXED:
        try:
            data = _palette_as_indices(data)
        except PngError:
            return None
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        # Every channel holds the index; the first is taken (a view would keep 3x the memory).
        return None if decoded is None else np.ascontiguousarray(decoded[..., 0])
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def encode_indexed_png(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> bytes:
    """An 8-bit indexed PNG of a uint8 class mask whose palette holds ``palette`` (padded to 256 with black)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        msg = f'an indexed PNG needs a uint8 [H, W] mask, got {mask.dtype} {mask.shape}'
        raise ValueError(msg)
    if len(palette) > 256:
        msg = f'a PNG palette holds at most 256 colours, got {len(palette)}'
        raise ValueError(msg)
    table = np.zeros((256, 3), np.uint8)
    if len(palette):
        table[:len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    h, w = mask.shape
    # Filter "Up" on every row (the first row's prior row is zeros): rows of a mask repeat a lot.
    previous = np.vstack([np.zeros((1, w), np.uint8), mask[:-1]])
    rows = np.hstack([np.full((h, 1), 2, np.uint8), np.subtract(mask, previous, dtype=np.uint8)])
    header = struct.pack('>IIBBBBB', w, h, 8, INDEXED, 0, 0, 0)
    return b''.join([SIGNATURE, _chunk(b'IHDR', header), _chunk(b'PLTE', table.tobytes()),
                     _chunk(b'IDAT', zlib.compress(rows.tobytes(), 6)), _chunk(b'IEND', b'')])


def write_indexed_png(path: str | Path, mask: np.ndarray, palette: Sequence[Sequence[int]]) -> None:
    """Write ``mask`` as an 8-bit indexed PNG with ``palette`` (SageMaker's ``image/png`` answer)."""
    Path(path).write_bytes(encode_indexed_png(mask, palette))
