"""sensor_msgs Image / CompressedImage <-> numpy, without cv_bridge.

Works on any object with the message's fields (rclpy messages, rosbags messages). The common
8-bit encodings are read as zero-copy numpy views that honour ``step`` padding; the long tail of
REP-118 encodings (16-bit, YUV 4:2:2, Bayer, NV12) goes through rosbags-image's colour
conversion. Output messages are built around a reusable ``array.array`` so that publishing a
frame never converts bytes element by element.
"""

from __future__ import annotations

import array
from typing import Any

import cv2
import numpy as np
from rosbags.image.image import ImageError as _RosbagsImageError
from rosbags.image.image import convert_color, to_cvtype

from seg_node.errors import one_line


class ImageConversionError(ValueError):
    """A frame cannot be turned into an RGB array; the message says why in one sentence."""


# 8-bit encodings read without rosbags-image: channels and the cv2 conversion to RGB.
_FAST = {
    'rgb8': (3, None),
    'bgr8': (3, cv2.COLOR_BGR2RGB),
    'rgba8': (4, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, cv2.COLOR_BGRA2RGB),
    'mono8': (1, cv2.COLOR_GRAY2RGB),
    '8UC1': (1, cv2.COLOR_GRAY2RGB),
    '8UC3': (3, cv2.COLOR_BGR2RGB),  # OpenCV's own order, as cv_bridge assumes
}
# Decoding straight to RGB saves a conversion where OpenCV offers it (4.11 and newer).
_IMREAD_RGB = getattr(cv2, 'IMREAD_COLOR_RGB', None)
# Encodings whose pixels span two columns or rows.
_EVEN_WIDTH = {'uyvy', 'yuv422', 'yuyv', 'yuv422_yuy2', 'nv12', 'nv21'}
_PLANAR_420 = {'nv12', 'nv21'}
# Channels that cannot become RGB (depth maps, float images).
_NOT_COLOUR = ('32F', '64F', '16S', '32S', '8S')


def _pixel_layout(encoding: str) -> tuple[int, int, np.dtype]:
    """(channels, bytes per channel, dtype) of an encoding, or raise."""
    if encoding in _FAST:
        return _FAST[encoding][0], 1, np.dtype(np.uint8)
    if any(encoding.startswith(kind) for kind in _NOT_COLOUR):
        msg = f'encoding {encoding!r} holds no colour image (depth or float data)'
        raise ImageConversionError(msg)
    try:
        depth, _fmt, typestr, channels = to_cvtype(encoding)
    except _RosbagsImageError:
        msg = f'unsupported encoding {encoding!r}'
        raise ImageConversionError(msg) from None
    return channels, depth // 8, np.dtype(typestr)


def _raw_view(msg: Any) -> tuple[np.ndarray, str]:
    """A strided view of an Image's pixels (no copy), validated against its header."""
    encoding = msg.encoding
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        msg_ = f'image is empty ({width}x{height})'
        raise ImageConversionError(msg_)
    channels, item, dtype = _pixel_layout(encoding)
    if encoding in _EVEN_WIDTH and width % 2:
        msg_ = f'encoding {encoding!r} needs an even width, got {width}'
        raise ImageConversionError(msg_)
    rows = height * 3 // 2 if encoding in _PLANAR_420 else height
    if encoding in _PLANAR_420 and height % 2:
        msg_ = f'encoding {encoding!r} needs an even height, got {height}'
        raise ImageConversionError(msg_)
    row_bytes = width * channels * item
    if step < row_bytes:
        msg_ = f'step {step} is smaller than width x pixel size ({width} x {channels * item} = {row_bytes})'
        raise ImageConversionError(msg_)
    data = np.frombuffer(msg.data, np.uint8)
    if data.size < step * rows:
        msg_ = (f'data holds {data.size} bytes but step x height needs {step * rows} '
                f'({step} x {rows})')
        raise ImageConversionError(msg_)
    rows_view = data[:step * rows].reshape(rows, step)[:, :row_bytes]
    if item == 1:
        pixels = rows_view.reshape(rows, width, channels)
    else:
        # Multi-byte pixels are the copying long tail anyway: make rows contiguous, read them
        # in the message's byte order and convert to native order for OpenCV.
        wire = dtype.newbyteorder('>' if msg.is_bigendian else '<')
        pixels = np.ascontiguousarray(rows_view).view(wire).reshape(rows, width, channels)
        pixels = pixels.astype(dtype.newbyteorder('='), copy=False)
    if channels == 1:
        pixels = pixels[:, :, 0]
    return pixels, encoding


