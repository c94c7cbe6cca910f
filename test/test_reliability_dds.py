"""Faults over real DDS, against the node as its own process: a camera that stops and comes back,
a burst of 100 frames, SIGTERM under load, and the managed node driven by lifecycle services."""

import signal
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from reliability_helpers import FRONT, LEFT, image_msg, png_msg, save_model
from sensor_msgs.msg import CompressedImage, Image

from seg_node.model.known_answer import palette_scene
from seg_node.ros.camera import qos
from seg_node.ros.diagnostics import ERROR, OK
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode

pytestmark = pytest.mark.dds

PARAMS = {'image_topics': [FRONT, LEFT], 'providers': ['cpu'], 'input_reliability': 'reliable',
          'input_depth': 100, 'output_depth': 100, 'publish_overlay': False, 'publish_color_mask': False,
          'diagnostics_period_s': 0.2, 'silence_timeout_s': 0.5, 'warn_throttle_s': 0.0}


def scene(stamp):
    return palette_scene(stamp, 60, 80, min_block=6)


class Client:
    """Publishes frames on both cameras; records masks by (camera, stamp) and /diagnostics."""

    def __init__(self, name):
        self.ros = BackgroundNode(name)
        self.masks = {FRONT: [], LEFT: []}  # (stamp, frame_id, mask) in arrival order
        self.diagnostics = []
        node = self.ros.node
        self.pubs = {FRONT: self.publisher(FRONT), LEFT: self.publisher(LEFT)}
        self.subs = [node.create_subscription(Image, f'{ns}/segmentation/mask',
                                              lambda m, c=camera: self._keep(c, m), qos('reliable', 100))
                     for camera, ns in ((FRONT, '/cam_front'), (LEFT, '/cam_left'))]
        self.subs.append(node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 10))

    def publisher(self, camera):
        msg_type = CompressedImage if camera == LEFT else Image
        return self.ros.node.create_publisher(msg_type, camera, qos('reliable', 100))

    def _keep(self, camera, msg):
        mask = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width).copy()
        self.masks[camera].append((msg.header.stamp.sec, msg.header.frame_id, mask))

    def connected(self, cameras=(FRONT, LEFT)):
        return (all(self.pubs[c].get_subscription_count() > 0 for c in cameras)
                and all(s.get_publisher_count() > 0 for s in self.subs))

    def send(self, camera, stamp):
        rgb, label = scene(stamp)
        msg = png_msg(rgb, stamp, 'left') if camera == LEFT else image_msg(rgb, stamp, 'front')
        self.pubs[camera].publish(msg)
        return label

    def mask(self, camera, stamp):
        return next((m for s, _, m in list(self.masks[camera]) if s == stamp), None)

    def status(self, name):
        for array in reversed(list(self.diagnostics)):
            for status in array.status:
                if status.name == name:
                    return status, {kv.key: kv.value for kv in status.values}
        return None, {}

    def counters(self, name):
        _, kv = self.status(name)
        return {k[len('frames_'):]: int(v) for k, v in kv.items() if k.startswith('frames_')}


@pytest.fixture(scope='module')
def live(tmp_path_factory):
    model = save_model(tmp_path_factory.mktemp('m') / 'palette.onnx')
    process = NodeProcess(PARAMS | {'model_path': model})
    client = Client('reliability_client')
    try:
        process.wait_ready()
        assert wait_for(client.connected, 30), 'seg_node and the test client did not discover each other'
        # Until the node has matched our mask subscriptions it rightly skips frames (nobody wants
        # them): one answered frame per camera (stamp 0) before the tests count anything.
        for camera in (FRONT, LEFT):
            def answered(camera=camera):
                if client.mask(camera, 0) is None:
                    client.send(camera, 0)
                return client.mask(camera, 0) is not None
            assert wait_for(answered, 30, period=0.5), process.output
        yield process, client
    finally:
        client.ros.close()
        process.stop(signal.SIGKILL)


def level(client, name):
    status, _ = client.status(name)
    return status.level if status else None


def test_a_camera_that_stops_and_comes_back_is_reported_silent_then_segmented_again(live):
    process, client = live
    for stamp in (1, 2):
        label = client.send(FRONT, stamp)
        assert wait_for(lambda s=stamp: client.mask(FRONT, s) is not None, 15), process.output
        np.testing.assert_array_equal(client.mask(FRONT, stamp), label)
    client.ros.node.destroy_publisher(client.pubs[FRONT])  # the camera driver goes away

    def silent():
        status, _ = client.status('seg_node: /cam_front')
        return status is not None and status.level == ERROR and 'no frames for' in status.message
    assert wait_for(silent, 10), client.status('seg_node: /cam_front')

    client.pubs[FRONT] = client.publisher(FRONT)  # ... and comes back
    assert wait_for(lambda: client.connected([FRONT]), 15)
    for stamp in (3, 4):
        label = client.send(FRONT, stamp)
        assert wait_for(lambda s=stamp: client.mask(FRONT, s) is not None, 15), process.output
        np.testing.assert_array_equal(client.mask(FRONT, stamp), label)
    stamps = iter(range(10, 10**6))

    def healthy():  # the camera keeps sending, as a camera does, until a report says OK
        client.send(FRONT, next(stamps))
        return level(client, 'seg_node: /cam_front') == OK
    assert wait_for(healthy, 10, period=0.1), client.status('seg_node: /cam_front')
    assert process.proc.poll() is None


