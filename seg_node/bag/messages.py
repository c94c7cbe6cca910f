"""sensor_msgs messages as ``rosbags`` typestore objects, built from numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from seg_node.bag.bagio import TYPESTORE
from seg_node.msg.image import encode_compressed

_T = TYPESTORE.types
Header = _T['std_msgs/msg/Header']
Time = _T['builtin_interfaces/msg/Time']
Image = _T['sensor_msgs/msg/Image']
CompressedImage = _T['sensor_msgs/msg/CompressedImage']
CameraInfo = _T['sensor_msgs/msg/CameraInfo']
RegionOfInterest = _T['sensor_msgs/msg/RegionOfInterest']
String = _T['std_msgs/msg/String']
_ENCODING_OF_CHANNELS = {1: 'mono8', 3: 'rgb8'}


def header(stamp_ns: int, frame_id: str) -> Any:
    """A std_msgs/Header at ``stamp_ns`` nanoseconds."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def image(head: Any, array: np.ndarray, encoding: str | None = None) -> Any:
    """An Image of a uint8 HxW or HxWx3 array (``encoding`` by default: mono8 or rgb8)."""
    channels = 1 if array.ndim == 2 else array.shape[2]
    height, width = array.shape[:2]
    encoding = encoding or _ENCODING_OF_CHANNELS[channels]
    return Image(header=head, height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * channels, data=np.ascontiguousarray(array, np.uint8).reshape(-1))


def compressed(head: Any, rgb: np.ndarray, fmt: str) -> Any:
    """A CompressedImage of an RGB array in ``fmt`` (jpeg or png)."""
    data = np.frombuffer(encode_compressed(rgb, fmt), np.uint8)
    return CompressedImage(header=head, format=fmt, data=data)


def camera_info(head: Any, *, width: int, height: int, focal: float, cx: float, cy: float) -> Any:
    """An undistorted pinhole CameraInfo (plumb_bob, zero distortion)."""
    k = np.array([focal, 0, cx, 0, focal, cy, 0, 0, 1], np.float64)
    p = np.array([focal, 0, cx, 0, 0, focal, cy, 0, 0, 0, 1, 0], np.float64)
    return CameraInfo(header=head, height=height, width=width, distortion_model='plumb_bob',
                      d=np.zeros(5), k=k, r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0,
                      roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def mask_array(msg: Any) -> np.ndarray:
    """A mono8 Image (class ids) as an HxW array, honouring ``step``.

    Colour images go through ``conversion.message_to_rgb``.
    """
    if msg.encoding not in ('mono8', '8UC1'):
        msg_ = f'a class mask must be mono8, got encoding {msg.encoding!r}'
        raise ValueError(msg_)
    data = np.frombuffer(msg.data, np.uint8)
    if msg.height == 0 or msg.width == 0 or msg.step < msg.width or data.size < msg.step * msg.height:
        msg_ = f'mask data ({data.size} bytes) does not fit {msg.width}x{msg.height}, step {msg.step}'
        raise ValueError(msg_)
    return data[:msg.step * msg.height].reshape(msg.height, msg.step)[:, :msg.width]
