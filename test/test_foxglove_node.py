"""The node's Foxglove live view over real DDS: a third-party WebSocket client as the viewer.

One node process serves the first three tests (two cameras, ``foxglove_port=0``); the parameter
tests run nodes in-process.
"""

import re
import signal
import socket
import sys
import threading
import time

import numpy as np
import onnx
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from seg_node.model.classes import CITYSCAPES_PALETTE
from seg_node.model.known_answer import palette_classifier, palette_scene
from seg_node.msg.image import encode_compressed
from seg_node.ros.camera import qos
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.loader import ModelRequest, load_model
from seg_node.runtime.render import blend, resize_image, resize_nearest, scaled_size

pytest.importorskip('foxglove')
from foxglove_client import FoxgloveClient

pytestmark = pytest.mark.dds

FRONT = '/fox_front/image_raw'
LEFT = '/fox_left/image_raw/compressed'
CAMERAS = {FRONT: '/fox_front', LEFT: '/fox_left'}
ALPHA = 0.4
SCALE = 0.5
MODEL_SIZE = (120, 160)
PALETTE = np.asarray(CITYSCAPES_PALETTE, np.uint8)


def decode(data):
    import cv2
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def frame(camera, rgb, stamp, frame_id):
    """An Image (raw camera) or a PNG CompressedImage (compressed camera) stamped ``stamp`` = (sec, nanosec)."""
    if camera.endswith('/compressed'):
        msg = CompressedImage(format='png', data=encode_compressed(rgb, 'png'))
    else:
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=rgb.shape[1] * 3)
        msg.data = rgb.tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    return msg


def rss_kb(pid):
    for line in open(f'/proc/{pid}/status'):  # noqa: SIM115 - one small file
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    raise AssertionError('no VmRSS')


class Peer:
    """The ROS side: publishes both cameras, records the masks (by camera and stamp)."""

    def __init__(self):
        self.ros = BackgroundNode('foxglove_test_peer')
        node = self.ros.node
        self.masks = {camera: {} for camera in CAMERAS}
        self.pubs = {FRONT: node.create_publisher(Image, FRONT, qos('reliable', 10)),
                     LEFT: node.create_publisher(CompressedImage, LEFT, qos('reliable', 10))}
        self.subs = [node.create_subscription(
            Image, f'{ns}/segmentation/mask',
            lambda m, c=camera: self.masks[c].__setitem__((m.header.stamp.sec, m.header.stamp.nanosec), m),
            qos('reliable', 10)) for camera, ns in CAMERAS.items()]

    def connected(self):
        return all(p.get_subscription_count() > 0 for p in self.pubs.values()) and all(
            s.get_publisher_count() > 0 for s in self.subs)


@pytest.fixture(scope='module')
def live(tmp_path_factory):
    model_path = tmp_path_factory.mktemp('model') / 'palette.onnx'
    onnx.save(palette_classifier(input_size=MODEL_SIZE), model_path)
    process = NodeProcess({
        'model_path': model_path, 'image_topics': list(CAMERAS), 'providers': ['cpu'],
        'input_reliability': 'reliable', 'input_depth': 10, 'overlay_alpha': ALPHA,
        'visualization_scale': SCALE, 'diagnostics_period_s': 0.2,
        'foxglove_port': 0, 'foxglove_max_width': 0, 'foxglove_jpeg_quality': 90,
    })
    peer = Peer()
    try:
        process.wait_ready()
        found = re.search(r'Foxglove live view on (ws://127\.0\.0\.1:\d+)', process.output)
        assert found, process.output
        assert wait_for(peer.connected, 30), 'seg_node and the test peer did not discover each other'
        process.url, process.model_path = found.group(1), model_path
        yield process, peer
    finally:
        peer.ros.close()
        process.stop(signal.SIGKILL)


def send_until(peer, camera, msg, answered, timeout=15.0):
    """Publish ``msg`` (again each second) until ``answered()``."""
    sent = []

    def done():
        if not sent or time.monotonic() - sent[-1] > 1.0:
            peer.pubs[camera].publish(msg)
            sent.append(time.monotonic())
        return answered()
    return wait_for(done, timeout)


def view_status(client):
    """The live view's counters from the newest statistics message the client received."""
    for stats in reversed(client.decoded('/diagnostics')):
        for status in stats['status']:
            if status['name'] == 'seg_node: foxglove':
                return {kv['key']: kv['value'] for kv in status['values']}
    return None