def accounted(counters):
    """Every frame received is processed, dropped, rejected, failed or skipped (none in flight)."""
    return bool(counters) and counters['received'] == sum(
        counters[k] for k in ('processed', 'dropped', 'rejected', 'failed', 'skipped'))


def test_a_burst_of_100_frames_keeps_the_newest_and_counts_every_other(live):
    process, client = live
    name = 'seg_node: /cam_front'
    reports = len(client.diagnostics)
    # Counters of a report made after every earlier frame was dealt with.
    assert wait_for(lambda: len(client.diagnostics) > reports + 1 and accounted(client.counters(name)), 10)
    before = client.counters(name)
    stamps = range(1000, 1100)
    messages = [image_msg(scene(s)[0], s, 'front') for s in stamps]
    start = time.monotonic()
    for msg in messages:
        client.pubs[FRONT].publish(msg)
    assert wait_for(lambda: client.mask(FRONT, stamps[-1]) is not None, 30), process.output
    drained = time.monotonic() - start

    def settled():
        now = client.counters(name)
        delta = {k: now[k] - before[k] for k in now}
        return delta['received'] == 100 and delta['processed'] + delta['dropped'] == 100
    assert wait_for(settled, 10), (before, client.counters(name))
    after = client.counters(name)
    processed = after['processed'] - before['processed']
    arrived = [s for s, _, _ in client.masks[FRONT] if s in stamps]
    assert len(arrived) == processed, 'every processed frame was published'
    assert arrived == sorted(arrived) and arrived[-1] == stamps[-1], 'in order, the newest last'
    assert after['rejected'] == before['rejected'] and after['failed'] == before['failed']
    for stamp in arrived:
        np.testing.assert_array_equal(client.mask(FRONT, stamp), scene(stamp)[1])
    print(f'\nburst: 100 frames at once -> {processed} segmented, {100 - processed} dropped for newer ones, '
          f'newest out {drained:.2f} s after the first was sent')


def stream(client, stop, period=1 / 30):
    """Both cameras at 30 Hz until ``stop`` is set."""
    stamp, deadline = 5000, time.monotonic()
    while not stop.is_set():
        for camera in (FRONT, LEFT):
            client.send(camera, stamp)
        stamp += 1
        deadline += period
        stop.wait(max(0.0, deadline - time.monotonic()))


def test_sigterm_under_load_stops_the_node_within_two_seconds_without_a_traceback(live):
    process, client = live
    stop = threading.Event()
    publisher = threading.Thread(target=stream, args=(client, stop), daemon=True)
    publisher.start()
    try:
        assert wait_for(lambda: any(s >= 5005 for s, _, _ in client.masks[LEFT]), 15), 'not under load'
        # The node still works through what it took in (depth-100 queues); the test's own
        # publisher stops first, so the measured shutdown is the node's, not a busy test's.
        stop.set()
        publisher.join(timeout=2)
        start = time.monotonic()
        code = process.stop(signal.SIGTERM, timeout=5)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        publisher.join(timeout=2)
    print(f'\nSIGTERM under load: exit {code} after {elapsed:.2f} s')
    assert code == 0 and elapsed < 2.0
    assert 'Traceback' not in process.output, process.output[-3000:]


def call(client, service, request, timeout=15.0):
    future = service.call_async(request)
    assert wait_for(future.done, timeout), f'{service.srv_name} did not answer'
    return future.result()


def test_the_managed_node_is_driven_by_lifecycle_services_and_stops_on_sigterm(tmp_path):
    model = save_model(tmp_path / 'palette.onnx')
    process = NodeProcess(PARAMS | {'model_path': model}, module='seg_node.ros.managed')
    client = Client('lifecycle_client')
    node = client.ros.node
    change = node.create_client(ChangeState, '/seg_node/change_state')
    get = node.create_client(GetState, '/seg_node/get_state')

    def transition(transition_id):
        return call(client, change, ChangeState.Request(transition=Transition(id=transition_id))).success
    try:
        process.wait_ready(marker='waiting for the configure transition')
        assert change.wait_for_service(timeout_sec=15) and get.wait_for_service(timeout_sec=15)
        assert call(client, get, GetState.Request()).current_state.label == 'unconfigured'
        assert transition(Transition.TRANSITION_CONFIGURE)
        assert call(client, get, GetState.Request()).current_state.label == 'inactive'
        assert 'classes, input native size) on cpu' in process.output, 'the model is built in configure'
        client.send(FRONT, 1)  # inactive: nobody takes it
        assert transition(Transition.TRANSITION_ACTIVATE)
        assert wait_for(lambda: client.connected([FRONT]), 15)
        label = client.send(FRONT, 2)
        assert wait_for(lambda: client.mask(FRONT, 2) is not None, 15), process.output
        np.testing.assert_array_equal(client.mask(FRONT, 2), label)
        assert client.mask(FRONT, 1) is None, 'a frame sent while inactive was segmented'
        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert wait_for(lambda: client.pubs[FRONT].get_subscription_count() == 0, 15)
        start = time.monotonic()
        code = process.stop(signal.SIGTERM, timeout=5)
        elapsed = time.monotonic() - start
    finally:
        client.ros.close()
        process.stop(signal.SIGKILL)
    print(f'\nmanaged node, SIGTERM: exit {code} after {elapsed:.2f} s')
    assert code == 0 and elapsed < 2.0
    assert 'Traceback' not in process.output, process.output[-3000:]
