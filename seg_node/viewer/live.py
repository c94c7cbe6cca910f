"""The Foxglove live view: a WebSocket server in the node offering its pictures, labels and statistics.

Opt-in (``foxglove_port``) and ROS-free: the node hands over what it already rendered for ROS (the
colour mask and overlay from ``runtime.render``) and the camera picture; this module compresses
them on a thread of its own, never on the ROS output path. A picture nobody subscribes to is
neither copied nor encoded (``counts['skipped']``); one that a newer frame replaces before it was
encoded is dropped (``counts['replaced']``), so a slow viewer never holds the node back.

Channels carry the names of the ROS topics they mirror, so one Foxglove layout serves the live
view and a recorded MCAP: the camera topic, ``<ns>/segmentation/overlay`` and ``color_mask`` as
``foxglove.CompressedImage``, ``<ns>/segmentation/labels`` as the labels JSON (names and colours),
``/diagnostics`` as the node's statistics (JSON shaped like ``diagnostic_msgs/DiagnosticArray``),
and any ground grid offered through ``offer_grid`` as ``foxglove.Grid``.

The foxglove-sdk package is an optional extra (``pip install 'seg_node[foxglove]'``).
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seg_node.msg.image import encode_compressed
from seg_node.msg.topics import segmentation_topic
from seg_node.runtime.render import resize_image, resize_nearest

# The pictures of one camera on the live view; 'image' is the camera's own (input) picture.
IMAGE_NAMES = ('image', 'overlay', 'color_mask')
RENDERED_NAMES = frozenset({'overlay', 'color_mask'})
IMAGE_FORMATS = ('jpeg', 'png')
STATISTICS_TOPIC = '/diagnostics'
STATISTICS_SCHEMA = 'diagnostic_msgs/msg/DiagnosticArray'
LABELS_SCHEMA = 'seg_node/Labels'
# Labels are re-sent this often while somebody subscribes: a late viewer gets them like a latched topic.
LABELS_PERIOD_S = 1.0
# How often the encoder thread looks at the subscriptions when no picture arrives.
IDLE_WAKE_S = 0.25
INSTALL_HINT = "pip install 'seg_node[foxglove]' (foxglove-sdk==0.30.3)"


class LiveViewError(RuntimeError):
    """The live view cannot start; the message is one sentence for the operator."""


class FoxgloveMissingError(LiveViewError):
    """foxglove-sdk is not installed."""


def check_host(host: str) -> str | None:
    """Why ``host`` cannot be the server's address, or None when it can."""
    if host == 'localhost':
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return (f'foxglove_host must be an IP address of this machine such as 127.0.0.1 (loopback only) '
                f'or 0.0.0.0 (every interface); got {host!r}')
    return None


@dataclass(frozen=True)
class ViewOptions:
    """How pictures are compressed for the live view (the ``foxglove_*`` parameters)."""

    image_format: str = 'jpeg'  # camera picture and overlay; the colour mask is always PNG
    jpeg_quality: int = 80
    max_width: int = 640  # 0: as rendered


def view_image(name: str, array: np.ndarray, options: ViewOptions) -> tuple[bytes, str]:
    """(compressed bytes, format) of one picture for the live view, at most ``max_width`` wide.

    The colour mask is scaled nearest-neighbour and written as PNG, so a viewer reads the exact
    class colours; the camera picture and overlay use ``image_format``.
    """
    height, width = array.shape[:2]
    if options.max_width and width > options.max_width:
        size = (max(1, round(height * options.max_width / width)), options.max_width)
        array = resize_nearest(array, size) if name == 'color_mask' else resize_image(array, size)
    fmt = 'png' if name == 'color_mask' else options.image_format
    return encode_compressed(np.ascontiguousarray(array), fmt, options.jpeg_quality), fmt


