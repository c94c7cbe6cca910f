"""The CDR reader and writer (``msg.cdr``) against rclpy's own serializer, and malformed payloads."""

import struct

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

from seg_node.msg.cdr import (
    CdrError,
    CdrImageBuffer,
    header_bytes,
    parse_compressed_image,
    parse_image,
)
from seg_node.msg.image import MessageBuffer
from seg_node.ros.transport import take_frame

RNG = np.random.default_rng(11)
# Every alignment the header and encoding strings can leave behind.
FRAME_IDS = ['', 'a', 'ab', 'abc', 'abcd', 'camera_front_optical', 'kamera_vorn_\u00fc']
SHAPES = [(1, 1), (3, 5), (2, 7, 3), (5, 3, 3), (4, 6)]


def _plain(header_sec, header_nsec, frame_id, pixels, encoding):
    """The message the plain path publishes for these pixels."""
    buffer = MessageBuffer()
    buffer.view(pixels.shape)[...] = pixels
    msg = Image(check_fields=True)
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = header_sec, header_nsec, frame_id
    return buffer.fill(msg, msg.header, encoding)


@pytest.mark.parametrize('frame_id', FRAME_IDS)
@pytest.mark.parametrize('shape', SHAPES)
def test_written_cdr_is_the_message_the_plain_path_sends(shape, frame_id):
    encoding = 'rgb8' if len(shape) == 3 else 'mono8'
    pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
    buffer = CdrImageBuffer()
    buffer.view(header_bytes(-3, 999_999_999, frame_id), shape, encoding)[...] = pixels
    ours = bytes(buffer.payload())
    plain = _plain(-3, 999_999_999, frame_id, pixels, encoding)
    assert deserialize_message(ours, Image) == plain
    theirs = serialize_message(plain)
    assert len(ours) == len(theirs)
    # rclpy's serializer leaves alignment padding as whatever memory held; ours writes zeros.
    # Everything else is byte for byte the same, and the padding is before the pixels.
    differ = np.flatnonzero(np.frombuffer(ours, np.uint8) != np.frombuffer(theirs, np.uint8))
    assert len(differ) <= 6
    assert all(ours[i] == 0 and i < len(ours) - pixels.size for i in differ)


def test_the_buffer_is_reused_and_grows_when_needed():
    buffer = CdrImageBuffer()
    first = buffer.view(header_bytes(1, 2, 'cam'), (4, 6, 3), 'rgb8')
    again = buffer.view(header_bytes(1, 3, 'cam'), (4, 6, 3), 'rgb8')
    assert np.shares_memory(first, again)
    # A longer frame_id moves the pixels; a smaller image needs no new memory either.
    assert np.shares_memory(buffer.view(header_bytes(1, 3, 'camera_long'), (2, 3), 'mono8'), first)
    bigger = buffer.view(header_bytes(1, 3, 'cam'), (40, 60, 3), 'rgb8')
    assert bigger.shape == (40, 60, 3) and buffer.size == len(bytes(buffer.payload()))
    bigger[...] = 5
    read = deserialize_message(bytes(buffer.payload()), Image)
    assert (read.height, read.width, read.header.frame_id) == (40, 60, 'cam')
    assert bytes(read.data) == bytes([5]) * bigger.size


@pytest.mark.parametrize('frame_id', FRAME_IDS)
def test_the_reader_gives_every_field_and_the_exact_header_bytes(frame_id):
    msg = Image(height=2, width=3, encoding='bgr8', step=11, is_bigendian=0)
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 1_700_000_000, 5, frame_id
    msg.data = bytes(range(22))
    frame = parse_image(serialize_message(msg))
    assert (frame.height, frame.width, frame.encoding, frame.step, frame.is_bigendian) == (2, 3, 'bgr8', 11, 0)
    assert bytes(frame.data) == bytes(range(22))
    assert (frame.header.stamp.sec, frame.header.stamp.nanosec, frame.header.frame_id) == (1_700_000_000, 5,
                                                                                           frame_id)
    assert frame.header.raw == header_bytes(1_700_000_000, 5, frame_id)
    compressed = CompressedImage(format='jpeg')
    compressed.header = msg.header
    compressed.data = b'\xff\xd8abc'
    read = parse_compressed_image(serialize_message(compressed))
    assert (read.format, bytes(read.data), read.header.frame_id) == ('jpeg', b'\xff\xd8abc', frame_id)


