"""sensor_msgs Image / CompressedImage as CDR bytes, the form ROS 2 middlewares carry, without rclpy.

Reading a received frame from its serialized bytes skips building a Python message (a numpy
view onto the bytes is enough), and writing outputs straight into a persistent CDR buffer
skips the copies rclpy makes on ``publish``. Layout (XCDR1, little endian, as every ROS 2 rmw
serializes): a 4-byte encapsulation header, then the fields in order, each aligned to its own
size counted from the end of that header; a string is a uint32 length (NUL included), its
bytes and a NUL; a byte sequence is a uint32 count and the bytes.

Every length is checked against the buffer before it is used: a malformed payload raises
``CdrError`` with one sentence, never reads past the end.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

ENCAPSULATION_LE = b'\x00\x01\x00\x00'  # CDR, little endian, no options
_BODY = len(ENCAPSULATION_LE)  # alignment counts from here
_U32 = struct.Struct('<I')
_STAMP = struct.Struct('<iI')


class CdrError(ValueError):
    """Serialized bytes do not hold the expected message; the message says why in one sentence."""


@dataclass(frozen=True)
class Stamp:
    """builtin_interfaces/Time."""

    sec: int
    nanosec: int


@dataclass(frozen=True)
class CdrHeader:
    """std_msgs/Header of a serialized message, and its exact CDR bytes (for outputs to reuse)."""

    stamp: Stamp
    frame_id: str
    raw: bytes  # stamp + frame_id as serialized, starting at body offset 0


@dataclass(frozen=True)
class SerializedImage:
    """A sensor_msgs/Image read from CDR: the message's fields, ``data`` a view onto the bytes."""

    header: CdrHeader
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


@dataclass(frozen=True)
class SerializedCompressedImage:
    """A sensor_msgs/CompressedImage read from CDR, ``data`` a view onto the bytes."""

    header: CdrHeader
    format: str
    data: memoryview


class _Reader:
    """Bounds-checked reading of CDR fields from a buffer."""

    def __init__(self, payload: bytes | bytearray | memoryview, what: str) -> None:
        self.view = memoryview(payload).cast('B')
        self.what = what
        if len(self.view) < _BODY or bytes(self.view[:2]) != ENCAPSULATION_LE[:2]:
            head = bytes(self.view[:4]).hex(' ') or 'nothing'
            msg = f'{what} is not little-endian CDR (encapsulation {head})'
            raise CdrError(msg)
        self.pos = _BODY

    def _need(self, size: int, field: str) -> None:
        if self.pos + size > len(self.view):
            msg = (f'{self.what} is truncated: {field} needs {size} bytes at offset {self.pos}, '
                   f'{len(self.view)} bytes in all')
            raise CdrError(msg)

    def align(self, size: int) -> None:
        self.pos += -(self.pos - _BODY) % size

    def u32(self, field: str) -> int:
        self.align(4)
        self._need(4, field)
        (value,) = _U32.unpack_from(self.view, self.pos)
        self.pos += 4
        return value

    def u8(self, field: str) -> int:
        self._need(1, field)
        value = self.view[self.pos]
        self.pos += 1
        return value

    def string(self, field: str) -> str:
        length = self.u32(field)
        if length == 0:
            msg = f'{self.what}: {field} has length 0 (a CDR string holds at least its NUL)'
            raise CdrError(msg)
        self._need(length, field)
        raw = bytes(self.view[self.pos:self.pos + length - 1])
        self.pos += length
        try:
            return raw.decode()
        except UnicodeDecodeError:
            msg = f'{self.what}: {field} is not UTF-8'
            raise CdrError(msg) from None

    def sequence(self, field: str) -> memoryview:
        count = self.u32(field)
        self._need(count, field)
        data = self.view[self.pos:self.pos + count]
        self.pos += count
        return data

    def header(self) -> CdrHeader:
        self._need(_STAMP.size, 'header.stamp')
        sec, nanosec = _STAMP.unpack_from(self.view, self.pos)
        self.pos += _STAMP.size
        frame_id = self.string('header.frame_id')
        return CdrHeader(Stamp(sec, nanosec), frame_id, bytes(self.view[_BODY:self.pos]))


