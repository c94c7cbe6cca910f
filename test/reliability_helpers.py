"""In-process seg_node harness for the reliability tests.

Frames go in through the node's subscription callback, outputs are recorded where they would be
published (a copy of each, since the node reuses its buffers), and faults are injected into the
engine by wrapping it. DDS itself is covered by the tests that start the node as a process.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from seg_node.model.known_answer import palette_classifier
from seg_node.msg.image import encode_compressed
from seg_node.ros.harness import wait_for
from seg_node.ros.node import SegmentationNode

# What ONNX Runtime raises when a CUDA kernel faults (the text of a real one, shortened).
CUDA_ERROR = ('[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory access was '
              'encountered ; GPU=0 ; expr=cudaStreamSynchronize(stream)')
FRONT = '/cam_front/image_raw'
LEFT = '/cam_left/image_raw/compressed'


def save_model(path, **options) -> str:
    """A nearest-palette-colour model (native frame size unless ``input_size``) saved at ``path``."""
    onnx.save(palette_classifier(**options), path)
    return str(path)


def image_msg(pixels: np.ndarray, stamp: int, frame_id: str = 'cam', encoding: str = 'rgb8', *,
              padding: int = 0, bigendian: bool = False) -> Image:
    """An Image of ``pixels`` with ``padding`` bytes after each row, in the given byte order."""
    height, width = pixels.shape[:2]
    wire = pixels.astype(pixels.dtype.newbyteorder('>' if bigendian else '<'))
    rows = np.ascontiguousarray(wire).reshape(height, -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, step=rows.shape[1],
                is_bigendian=int(bigendian))
    msg.header.stamp.sec, msg.header.frame_id = stamp, frame_id
    msg.data = rows.tobytes()
    return msg


def compressed_msg(data: bytes, stamp: int, frame_id: str = 'cam', fmt: str = 'png') -> CompressedImage:
    """A CompressedImage carrying ``data`` as it is."""
    msg = CompressedImage(format=fmt)
    msg.header.stamp.sec, msg.header.frame_id = stamp, frame_id
    msg.data = data
    return msg


def png_msg(rgb: np.ndarray, stamp: int, frame_id: str = 'cam') -> CompressedImage:
    """A lossless CompressedImage of ``rgb``."""
    return compressed_msg(encode_compressed(rgb, 'png'), stamp, frame_id)


@dataclass
class Output:
    """One published set of outputs, copied out of the node's reused buffers."""

    topic: str
    stamp: int
    frame_id: str
    mask: np.ndarray | None
    color_mask: np.ndarray | None
    overlay: np.ndarray | None


class Recorder:
    """Stands in for every camera's subscribers: all outputs wanted, every publish recorded."""

    def __init__(self, node: SegmentationNode) -> None:
        self.outputs: list[Output] = []
        self.repeated: list[tuple[str, int, str]] = []
        self.publishes: list[tuple[str, int, tuple[str, ...]]] = []  # (topic, stamp, outputs), in order
        self._by_key: dict[tuple[str, int], Output] = {}
        self._lock = threading.Lock()
        for camera in node.cameras.values():
            camera.wanted = set  # every enabled output, subscribed or not
            camera.publish = lambda rendered, header, topic=camera.topic: self._record(topic, rendered, header)

    def _record(self, topic: str, rendered, header) -> None:
        # A frame's outputs come in two publishes (the mask first, then the pictures): they are
        # merged into one Output; an output of a frame published twice is remembered as such.
        def copy(array):
            return None if array is None else array.copy()
        with self._lock:
            self.publishes.append((topic, header.stamp.sec, tuple(name for name, _ in rendered.items())))
            output = self._by_key.get((topic, header.stamp.sec))
            if output is None:
                output = Output(topic, header.stamp.sec, header.frame_id, None, None, None)
                self._by_key[topic, header.stamp.sec] = output
                self.outputs.append(output)
            for name in ('mask', 'color_mask', 'overlay'):
                array = getattr(rendered, 'class_mask' if name == 'mask' else name)
                if array is None:
                    continue
                if getattr(output, name) is not None:
                    self.repeated.append((topic, header.stamp.sec, name))
                setattr(output, name, copy(array))

    def by_stamp(self, topic: str) -> dict[int, Output]:
        """The outputs of one camera by input stamp (an output published twice fails the test)."""
        with self._lock:
            mine = [o for o in self.outputs if o.topic == topic]
            repeated = [r for r in self.repeated if r[0] == topic]
        assert not repeated, f'outputs published twice: {repeated}'
        return {o.stamp: o for o in mine}