def test_nothing_is_encoded_for_channels_nobody_watches(live):
    process, peer = live
    overlays = {}
    overlay_sub = peer.ros.node.create_subscription(  # ROS wants the overlay: it is rendered and offered
        Image, '/fox_front/segmentation/overlay', lambda m: overlays.__setitem__(m.header.stamp.sec, m),
        qos('reliable', 10))
    client = FoxgloveClient(process.url)
    try:
        client.subscribe('/diagnostics')  # statistics only: no picture channel has a viewer
        for i in range(3):
            rgb, _ = palette_scene(seed=i, height=96, width=128)
            assert send_until(peer, FRONT, frame(FRONT, rgb, (50 + i, 0), 'front'), lambda s=50 + i: s in overlays)

        def counted():
            status = view_status(client)
            return status is not None and int(status['pictures_skipped']) >= 6  # picture + overlay, 3 frames
        assert wait_for(counted, 10), view_status(client)
        status = view_status(client)
        assert status['pictures_offered'] == '0' and status['pictures_encoded'] == '0', status
        assert status['bytes_sent'] == '0'
    finally:
        client.close()
        peer.ros.node.destroy_subscription(overlay_sub)


def test_a_viewer_gets_both_cameras_pictures_with_exact_mask_colours_and_the_input_stamps(live):
    process, peer = live
    engine = load_model(ModelRequest(str(process.model_path), config=EngineConfig(providers=('cpu',)))).engine
    client = FoxgloveClient(process.url)
    try:
        topics = [t for camera, ns in CAMERAS.items()
                  for t in (camera, f'{ns}/segmentation/overlay', f'{ns}/segmentation/color_mask',
                            f'{ns}/segmentation/labels')]
        client.subscribe(*topics)
        for n, (camera, ns) in enumerate(CAMERAS.items()):
            rgb, _ = palette_scene(seed=20 + n, height=180, width=240)
            stamp, frame_id = (300 + n, 123_456_789), f'{ns[1:]}_optical'

            def pictures(ns=ns, camera=camera, stamp=stamp):
                found = {}
                for topic in (camera, f'{ns}/segmentation/overlay', f'{ns}/segmentation/color_mask'):
                    for msg in client.decoded(topic):
                        if (msg.timestamp.seconds, msg.timestamp.nanos) == stamp:
                            found[topic.rsplit('/', 1)[-1]] = msg
                return found
            # Only the live view wants the colour mask and overlay here: they are rendered for it.
            assert send_until(peer, camera, frame(camera, rgb, stamp, frame_id), lambda p=pictures: len(p()) == 3), \
                (sorted((t, len(m)) for t, m in client.messages.items()), process.output[-2000:])
            got = pictures()
            assert all(msg.frame_id == frame_id for msg in got.values())
            size = scaled_size(rgb.shape[:2], SCALE)
            model_mask = engine.segment([rgb])[0].class_mask
            colour = PALETTE[resize_nearest(model_mask, size)]
            assert got['color_mask'].format == 'png'
            np.testing.assert_array_equal(decode(got['color_mask'].data), colour)
            assert got['overlay'].format == 'jpeg'
            expected = blend(resize_image(rgb, size), colour, ALPHA)
            overlay_error = np.abs(decode(got['overlay'].data).astype(int) - expected)
            assert overlay_error.mean() < 4 and np.median(overlay_error) <= 2, overlay_error.mean()
            picture_error = np.abs(decode(got[camera.rsplit('/', 1)[-1]].data).astype(int) - rgb)
            assert picture_error.mean() < 4, picture_error.mean()
            assert stamp in peer.masks[camera]  # and ROS got its mask of the same frame
        for ns in CAMERAS.values():
            assert wait_for(lambda ns=ns: client.messages[f'{ns}/segmentation/labels'], 5)
            classes = client.decoded(f'{ns}/segmentation/labels')[-1]['classes']
            assert len(classes) == 19 and classes[13] == {'id': 13, 'name': 'car', 'color': [0, 0, 142]}
    finally:
        client.close()