def image_to_rgb(msg: Any) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a sensor_msgs/Image; a zero-copy view for unpadded rgb8."""
    pixels, encoding = _raw_view(msg)
    if encoding in _FAST:
        conversion = _FAST[encoding][1]
        return pixels if conversion is None else cv2.cvtColor(pixels, conversion)
    try:
        if encoding in _PLANAR_420 or encoding in _EVEN_WIDTH:
            pixels = np.ascontiguousarray(pixels)
        rgb = convert_color(pixels, encoding, 'rgb8')
    except (_RosbagsImageError, cv2.error) as err:
        msg_ = f'cannot convert encoding {encoding!r} to rgb8 ({one_line(err, last=True)})'
        raise ImageConversionError(msg_) from None
    if rgb.ndim == 2:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
    return rgb


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a sensor_msgs/CompressedImage (jpeg or png)."""
    data = np.frombuffer(msg.data, np.uint8)
    if data.size == 0:
        msg_ = 'compressed image has no data'
        raise ImageConversionError(msg_)
    image = cv2.imdecode(data, _IMREAD_RGB if _IMREAD_RGB is not None else cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        msg_ = f'compressed data could not be decoded (format {msg.format!r}, {data.size} bytes)'
        raise ImageConversionError(msg_)
    # OpenCV before 4.11 (Humble's 4.5.4, Jazzy's and Kilted's 4.6.0) decodes to BGR only.
    return image if _IMREAD_RGB is not None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def message_to_rgb(msg: Any) -> np.ndarray:
    """RGB uint8 [H, W, 3] of an Image or CompressedImage."""
    if hasattr(msg, 'format'):
        return compressed_to_rgb(msg)
    return image_to_rgb(msg)


def encode_compressed(rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90) -> bytes:
    """JPEG or PNG bytes of an RGB frame, as a CompressedImage's ``data``."""
    ext = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}.get(fmt)
    if ext is None:
        msg = f'unsupported compression format {fmt!r}; use jpeg or png'
        raise ValueError(msg)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == '.jpg' else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        msg = f'OpenCV could not encode a {rgb.shape} frame as {fmt}'
        raise ValueError(msg)
    return buf.tobytes()


class MessageBuffer:
    """A reusable ``array.array`` backing an outgoing Image, with a numpy view onto it.

    rclpy copies message data when it serializes on ``publish``, so after publishing the same
    buffer can be rendered into again. Assigning it to ``Image.data`` (with field checks on)
    is O(1); assigning ``bytes`` or an ndarray copies element by element.
    """

    def __init__(self) -> None:
        self._data = array.array('B')
        self._shape: tuple[int, ...] = ()

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        """A writable uint8 array of ``shape`` backed by this buffer (resized if needed)."""
        size = int(np.prod(shape))
        if len(self._data) != size:
            self._data = array.array('B', bytes(size))
        self._shape = tuple(shape)
        return np.frombuffer(self._data, np.uint8).reshape(shape)

    def fill(self, msg: Any, header: Any, encoding: str) -> Any:
        """Point ``msg`` (an Image) at this buffer, sized and stamped for the last view."""
        height, width = self._shape[0], self._shape[1]
        channels = self._shape[2] if len(self._shape) == 3 else 1
        msg.header = header
        msg.height, msg.width, msg.encoding = height, width, encoding
        msg.is_bigendian = 0
        msg.step = width * channels
        msg.data = self._data
        return msg
