"""How image bytes enter and leave the node: serialized CDR where rcl allows it, rclpy messages otherwise.

The serialized path takes each frame as its CDR bytes (``raw=True``: no Python message is
built; ``msg.cdr`` parses the fields into a view) and publishes each output from a persistent
CDR buffer it was rendered into, through ``rcl_publish_serialized_message`` called with
ctypes, which releases the GIL for the call. rclpy's own ``publish`` copies the message three
times with the GIL held. Where the rcl library or the publisher's handle pointer cannot be
found (another ROS build, another rclpy), the plain path runs instead, chosen once per
publisher; ``data_path: plain`` forces it.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.publisher import Publisher
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from seg_node.msg.cdr import CdrError, CdrHeader, CdrImageBuffer, header_bytes, parse_compressed_image, parse_image
from seg_node.msg.image import MessageBuffer

DATA_PATHS = ('auto', 'plain')
# Fast DDS publishes from its own thread in this mode: the caller's publish returns once the
# sample is queued. Only the default: a value the user set is kept.
PUBLICATION_MODE_VARIABLE = 'RMW_FASTRTPS_PUBLICATION_MODE'


def prefer_asynchronous_publication() -> None:
    """Ask Fast DDS for asynchronous publication unless the environment already chose a mode."""
    os.environ.setdefault(PUBLICATION_MODE_VARIABLE, 'ASYNCHRONOUS')


class _SerializedMessage(ctypes.Structure):
    # rcl_serialized_message_t (rcutils_uint8_array_t): buffer, length, capacity, allocator.
    _fields_ = [('buffer', ctypes.c_void_p), ('buffer_length', ctypes.c_size_t),
                ('buffer_capacity', ctypes.c_size_t), ('allocate', ctypes.c_void_p),
                ('deallocate', ctypes.c_void_p), ('reallocate', ctypes.c_void_p),
                ('zero_allocate', ctypes.c_void_p), ('state', ctypes.c_void_p)]


@functools.cache
def rcl_publish_function() -> Any:
    """``rcl_publish_serialized_message`` from the rcl library rclpy loaded (looked up once), or None."""
    try:
        rcl = ctypes.CDLL('librcl.so')  # rclpy has loaded it: this finds that copy
        function = rcl.rcl_publish_serialized_message
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.POINTER(_SerializedMessage), ctypes.c_void_p]
    function.restype = ctypes.c_int32
    return function


def publisher_pointer(publisher: Publisher) -> int | None:
    """Address of the publisher's rcl_publisher_t, or None where rclpy does not expose it."""
    pointer = getattr(publisher.handle, 'pointer', None)
    return pointer if isinstance(pointer, int) and pointer else None


def ros_header(header: Any) -> Header:
    """A std_msgs/Header for a ROS message or a ``CdrHeader``."""
    if isinstance(header, Header):
        return header
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec), frame_id=header.frame_id)


def cdr_header(header: Any) -> bytes:
    """The CDR bytes of a std_msgs/Header or a ``CdrHeader``."""
    if isinstance(header, CdrHeader):
        return header.raw
    return header_bytes(header.stamp.sec, header.stamp.nanosec, header.frame_id)


class PublishError(RuntimeError):
    """rcl refused a serialized message."""


class ImageOutput:
    """One output topic's publisher and the reusable buffer its images are rendered into.

    ``buffer(header, shape)`` gives the array to render into; ``publish()`` sends it. Serialized
    when ``serialized`` is asked for and rcl allows it, else an rclpy Image around a reusable
    ``array.array``.
    """

    def __init__(self, publisher: Publisher, encoding: str, *, serialized: bool) -> None:
        self.publisher = publisher
        self.encoding = encoding
        self._rcl_publish = rcl_publish_function() if serialized else None
        self._pointer = publisher_pointer(publisher) if self._rcl_publish is not None else None
        self.serialized = self._pointer is not None
        if self.serialized:
            self._cdr = CdrImageBuffer()
            self._message = _SerializedMessage()
        else:
            self._plain = MessageBuffer()
            self._image = Image(check_fields=True)
        self._header: Any = None
        self._view: np.ndarray | None = None

    def buffer(self, header: Any, shape: tuple[int, ...]) -> np.ndarray:
        """The writable uint8 array of ``shape`` that the next ``publish`` sends with ``header``."""
        self._header = header
        if self.serialized:
            self._view = self._cdr.view(cdr_header(header), shape, self.encoding)
        else:
            self._view = self._plain.view(shape)
        return self._view

    def publish(self, rendered: np.ndarray) -> None:
        """Send ``rendered``, the output rendered into the last ``buffer`` (copied in if it is not)."""
        view = self._view
        if view is None or rendered.shape != view.shape:
            msg = f'{self.publisher.topic_name}: an output of shape {rendered.shape} was not rendered into its buffer'
            raise ValueError(msg)
        if rendered.__array_interface__['data'][0] != view.__array_interface__['data'][0]:
            view[...] = rendered  # a renderer that could not write in place: one copy, same bytes
        if not self.serialized:
            self.publisher.publish(self._plain.fill(self._image, ros_header(self._header), self.encoding))
            return
        message = self._message
        message.buffer, message.buffer_length = self._cdr.address, self._cdr.size
        message.buffer_capacity = self._cdr.size
        with self.publisher.handle:  # keeps rclpy from destroying the publisher during the call
            ret = self._rcl_publish(self._pointer, ctypes.byref(message), None)
        if ret != 0:
            msg = f'rcl_publish_serialized_message on {self.publisher.topic_name} returned {ret}'
            raise PublishError(msg)


def take_frame(payload: Any, compressed: bool) -> tuple[Any, bool]:
    """A received frame as an object with the message's fields, and whether it needed rclpy.

    ``payload`` is a message (plain path: returned as it is) or its CDR bytes. Bytes the CDR
    reader cannot read go through rclpy's deserializer (the second value is then True); if that
    fails too, the reader's ``CdrError`` is raised.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        return payload, False
    try:
        return (parse_compressed_image(payload) if compressed else parse_image(payload)), False
    except CdrError as err:
        try:
            return deserialize_message(bytes(payload), CompressedImage if compressed else Image), True
        except Exception:  # noqa: BLE001 - rclpy raises its own error types here
            raise err from None
