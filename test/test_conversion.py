"""Image / CompressedImage <-> numpy: every encoding, padding, byte order, and bad input.

Each case runs on both data paths: the rclpy message (plain) and its serialized CDR bytes read
by ``msg.cdr`` (the node's default): they must give the same pixels and the same rejections.
"""

import array

import cv2
import numpy as np
import pytest
from rclpy.serialization import serialize_message
from rosbags.image import message_to_cvimage
from sensor_msgs.msg import CompressedImage, Image

from seg_node.msg import image as image_module
from seg_node.msg.image import (
    ImageConversionError,
    MessageBuffer,
    compressed_to_rgb,
    encode_compressed,
    image_to_rgb,
    message_to_rgb,
)
from seg_node.ros.transport import take_frame

RNG = np.random.default_rng(7)
PATHS = ['plain', 'serialized']


def through(path, msg):
    """``msg`` as the worker sees it on ``path``: the message itself, or read from its CDR bytes."""
    if path == 'plain':
        return msg
    frame, deserialized = take_frame(serialize_message(msg), isinstance(msg, CompressedImage))
    assert not deserialized  # the CDR reader read it itself
    return frame
RGB = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)


def make_image(pixels, encoding, padding=0, bigendian=False):
    """An Image whose rows carry ``padding`` extra bytes, in the given byte order."""
    height, width = pixels.shape[:2]
    wire = pixels.astype(pixels.dtype.newbyteorder('>' if bigendian else '<'))
    rows = wire.reshape(height, -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, step=rows.shape[1],
                is_bigendian=int(bigendian))
    msg.data = rows.tobytes()
    return msg


EIGHT_BIT = [
    ('rgb8', RGB, RGB),
    ('bgr8', RGB[..., ::-1].copy(), RGB),
    ('rgba8', np.dstack([RGB, np.full(RGB.shape[:2], 77, np.uint8)]), RGB),
    ('bgra8', np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 77, np.uint8)]), RGB),
    ('mono8', RGB[..., 0].copy(), np.repeat(RGB[..., :1], 3, axis=2)),
]


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('padding', [0, 1, 6])
@pytest.mark.parametrize(('encoding', 'pixels', 'expected'), EIGHT_BIT, ids=[e[0] for e in EIGHT_BIT])
def test_eight_bit_encodings_with_row_padding(encoding, pixels, expected, padding, path):
    np.testing.assert_array_equal(image_to_rgb(through(path, make_image(pixels, encoding, padding))), expected)


@pytest.mark.parametrize('path', PATHS)
def test_unpadded_rgb8_is_a_view_without_copy(path):
    msg = through(path, make_image(RGB, 'rgb8'))
    rgb = image_to_rgb(msg)
    assert not rgb.flags.owndata
    assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('bigendian', [False, True])
@pytest.mark.parametrize('padding', [0, 2])
@pytest.mark.parametrize('encoding', ['rgb16', 'bgr16', 'mono16', 'rgba16'])
def test_sixteen_bit_encodings_in_both_byte_orders(encoding, padding, bigendian, path):
    wide = RGB.astype(np.uint16) * 257  # 8-bit value v becomes v * 257: exactly v after scaling
    pixels = {'rgb16': wide, 'bgr16': wide[..., ::-1], 'mono16': wide[..., 0],
              'rgba16': np.dstack([wide, wide[..., :1]])}[encoding]
    expected = np.repeat(RGB[..., :1], 3, 2) if encoding == 'mono16' else RGB
    out = image_to_rgb(through(path, make_image(np.ascontiguousarray(pixels), encoding, padding, bigendian)))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('encoding', ['yuv422', 'yuv422_yuy2', 'bayer_rggb8', 'bayer_gbrg8'])
def test_long_tail_encodings_match_rosbags_image(encoding, path):
    channels = 2 if encoding.startswith('yuv') else 1
    pixels = RNG.integers(0, 256, (6, 10, channels), dtype=np.uint8)
    pixels = pixels[..., 0] if channels == 1 else pixels
    msg = make_image(pixels, encoding)
    np.testing.assert_array_equal(image_to_rgb(through(path, msg)), message_to_cvimage(msg, 'rgb8'))


