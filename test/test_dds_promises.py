"""README promises checked over real DDS, against the node as its own process.

Outputs nobody subscribes to are not computed; a runtime model switch republishes the labels and,
while frames flow, loses no frame and mislabels none; large frames from a sensor-data (best-effort)
camera arrive through the shipped Fast DDS profile, and what happens without it.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import qos_profile_sensor_data
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
        self.reports = 0  # diagnostics reports about the camera received so far
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
                self.reports += 1

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


LARGE = (480, 640)  # 921,600 bytes of rgb8: above Fast DDS's default 512 KB shared-memory segment
SENT = 30


def test_large_best_effort_frames_arrive_through_the_shipped_profile(tmp_path):
    # The user's default camera QoS (sensor data: best effort, depth 5) and the node's default input
    # QoS (best effort, depth 1), with the Fast DDS profile the package ships (set by the harness).
    assert os.environ['FASTDDS_DEFAULT_PROFILES_FILE'].endswith('config/fastdds_localhost.xml')
    process = NodeProcess({'model_path': save_model(tmp_path / 'palette.onnx'), 'image_topics': [CAMERA],
                           'providers': ['cpu'], 'diagnostics_period_s': 0.1})
    peer = Peer('sensor_data_peer', camera_qos=qos_profile_sensor_data)
    try:
        process.wait_ready()
        assert wait_for(lambda: peer.publisher.get_subscription_count() > 0 and peer.count('received') >= 0, 20)
        for stamp in range(SENT):
            peer.publisher.publish(frame(stamp, LARGE)[0])
            time.sleep(0.1)  # 10 Hz: the camera's own pace, not a wait for an event
        assert wait_for(lambda: peer.count('received') + peer.count('dropped') >= SENT, 10), peer.counters
    finally:
        peer.ros.close()
        process.stop()
    print(f'\nsensor-data QoS, 640x480 rgb8 through the profile: {peer.count("received")} of {SENT} received')
    assert peer.count('received') >= 0.9 * SENT


PUBLISHER = textwrap.dedent('''
    import sys, time
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node('plain_camera')
    publisher = node.create_publisher(Image, sys.argv[1], qos_profile_sensor_data)
    deadline = time.monotonic() + 20
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    msg = Image(height=1080, width=1920, encoding='rgb8', step=1920 * 3, data=bytes(1920 * 1080 * 3))
    for stamp in range(int(sys.argv[2])):
        msg.header.stamp.sec = stamp
        publisher.publish(msg)
        time.sleep(0.1)
    time.sleep(1.0)
    rclpy.shutdown()
''')


@pytest.mark.skipif(os.environ.get('SEG_NODE_IN_NETNS') != '1',
                    reason='without the profile Fast DDS uses every interface: only inside the loopback-only '
                           'network namespace that scripts/isolated.sh makes')
def test_without_the_profile_large_best_effort_frames_are_lost(tmp_path):
    # What the README documents under "Large frames over DDS": Fast DDS's defaults, both sides.
    env = {k: v for k, v in os.environ.items() if k != 'FASTDDS_DEFAULT_PROFILES_FILE'}
    process = NodeProcess({'model_path': save_model(tmp_path / 'palette.onnx'), 'image_topics': [CAMERA],
                           'providers': ['cpu'], 'diagnostics_period_s': 0.1}, env=env)
    peer = Peer('plain_profile_peer')  # only reads /diagnostics (small messages cross either way)
    try:
        process.wait_ready()
        camera = subprocess.run([sys.executable, '-c', PUBLISHER, CAMERA, str(SENT)], env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        assert camera.returncode == 0, camera.stderr
        # Counted once the camera has finished: two reports later, a whole diagnostics period after it.
        finished = peer.reports
        assert wait_for(lambda: peer.reports >= finished + 2, 10)
        received = peer.count('received')
    finally:
        peer.ros.close()
        stopped = process.stop()
    assert stopped == 0, process.output
    print(f'\nsensor-data QoS, 1920x1080 rgb8 with Fast DDS defaults: {received} of {SENT} received')
    assert received < SENT / 2, 'large best-effort frames now arrive without the profile: update the README'


def test_the_profile_the_harness_uses_is_the_one_the_package_ships():
    shipped = Path(__file__).resolve().parents[1] / 'config' / 'fastdds_localhost.xml'
    assert Path(os.environ['FASTDDS_DEFAULT_PROFILES_FILE']).resolve() == shipped
