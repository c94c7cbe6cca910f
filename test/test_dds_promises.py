"""README promises checked over real DDS, against the node as its own process.

Outputs nobody subscribes to are not computed; a runtime model switch republishes the labels and,
while frames flow, loses no frame and mislabels none. Large frames through the Fast DDS profile:
test_large_frames.py.
"""

import threading

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from reliability_helpers import image_msg, save_model
from sensor_msgs.msg import Image
from std_msgs.msg import String

from seg_node.model.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from seg_node.model.known_answer import palette_scene
from seg_node.msg.labels import parse_labels_json
from seg_node.ros.camera import qos
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode

pytestmark = pytest.mark.dds

CAMERA = '/cam_front/image_raw'
MASK = '/cam_front/segmentation/mask'
LABELS = '/cam_front/segmentation/labels'
REVERSED = CITYSCAPES_PALETTE[::-1]  # this model calls colour i class 18 - i


class Peer:
    """The test's side of the graph: a camera publisher, optional output subscribers, /diagnostics."""

    def __init__(self, name: str, camera_qos=None) -> None:
        self.ros = BackgroundNode(name)
        node = self.ros.node
        self.publisher = node.create_publisher(Image, CAMERA, camera_qos or qos('reliable', 10))
        self.masks: list[tuple[int, np.ndarray]] = []
        self.labels: list[str] = []
        self.counters: dict[str, int] = {}
        self._lock = threading.Lock()
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def subscribe_masks(self) -> None:
        self.ros.node.create_subscription(Image, MASK, self._on_mask, qos('reliable', 100))

    def subscribe_labels(self) -> None:
        self.ros.node.create_subscription(String, LABELS, lambda m: self.labels.append(m.data),
                                          qos('reliable', 1, latched=True))

    def _on_mask(self, msg: Image) -> None:
        mask = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width).copy()
        with self._lock:
            self.masks.append((msg.header.stamp.sec, mask))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == 'seg_node: /cam_front':
                self.counters = {kv.key[len('frames_'):]: int(kv.value) for kv in status.values
                                 if kv.key.startswith('frames_')}

    def count(self, name: str) -> int:
        return self.counters.get(name, -1)

    def set_parameter(self, name: str, value: str) -> bool:
        client = self.ros.node.create_client(SetParameters, '/seg_node/set_parameters')
        assert client.wait_for_service(timeout_sec=15)
        request = SetParameters.Request(parameters=[ParameterMsg(
            name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))])
        future = client.call_async(request)
        assert wait_for(future.done, 15)
        return future.result().results[0].successful


def frame(stamp: int, size=(48, 64)) -> tuple[Image, np.ndarray]:
    rgb, label = palette_scene(stamp, *size, min_block=6)
    return image_msg(rgb, stamp, 'front_optical'), label


@pytest.fixture
def node_and_peer(tmp_path, request):
    params = {'model_path': save_model(tmp_path / 'palette.onnx'), 'image_topics': [CAMERA], 'providers': ['cpu'],
              'input_reliability': 'reliable', 'input_depth': 10, 'output_depth': 10,
              'diagnostics_period_s': 0.1} | getattr(request, 'param', {})
    process = NodeProcess(params)
    peer = Peer(f'promises_{request.node.name[:20]}'.replace('[', '_').replace(']', '_').replace('-', '_'))
    try:
        process.wait_ready()
        assert wait_for(lambda: peer.publisher.get_subscription_count() > 0 and peer.count('received') >= 0, 20)
        yield process, peer, tmp_path
    finally:
        peer.ros.close()
        process.stop()


def test_frames_nobody_wants_are_skipped_not_computed(node_and_peer):
    process, peer, _ = node_and_peer
    for stamp in range(1, 4):  # no output has a subscriber: each frame is taken and skipped
        peer.publisher.publish(frame(stamp)[0])
        assert wait_for(lambda s=stamp: peer.count('skipped') == s, 10), peer.counters
    assert peer.count('processed') == 0
    peer.subscribe_masks()
    msg, label = frame(10)

    def answered() -> bool:
        peer.publisher.publish(msg)
        return bool(peer.masks)
    assert wait_for(answered, 15, period=0.3), process.output
    np.testing.assert_array_equal(peer.masks[0][1], label)
    assert wait_for(lambda: peer.count('processed') >= 1, 5)
    assert peer.count('skipped') >= 3 and peer.count('rejected') == peer.count('failed') == 0


def test_a_model_switch_while_frames_flow_loses_and_mislabels_nothing(node_and_peer):
    process, peer, folder = node_and_peer
    reversed_model = save_model(folder / 'reversed.onnx', palette=REVERSED, classes=CITYSCAPES_CLASSES[::-1])
    peer.subscribe_masks()
    peer.subscribe_labels()
    assert wait_for(lambda: peer.labels and peer.ros.node.count_publishers(MASK) > 0, 15)
    assert parse_labels_json(peer.labels[-1]).names == CITYSCAPES_CLASSES
    labels, sent, stop = {}, [], threading.Event()

    def stream() -> None:  # 20 Hz until stopped
        stamp = 100
        while not stop.is_set():
            msg, labels[stamp] = frame(stamp)
            peer.publisher.publish(msg)
            sent.append(stamp)
            stamp += 1
            stop.wait(0.05)
    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        assert wait_for(lambda: len(peer.masks) >= 5, 15), process.output
        assert peer.set_parameter('model_path', reversed_model)
        assert wait_for(lambda: any(np.array_equal(m, 18 - labels[s]) for s, m in list(peer.masks)), 30)
        before = len(peer.masks)
        assert wait_for(lambda: len(peer.masks) >= before + 5, 15)
    finally:
        stop.set()
        streamer.join(2)
    assert wait_for(lambda: peer.count('received') == len(sent)
                    and peer.count('processed') + peer.count('dropped') == len(sent), 10), (len(sent), peer.counters)
    assert wait_for(lambda: len(peer.masks) == peer.count('processed'), 10), 'a processed frame was not published'
    # Every mask is exactly the old model's answer or the new one's; once the new one answered, the
    # old one never did again; and the labels topic now carries the new table.
    models = [0 if np.array_equal(m, labels[s]) else 1 if np.array_equal(m, 18 - labels[s]) else None
              for s, m in peer.masks]
    assert None not in models, 'a mask that neither model gives'
    assert models == sorted(models) and models[0] == 0 and models[-1] == 1
    assert [s for s, _ in peer.masks] == sorted(s for s, _ in peer.masks), 'outputs out of input order'
    assert wait_for(lambda: parse_labels_json(peer.labels[-1]).names == CITYSCAPES_CLASSES[::-1], 5)
    assert 'switched to' not in process.output or 'Traceback' not in process.output