class Harness:
    """A node built in this process, fed through its subscription callback."""

    def __init__(self, node: SegmentationNode) -> None:
        self.node = node
        self.recorder = Recorder(node)
        self.replaced: list[tuple[str, int, int]] = []  # (camera, dropped stamp, newer stamp)
        self._watch_drops()

    def _watch_drops(self) -> None:
        slots = self.node._worker.slots
        put = slots.put

        def watching(frame):
            old = put(frame)
            if old is not None:
                self.replaced.append((frame.camera, old.message.header.stamp.sec,
                                      frame.message.header.stamp.sec))
            return old
        slots.put = watching

    def send(self, topic: str, msg) -> None:
        """What rclpy does with a message arriving on ``topic``."""
        self.node._on_frame(topic, msg)

    def totals(self, topic: str) -> dict[str, int]:
        """The camera's counters."""
        return self.node.cameras[topic].stats.totals()

    def settled(self, topic: str) -> bool:
        """True when every frame received on ``topic`` ended counted (none still in the worker)."""
        t = self.totals(topic)
        return t['received'] == t['processed'] + t['rejected'] + t['failed'] + t['skipped'] + t['dropped']

    def send_and_settle(self, topic: str, msg, timeout: float = 10.0) -> None:
        """Send one frame and wait until the worker has dealt with it."""
        self.send(topic, msg)
        assert wait_for(lambda: self.settled(topic), timeout), f'{topic}: frame not settled {self.totals(topic)}'

    def inject(self, engine) -> None:
        """Run ``engine`` (a wrapper of the real one) from the next batch on."""
        supervisor = self.node.supervisor
        supervisor.switch_to(dataclasses.replace(supervisor.model, engine=engine))

    def statuses(self) -> dict[str, object]:
        """The /diagnostics statuses of this moment, by name."""
        return {s.name: s for s in self.node.diagnostic_array().status}


def values(status) -> dict[str, str]:
    """A diagnostic status's key/values."""
    return {kv.key: kv.value for kv in status.values}


class FaultyEngine:
    """Wraps a SegmentationEngine: raises a CUDA error on chosen calls, or runs slowly."""

    def __init__(self, engine, *, fail_calls=(), fail_always: bool = False, delay_s: float = 0.0,
                 provider: str | None = None) -> None:
        self._engine = engine
        self._fail_calls = set(fail_calls)
        self._fail_always = fail_always
        self._delay_s = delay_s
        self.provider = provider or engine.provider
        self.calls = 0

    def segment(self, images, *, want_confidence: bool = False):
        """Like the engine's, after the injected delay or fault."""
        self.calls += 1
        if self._delay_s:
            time.sleep(self._delay_s)  # stands for inference time, not a wait in the test
        if self._fail_always or self.calls in self._fail_calls:
            raise RuntimeError(CUDA_ERROR)
        return self._engine.segment(images, want_confidence=want_confidence)

    def __getattr__(self, name: str):
        return getattr(self._engine, name)


@contextmanager
def node_in_process(context, node_class=SegmentationNode, **params) -> Iterator[Harness]:
    """A node with ``params`` (cpu provider, diagnostics only on demand) and its harness."""
    params = {'providers': ['cpu'], 'diagnostics_period_s': 60.0, 'warn_throttle_s': 0.0} | params
    node = node_class(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    try:
        yield Harness(node)
    finally:
        node.stop()
        node.destroy_node()


@contextmanager
def spinning(node) -> Iterator[None]:
    """Spin ``node`` on a background executor (for guard conditions and timers)."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1)