def test_viewers_that_vanish_neither_stop_the_ros_outputs_nor_grow_the_node(live):
    process, peer = live
    rgb, _ = palette_scene(seed=5, height=180, width=240)
    stop = threading.Event()

    sent = []

    def camera():  # 15 Hz on the front camera, throughout
        while not stop.is_set():
            peer.pubs[FRONT].publish(frame(FRONT, rgb, (1000 + len(sent), 0), 'front'))
            sent.append(time.monotonic())
            time.sleep(1 / 15)
    publisher = threading.Thread(target=camera, daemon=True)
    publisher.start()
    watched = ('/fox_front/segmentation/overlay', '/fox_front/segmentation/color_mask', FRONT)

    def visit():
        client = FoxgloveClient(process.url)
        client.subscribe(*watched)
        wait_for(lambda: client.messages[watched[0]], 3)
        got = len(client.messages[watched[0]])
        client.drop()  # no closing handshake
        return got
    try:
        for _ in range(8):  # warm-up: allocator pools and the server's per-client state reach their size
            visit()
        rss_before, masks_before, sent_before = rss_kb(process.proc.pid), len(peer.masks[FRONT]), len(sent)
        served = [visit() for _ in range(25)]
        rss_after, masks_after, sent_after = rss_kb(process.proc.pid), len(peer.masks[FRONT]), len(sent)
    finally:
        stop.set()
        publisher.join(2)
    assert process.proc.poll() is None, process.output[-3000:]
    assert sum(1 for n in served if n) >= 20, served  # the viewers were really served
    # The ROS outputs kept up with the camera (the tiny model runs far faster than 15 Hz).
    assert masks_after - masks_before >= 0.6 * (sent_after - sent_before), (masks_before, masks_after, sent_after)
    assert rss_after - rss_before < 8_000, f'RSS grew by {rss_after - rss_before} kB over 25 viewers'
    assert 'Traceback' not in process.output


# -- parameters, in-process ----------------------------------------------------------------------

def start(context, **params):
    from seg_node.ros.node import SegmentationNode
    params = {'providers': ['cpu'], 'image_topics': ['/fox_param/image_raw']} | params
    return SegmentationNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


@pytest.mark.parametrize(('params', 'message'), [
    ({'foxglove_port': -2}, r'parameter foxglove_port must be in \[-1, 65535\]'),
    ({'foxglove_port': 70000}, r'parameter foxglove_port must be in \[-1, 65535\]'),
    ({'foxglove_host': 'vehicle one'}, "foxglove_host must be an IP address .*; got 'vehicle one'"),
    ({'foxglove_image_format': 'gif'}, "foxglove_image_format must be one of jpeg, png; got 'gif'"),
    ({'foxglove_jpeg_quality': 0}, r'parameter foxglove_jpeg_quality must be in \[1, 100\]'),
    ({'foxglove_max_width': -1}, r'parameter foxglove_max_width must be in \[0, 8192\]'),
])
def test_bad_live_view_values_stop_the_node_in_one_sentence(context, model_path, params, message):
    from seg_node.ros.node import StartupError
    with pytest.raises(StartupError, match=message) as info:
        start(context, model_path=model_path, **params)
    assert '\n' not in str(info.value)


def test_a_port_in_use_stops_the_node_in_one_sentence(context, model_path):
    from seg_node.ros.node import StartupError
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f'cannot listen on 127.0.0.1:{port} .*pick another foxglove_port') \
                as info:
            start(context, model_path=model_path, foxglove_port=port)
    assert '\n' not in str(info.value)


def test_live_view_values_change_at_runtime_within_their_bounds(context, model_path):
    node = start(context, model_path=model_path, foxglove_port=0)
    try:
        assert node.live_view is not None and node.live_view.port > 0
        refused = node.set_parameters([Parameter('foxglove_jpeg_quality', value=0)])[0]
        assert not refused.successful and 'foxglove_jpeg_quality' in refused.reason  # rclpy checks the range
        assert 'Min: 1, Max: 100' in refused.reason
        refused = node.set_parameters([Parameter('foxglove_image_format', value='webp')])[0]
        assert not refused.successful and 'foxglove_image_format must be one of jpeg, png' in refused.reason
        assert not node.set_parameters([Parameter('foxglove_port', value=9999)])[0].successful  # read-only
        assert node.set_parameters([Parameter('foxglove_jpeg_quality', value=55),
                                    Parameter('foxglove_max_width', value=320)])[0].successful
        assert node.settings.foxglove_view.jpeg_quality == 55 and node.settings.foxglove_view.max_width == 320
    finally:
        node.stop()
        node.destroy_node()
    assert node.live_view is None  # stopped with the node


def test_without_foxglove_sdk_the_node_runs_without_the_live_view(context, model_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'foxglove', None)  # import foxglove now raises ImportError
    node = start(context, model_path=model_path, foxglove_port=0)
    try:
        assert node.live_view is None and node.pipeline is not None
    finally:
        node.stop()
        node.destroy_node()