def _small_image():
    msg = Image(height=2, width=2, encoding='mono8', step=2)
    msg.header.frame_id = 'cam'
    msg.data = b'\x01\x02\x03\x04'
    return serialize_message(msg)


def test_every_truncation_is_one_sentence_never_a_read_past_the_end():
    full = _small_image()
    for length in range(len(full)):
        with pytest.raises(CdrError) as err:
            parse_image(full[:length])
        assert '\n' not in str(err.value)
        assert 'truncated' in str(err.value) or 'not little-endian CDR' in str(err.value)
    assert bytes(parse_image(full).data) == b'\x01\x02\x03\x04'


def test_corrupt_lengths_raise_cdr_errors_only():
    full = bytearray(_small_image())
    rng = np.random.default_rng(3)
    outcomes = set()
    for _ in range(2000):
        mutated = bytearray(full)
        for index in rng.integers(0, len(full), rng.integers(1, 4)):
            mutated[index] = rng.integers(0, 256)
        try:
            frame = parse_image(mutated)
        except CdrError:
            outcomes.add('error')
        else:
            outcomes.add('read')
            # A read frame's pixels are the bytes its own count announces, right after step and that count.
            start = np.frombuffer(frame.data, np.uint8).ctypes.data - np.frombuffer(mutated, np.uint8).ctypes.data
            assert struct.unpack_from('<II', mutated, start - 8) == (frame.step, len(frame.data))
    assert outcomes == {'error', 'read'}


@pytest.mark.parametrize(('payload', 'reason'), [
    (b'', 'is not little-endian CDR'),
    (b'\x00\x00\x00\x00' + bytes(40), 'is not little-endian CDR'),  # big endian: rclpy reads it
    (b'\x00\x01\x00\x00' + struct.pack('<iII', 0, 0, 0), 'header.frame_id has length 0'),
    (b'\x00\x01\x00\x00' + struct.pack('<iII', 0, 0, 2) + b'\xff\x00' + bytes(40), 'not UTF-8'),
    (b'\x00\x01\x00\x00' + struct.pack('<iII', 0, 0, 1000) + b'a', 'header.frame_id needs 1000 bytes'),
])
def test_malformed_payloads_are_named(payload, reason):
    with pytest.raises(CdrError, match=reason):
        parse_image(payload)


def _big_endian_image():
    """A 1x2 mono8 Image serialized big endian (as a big-endian machine would send it)."""
    body = struct.pack('>iII', 7, 8, 2) + b'c\x00' + bytes(2)  # stamp, frame_id 'c', padding
    body += struct.pack('>II', 1, 2) + struct.pack('>I', 6) + b'mono8\x00' + b'\x00'  # is_bigendian
    body += bytes(1) + struct.pack('>I', 2) + struct.pack('>I', 2) + b'\x05\x06'
    return b'\x00\x00\x00\x00' + body


def test_a_payload_the_reader_refuses_goes_through_rclpy_and_says_so():
    frame, deserialized = take_frame(_big_endian_image(), compressed=False)
    assert deserialized
    assert (frame.header.stamp.sec, frame.header.frame_id, frame.width, bytes(frame.data)) == (7, 'c', 2, b'\x05\x06')
    frame, deserialized = take_frame(_small_image(), compressed=False)
    assert not deserialized and frame.header.frame_id == 'cam'


def test_bytes_nobody_can_read_raise_the_readers_sentence():
    with pytest.raises(CdrError, match='serialized Image is truncated'):
        take_frame(_small_image()[:20], compressed=False)
    with pytest.raises(CdrError, match='serialized CompressedImage is not little-endian CDR'):
        take_frame(b'\x01', compressed=True)
