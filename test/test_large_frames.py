"""Large raw frames from a best-effort camera, through the node over DDS, on this row's Fast DDS.

Fast DDS 2.x (Humble, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE and 3.x (Kilted) reads
FASTDDS_DEFAULT_PROFILES_FILE; ``make test-matrix`` runs this file on each distro's wheels. The node
is started as a user starts it (its own process, default QoS, the environment the README's steps
give), the camera publishes with the sensor-data QoS camera drivers use.
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
from rclpy.qos import qos_profile_sensor_data
from reliability_helpers import image_msg, save_model
from sensor_msgs.msg import Image

from seg_node.model.known_answer import palette_scene
from seg_node.ros.dds_profile import PROFILE_VARIABLES, fastdds_major_version, profile_variables
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode

pytestmark = pytest.mark.dds

CAMERA = '/cam_front/image_raw'
MASK = '/cam_front/segmentation/mask'
PLAIN_CAMERA = '/cam_plain'  # the no-profile node's camera, apart from the module's running node
SHIPPED = Path(__file__).resolve().parents[1] / 'config' / 'fastdds_localhost.xml'
NO_PROFILE_WARNING = 'Fast DDS runs without a profile'
# 640x480 rgb8 is 921,600 bytes, 1080p 6.2 MB: both above Fast DDS's default 512 KB shared-memory segment.
SIZES = {'640x480': (480, 640), '1920x1080': (1080, 1920)}
ONE_AT_A_TIME = {'640x480': 8, '1920x1080': 4}
STREAM_HZ, STREAM_S = 30, 3.0
IN_NETNS = os.environ.get('SEG_NODE_IN_NETNS') == '1'


class Camera:
    """The test's side of the graph: a sensor-data camera, a mask subscriber, the node's frame counters."""

    def __init__(self, name: str, namespace: str = '/cam_front') -> None:
        self.ros = BackgroundNode(name)
        node = self.ros.node
        self.topic, self.status_name = f'{namespace}/image_raw', f'seg_node: {namespace}'
        self.publisher = node.create_publisher(Image, self.topic, qos_profile_sensor_data)
        self.masks: dict[int, np.ndarray] = {}
        self.received = -1  # the node's frames_received, from /diagnostics
        self.reports = 0  # diagnostics reports about the camera received so far
        self._lock = threading.Lock()
        self._mask_subscription = node.create_subscription(Image, f'{namespace}/segmentation/mask', self._on_mask,
                                                           qos_profile_sensor_data)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_mask(self, msg: Image) -> None:
        mask = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width).copy()
        with self._lock:
            self.masks[msg.header.stamp.sec] = mask

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.status_name:
                self.received = next(int(kv.value) for kv in status.values if kv.key == 'frames_received')
                self.reports += 1

    def stop_masks(self) -> None:
        """Unsubscribe from the masks: the node then skips the engine for every frame it takes (idempotent)."""
        if self._mask_subscription is not None:
            self.ros.node.destroy_subscription(self._mask_subscription)
            self._mask_subscription = None

    def close(self) -> None:
        self.ros.close()


@pytest.fixture(scope='module')
def node_and_camera(tmp_path_factory):
    folder = tmp_path_factory.mktemp('large')
    # The node's defaults: best-effort input of depth 1, masks at the input's size; the middleware named
    # explicitly, as a user choosing Fast DDS does.
    process = NodeProcess({'model_path': save_model(folder / 'palette.onnx'), 'image_topics': [CAMERA],
                           'providers': ['cpu'], 'diagnostics_period_s': 0.1},
                          env=os.environ | {'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp'})
    camera = Camera('large_frame_camera')
    try:
        process.wait_ready()
        assert wait_for(lambda: camera.publisher.get_subscription_count() > 0 and camera.received >= 0
                        and camera.ros.node.count_publishers(MASK) > 0, 20), process.output
        # Fast DDS named explicitly still gets the serialized data path (frames in as CDR, outputs through rcl).
        assert 'data path: serialized CDR in, serialized CDR (rcl_publish_serialized_message' in process.output
        yield process, camera
    finally:
        camera.close()
        process.stop()


@pytest.mark.parametrize('size', SIZES)
def test_large_frames_sent_one_at_a_time_all_get_their_mask(node_and_camera, size):
    process, camera = node_and_camera
    sent = ONE_AT_A_TIME[size]
    first_try = answered = 0
    for index in range(sent):
        stamp = 1000 * len(size) + index
        rgb, label = palette_scene(stamp, *SIZES[size], min_block=40)
        msg = image_msg(rgb, stamp, 'front_optical')
        for attempt in range(3):  # as the user did: resent up to three times, 5 s to answer each
            camera.publisher.publish(msg)
            if wait_for(lambda s=stamp: s in camera.masks, 5):
                first_try += attempt == 0
                answered += 1
                np.testing.assert_array_equal(camera.masks[stamp], label)
                break
    print(f'\n{size} rgb8, best effort, one at a time: {answered} of {sent} answered, {first_try} on the first try')
    assert answered == sent, process.output[-2000:]
    assert first_try >= sent - 1
    assert NO_PROFILE_WARNING not in process.output


@pytest.mark.parametrize('size', SIZES)
def test_large_frames_at_30_hz_reach_the_node(node_and_camera, size):
    process, camera = node_and_camera
    # Nobody wants an output, so the node takes and skips each frame: what is counted is DDS delivery into
    # the node, not whether two shared cores run the model at 30 Hz (make bench measures that).
    camera.stop_masks()
    assert wait_for(lambda: camera.ros.node.count_subscribers(MASK) == 0, 5)
    msg = image_msg(np.zeros((*SIZES[size], 3), np.uint8), 0, 'front_optical')
    before = camera.received
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < STREAM_S:  # the camera's own pace; a slow engine drops, DDS must not
        msg.header.stamp.sec = 5000 + sent
        camera.publisher.publish(msg)
        sent += 1
        time.sleep(max(0.0, start + sent / STREAM_HZ - time.monotonic()))
    wait_for(lambda: camera.received - before >= sent, 5)
    received = camera.received - before
    print(f'\n{size} rgb8, best effort, {STREAM_HZ} Hz for {STREAM_S:g} s: {received} of {sent} reached the node')
    assert received >= 0.85 * sent, process.output[-2000:]


def test_an_rmw_that_is_not_installed_stops_the_node_with_one_line(tmp_path):
    # rcl itself refuses at init (exit status 102) and names both middlewares; no traceback follows.
    process = NodeProcess({'model_path': save_model(tmp_path / 'palette.onnx'), 'image_topics': [CAMERA]},
                          env=os.environ | {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'})
    assert process.proc.wait(30) != 0
    process.stop()
    assert 'rmw_cyclonedds_cpp' in process.output
    assert 'Traceback' not in process.output, process.output


PROBE = textwrap.dedent('''
    import rclpy
    rclpy.init()
    node = rclpy.create_node('profile_probe')
    print('participant up on', rclpy.get_rmw_implementation_identifier())
    node.destroy_node()
    rclpy.shutdown()
''')


def probe(profile: Path) -> str:
    """What a fresh participant prints with ``profile`` under both variable names."""
    env = dict(os.environ) | dict.fromkeys(PROFILE_VARIABLES, str(profile))
    done = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def broken_profile(folder: Path) -> Path:
    """The shipped profile with one element Fast DDS does not know: the whole file is refused."""
    path = folder / 'broken.xml'
    path.write_text(SHIPPED.read_text().replace('<segment_size>', '<no_such_element>1</no_such_element><segment_size>'))
    return path


def test_the_shipped_profile_loads_without_errors_on_this_fast_dds(tmp_path):
    assert 'XMLPARSER' not in probe(SHIPPED)
    assert 'XMLPARSER' in probe(broken_profile(tmp_path))  # the check sees a file Fast DDS refuses


@pytest.mark.parametrize('variable', PROFILE_VARIABLES)
def test_a_profile_set_under_either_name_reaches_the_installed_fast_dds(tmp_path, variable):
    # Only one name set, as a user following another distro's instructions would: the node puts the value
    # under the name the installed Fast DDS reads, and a file Fast DDS refuses shows that it read it. On
    # Fast DDS 2.x (the Jazzy row) FASTDDS_... alone was ignored before; Kilted's rmw reads both names.
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    env[variable] = str(broken_profile(tmp_path))
    process = NodeProcess({'model_path': save_model(tmp_path / 'palette.onnx'), 'image_topics': [CAMERA],
                           'providers': ['cpu']}, env=env)
    try:
        process.wait_ready()
    finally:
        process.stop()
    assert 'XMLPARSER' in process.output, process.output


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


@pytest.mark.skipif(not IN_NETNS, reason='without the profile Fast DDS uses every interface: only inside the '
                                         'loopback-only network namespace that scripts/isolated.sh makes')
def test_without_a_profile_large_frames_are_lost_and_the_node_says_why(tmp_path):
    # What the README documents under "Large frames over DDS": Fast DDS's defaults, both sides.
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    camera = Camera('plain_profile_peer', PLAIN_CAMERA)  # only reads /diagnostics (small messages cross)
    process = NodeProcess({'model_path': save_model(tmp_path / 'palette.onnx'), 'image_topics': [camera.topic],
                           'providers': ['cpu'], 'diagnostics_period_s': 0.1}, env=env)
    sent = 20
    try:
        process.wait_ready()
        published = subprocess.run([sys.executable, '-c', PUBLISHER, camera.topic, str(sent)], env=env,
                                   capture_output=True, text=True, timeout=120, check=False)
        assert published.returncode == 0, published.stderr
        # Counted once the camera has finished: two reports later, a whole diagnostics period after it.
        finished = camera.reports
        assert wait_for(lambda: camera.reports >= finished + 2, 10)
        received = camera.received
    finally:
        camera.close()
        stopped = process.stop()
    assert stopped == 0, process.output
    print(f'\nsensor-data QoS, 1920x1080 rgb8 with Fast DDS defaults: {received} of {sent} received')
    assert received < sent / 2, 'large best-effort frames now arrive without the profile: update the README'
    # Said once, at start-up, naming this distro's variable and where the shipped profile is installed.
    warnings = [line for line in process.lines if NO_PROFILE_WARNING in line]
    assert len(warnings) == 1, process.output
    for name in profile_variables(fastdds_major_version()):
        assert f'{name}={SHIPPED}' in warnings[0]
    assert camera.topic in warnings[0]


def test_the_profile_the_harness_uses_is_the_one_the_package_ships():
    for name in profile_variables(fastdds_major_version()):  # the name this row's Fast DDS reads
        assert Path(os.environ[name]).resolve() == SHIPPED