def _image(**fields):
    defaults = {'height': 4, 'width': 4, 'encoding': 'rgb8', 'step': 12}
    msg = Image(**(defaults | {k: v for k, v in fields.items() if k != 'data'}))
    msg.data = fields.get('data', bytes(48))
    return msg


BAD = [
    (_image(encoding='weird42'), "unsupported encoding 'weird42'"),
    (_image(encoding='32FC1', step=16, data=bytes(64)), 'holds no colour image'),
    (_image(data=bytes(47)), 'data holds 47 bytes but step x height needs 48'),
    (_image(width=0, step=0, data=b''), r'image is empty \(0x4\)'),
    (_image(height=0, data=b''), r'image is empty \(4x0\)'),
    (_image(step=11), r'step 11 is smaller than width x pixel size \(4 x 3 = 12\)'),
    (_image(encoding='yuv422', width=3, step=6, data=bytes(24)), 'needs an even width, got 3'),
    (_image(encoding='nv12', height=3, step=4, width=4, data=bytes(24)), 'needs an even height'),
]


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize(('msg', 'reason'), BAD, ids=[b[1][:30] for b in BAD])
def test_bad_images_are_rejected_with_the_reason(msg, reason, path):
    with pytest.raises(ImageConversionError, match=reason):
        image_to_rgb(through(path, msg))


# Both decoding paths on whatever OpenCV is installed: straight to RGB where OpenCV has the flag
# (4.11+), BGR then converted where it has not (Humble's 4.5.4, Jazzy's and Kilted's 4.6.0); the
# matrix rows (make test-matrix) run this file on each of those OpenCV versions.
DECODE_PATHS = ['native'] + (['bgr-fallback'] if hasattr(cv2, 'IMREAD_COLOR_RGB') else [])


def test_the_decode_path_follows_the_installed_opencv():
    major, minor = (int(v) for v in cv2.__version__.split('.')[:2])
    assert (image_module._IMREAD_RGB is not None) == ((major, minor) >= (4, 11)), cv2.__version__


@pytest.mark.parametrize('data_path', PATHS)
@pytest.mark.parametrize('path', DECODE_PATHS)
@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_compressed_round_trip(fmt, path, data_path, monkeypatch):
    if path == 'bgr-fallback':
        monkeypatch.setattr(image_module, '_IMREAD_RGB', None)
    smooth = cv2.resize(RGB, (64, 48), interpolation=cv2.INTER_LINEAR)
    msg = CompressedImage(format=fmt)
    msg.data = encode_compressed(smooth, fmt, quality=100)
    out = message_to_rgb(through(data_path, msg))
    assert out.shape == smooth.shape
    error = np.abs(out.astype(int) - smooth.astype(int))
    if fmt == 'png':
        assert error.max() == 0
    else:
        # Lossy chroma subsampling blurs colours; swapped R/B would be off by ~70 on average.
        assert error.mean() < 3


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('data', [b'', b'\xff\xd8\xff\xe0 truncated', b'\x89PNG\r\n\x1a\n' + b'x' * 20])
def test_corrupt_compressed_data_is_rejected(data, path):
    msg = CompressedImage(format='jpeg')
    msg.data = data
    with pytest.raises(ImageConversionError, match='compressed'):
        compressed_to_rgb(through(path, msg))


def test_message_buffer_backs_the_message_without_copying():
    buffer = MessageBuffer()
    view = buffer.view((4, 5, 3))
    view[...] = 9
    msg = buffer.fill(Image(check_fields=True), Image().header, 'rgb8')
    assert isinstance(msg.data, array.array)
    assert np.shares_memory(np.frombuffer(msg.data, np.uint8), view)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (4, 5, 15, 'rgb8')
    np.testing.assert_array_equal(image_to_rgb(msg), view)
    # A second frame of the same size renders into the same memory.
    assert np.shares_memory(buffer.view((4, 5, 3)), view)