def parse_image(payload: bytes | bytearray | memoryview) -> SerializedImage:
    """The fields of a serialized sensor_msgs/Image; ``data`` is a zero-copy view."""
    reader = _Reader(payload, 'serialized Image')
    header = reader.header()
    height = reader.u32('height')
    width = reader.u32('width')
    encoding = reader.string('encoding')
    is_bigendian = reader.u8('is_bigendian')
    step = reader.u32('step')
    data = reader.sequence('data')
    return SerializedImage(header, height, width, encoding, is_bigendian, step, data)


def parse_compressed_image(payload: bytes | bytearray | memoryview) -> SerializedCompressedImage:
    """The fields of a serialized sensor_msgs/CompressedImage; ``data`` is a zero-copy view."""
    reader = _Reader(payload, 'serialized CompressedImage')
    header = reader.header()
    fmt = reader.string('format')
    data = reader.sequence('data')
    return SerializedCompressedImage(header, fmt, data)


def header_bytes(sec: int, nanosec: int, frame_id: str) -> bytes:
    """The CDR bytes of a std_msgs/Header (body offset 0)."""
    name = frame_id.encode() + b'\0'
    return _STAMP.pack(sec, nanosec) + _U32.pack(len(name)) + name


def _pad(offset: int, size: int) -> int:
    return -offset % size


def image_prefix(header: bytes, height: int, width: int, encoding: str, step: int) -> bytes:
    """Everything of a serialized Image before its pixels, ``header`` from ``header_bytes``.

    Padding bytes are zero (rclpy's serializer leaves them as whatever memory held).
    """
    name = encoding.encode() + b'\0'
    body = bytearray(header)
    body += bytes(_pad(len(body), 4)) + _U32.pack(height) + _U32.pack(width)
    body += _U32.pack(len(name)) + name + b'\0'  # is_bigendian = 0
    body += bytes(_pad(len(body), 4)) + _U32.pack(step)
    body += _U32.pack(step * height)  # step is 4-aligned here already: the count needs no padding
    return ENCAPSULATION_LE + bytes(body)


class CdrImageBuffer:
    """A persistent buffer holding one serialized Image: header and fields, then the pixels.

    ``view`` writes the prefix for a frame and returns the pixel area as a writable array, so
    an output is rendered straight into the bytes that get published; ``payload`` is the whole
    message. The buffer grows when needed and is otherwise reused frame after frame.
    """

    def __init__(self) -> None:
        self._buffer = np.zeros(0, np.uint8)
        self._size = 0
        self._shape: tuple[int, ...] = ()

    def view(self, header: bytes, shape: tuple[int, ...], encoding: str) -> np.ndarray:
        """The pixel area for an image of ``shape`` (h, w[, c]) with this header and encoding."""
        height, width = int(shape[0]), int(shape[1])
        channels = int(shape[2]) if len(shape) == 3 else 1
        step = width * channels
        prefix = image_prefix(header, height, width, encoding, step)
        size = len(prefix) + step * height
        if size > self._buffer.size:
            self._buffer = np.zeros(size, np.uint8)
        self._buffer[:len(prefix)] = np.frombuffer(prefix, np.uint8)
        self._size = size
        self._shape = tuple(shape)
        return self._buffer[len(prefix):size].reshape(shape)

    def payload(self) -> memoryview:
        """The serialized message written by the last ``view`` (and the rendering into it)."""
        return memoryview(self._buffer[:self._size])

    @property
    def address(self) -> int:
        """Address of the first byte (for handing the payload to C without a copy)."""
        return self._buffer.ctypes.data

    @property
    def size(self) -> int:
        """Bytes in the last serialized message."""
        return self._size