def diagnostics_json(statuses: Sequence[Mapping[str, Any]], stamp_ns: int) -> dict:
    """The node's statistics in the shape of ``diagnostic_msgs/DiagnosticArray`` (so plot paths match a recording)."""
    return {'header': {'stamp': {'sec': stamp_ns // 1_000_000_000, 'nanosec': stamp_ns % 1_000_000_000},
                       'frame_id': ''},
            'status': [dict(status) for status in statuses]}


@dataclass
class _Pending:
    channel: Any
    name: str
    payload: Any  # an image array, or a built message for channels that need no encoding
    stamp: tuple[int, int]
    frame_id: str


class LiveView:
    """A Foxglove WebSocket server with one set of channels per camera and an encoder thread."""

    def __init__(self, host: str, port: int, camera_topics: Sequence[str], *,
                 options: Callable[[], ViewOptions] = ViewOptions, name: str = 'seg_node',
                 logger: Any = None) -> None:
        problem = check_host(host)
        if problem:
            raise LiveViewError(problem)
        try:
            from foxglove.channels import CompressedImageChannel  # noqa: PLC0415

            import foxglove  # noqa: PLC0415 - an optional extra
        except ImportError:
            msg = f'foxglove_port is set but foxglove-sdk is not installed: {INSTALL_HINT}'
            raise FoxgloveMissingError(msg) from None
        self._foxglove = foxglove
        self._context = foxglove.Context()
        try:
            self._server = foxglove.start_server(name=name, host=host, port=port, context=self._context)
        except Exception as err:  # noqa: BLE001 - the SDK raises its own error types
            msg = (f'the Foxglove live view cannot listen on {host}:{port} ({err}); '
                   'free the port, pick another foxglove_port, or 0 for any free port')
            raise LiveViewError(msg) from None
        self.host = host
        self._options = options
        self._logger = logger
        self.counts = {'offered': 0, 'skipped': 0, 'replaced': 0, 'encoded': 0, 'failed': 0, 'bytes': 0}
        self.images = {topic: {'image': CompressedImageChannel(topic, context=self._context),
                               **{out: CompressedImageChannel(segmentation_topic(topic, out), context=self._context)
                                  for out in ('overlay', 'color_mask')}}
                       for topic in camera_topics}
        label_schema = foxglove.Schema(name=LABELS_SCHEMA, encoding='jsonschema', data=b'')
        self._labels = {topic: foxglove.Channel(segmentation_topic(topic, 'labels'), schema=label_schema,
                                                message_encoding='json', context=self._context)
                        for topic in camera_topics}
        self._label_text: dict[str, str] = {}
        self._labels_sent: dict[str, float] = {}
        stats_schema = foxglove.Schema(name=STATISTICS_SCHEMA, encoding='jsonschema', data=b'')
        self._statistics = foxglove.Channel(STATISTICS_TOPIC, schema=stats_schema, message_encoding='json',
                                            context=self._context)
        self._grids: dict[str, Any] = {}
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name='seg_node_live_view', daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port the server listens on (the chosen one when asked for port 0)."""
        return self._server.port

    @property
    def url(self) -> str:
        """What a viewer opens: ``ws://host:port``."""
        return f'ws://{self.host}:{self.port}'

    def topics(self) -> set[str]:
        """Every topic the live view advertises (grids appear once offered)."""
        channels = [c for cams in self.images.values() for c in cams.values()]
        channels += [*self._labels.values(), self._statistics, *self._grids.values()]
        return {channel.topic() for channel in channels}

    # -- called by the node -------------------------------------------------------------------

    def wanted(self, camera_topic: str) -> set[str]:
        """The rendered outputs (overlay, color_mask) of a camera that a viewer subscribes to."""
        channels = self.images.get(camera_topic, {})
        return {name for name in RENDERED_NAMES if channels[name].has_sinks()} if channels else set()

    def offer_frame(self, camera_topic: str, stamp: tuple[int, int], frame_id: str,
                    pictures: Mapping[str, np.ndarray | None]) -> None:
        """Queue a frame's pictures for the viewers that subscribe to them; returns at once.

        Rendered pictures are copied (the node renders the next frame into the same buffers);
        ``image`` (the camera's picture, a new array each frame) is kept as it is.
        """
        channels = self.images[camera_topic]
        queued = False
        for name, array in pictures.items():
            if array is None:
                continue
            channel = channels[name]
            if not channel.has_sinks():
                self.counts['skipped'] += 1
                continue
            payload = array if name == 'image' else array.copy()
            self._queue(_Pending(channel, name, payload, stamp, frame_id))
            queued = True
        if queued:
            with self._lock:
                self._lock.notify()

    def set_labels(self, camera_topic: str, labels_text: str) -> None:
        """The camera's class table (``msg.labels.labels_json``), sent now and re-sent to late viewers."""
        self._label_text[camera_topic] = labels_text
        self._labels_sent.pop(camera_topic, None)
        with self._lock:
            self._lock.notify()

    def log_statistics(self, statistics: dict) -> None:
        """Send the node's statistics (``diagnostics_json``) if anybody subscribes to them."""
        if self._statistics.has_sinks():
            self._statistics.log(json.dumps(statistics).encode())

    def offer_grid(self, topic: str, cells: np.ndarray, *, resolution: float, origin: tuple[float, float],
                   frame_id: str, stamp: tuple[int, int]) -> None:
        """Offer a 2-D grid of int8 cells (row 0 at ``origin``, x along columns) as ``foxglove.Grid`` on ``topic``.

        The channel is advertised on the first call; cells are sent only to subscribed viewers.
        """
        cells = np.asarray(cells)
        if cells.ndim != 2 or cells.dtype != np.int8:
            msg = f'a ground grid must be a 2-D int8 array; got {cells.dtype} {cells.shape}'
            raise ValueError(msg)
        channel = self.declare_grid(topic)
        if not channel.has_sinks():
            self.counts['skipped'] += 1
            return
        m = self._foxglove.messages
        grid = m.Grid(timestamp=m.Timestamp(*stamp), frame_id=frame_id,
                      pose=m.Pose(position=m.Vector3(x=origin[0], y=origin[1], z=0.0),
                                  orientation=m.Quaternion(w=1.0)),
                      column_count=cells.shape[1], cell_size=m.Vector2(x=resolution, y=resolution),
                      row_stride=cells.shape[1], cell_stride=1,
                      fields=[m.PackedElementField(name='value', offset=0,
                                                   type=m.PackedElementFieldNumericType.Int8)],
                      data=cells.tobytes())
        self._queue(_Pending(channel, 'grid', grid, stamp, frame_id))
        with self._lock:
            self._lock.notify()

    def declare_grid(self, topic: str) -> Any:
        """Advertise a ``foxglove.Grid`` channel before its first grid (viewers can subscribe at once); returns it."""
        channel = self._grids.get(topic)
        if channel is None:
            from foxglove.channels import GridChannel  # noqa: PLC0415 - optional extra, imported in __init__
            channel = self._grids[topic] = GridChannel(topic, context=self._context)
        return channel

    def close(self) -> None:
        """Stop the encoder thread and the server (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify()
        self._thread.join(2.0)
        self._server.stop()

    # -- the encoder thread -------------------------------------------------------------------

    def _queue(self, item: _Pending) -> None:
        self.counts['offered'] += 1
        with self._lock:
            if self._pending.get(item.channel.id()) is not None:
                self.counts['replaced'] += 1
            self._pending[item.channel.id()] = item

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._pending and not self._closed:
                    self._lock.wait(IDLE_WAKE_S)
                if self._closed:
                    return
                pending, self._pending = list(self._pending.values()), {}
            for item in pending:
                self._send(item)
            self._send_labels()

    def _send(self, item: _Pending) -> None:
        m = self._foxglove.messages
        try:
            if item.name == 'grid':
                item.channel.log(item.payload)
                return
            data, fmt = view_image(item.name, item.payload, self._options())
            item.channel.log(m.CompressedImage(timestamp=m.Timestamp(*item.stamp), frame_id=item.frame_id,
                                               data=data, format=fmt))
        except Exception as err:  # noqa: BLE001 - a picture lost must not stop the live view
            self.counts['failed'] += 1
            if self._logger is not None:
                self._logger.warning(f'live view: {item.name} not sent ({type(err).__name__}: {err})',
                                     throttle_duration_sec=5.0)
            return
        self.counts['encoded'] += 1
        self.counts['bytes'] += len(data)

    def _send_labels(self) -> None:
        now = time.monotonic()
        for topic, text in list(self._label_text.items()):
            channel = self._labels[topic]
            if not channel.has_sinks():
                self._labels_sent.pop(topic, None)  # the next viewer gets them at once
                continue
            if now - self._labels_sent.get(topic, -LABELS_PERIOD_S) >= LABELS_PERIOD_S:
                channel.log(text.encode())
                self._labels_sent[topic] = now
