"""seg_node end to end over real DDS: two cameras in, masks / overlays / labels out."""

import functools
import hashlib
import json
import signal
import time

import numpy as np
import onnx
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from seg_node.model.classes import CITYSCAPES_PALETTE
from seg_node.model.known_answer import SHARPNESS, boundary_mask, palette_classifier, palette_scene
from seg_node.msg.image import encode_compressed
from seg_node.ros import camera as camera_io
from seg_node.ros.camera import qos
from seg_node.ros.diagnostics import OK
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.loader import ModelRequest, load_model
from seg_node.runtime.render import blend, resize_image, resize_nearest, scaled_size

pytestmark = pytest.mark.dds

FRONT = '/cam_front/image_raw'
LEFT = '/cam_left/image_raw/compressed'
OUTPUTS = ('mask', 'color_mask', 'overlay', 'confidence')
ALPHA = 0.4
PALETTE = np.asarray(CITYSCAPES_PALETTE, np.uint8)
# What the node publishes the class table as: vision_msgs/LabelInfo where installed, else JSON.
LABELS_TYPE = camera_io.LabelInfo or String


def image_msg(rgb, stamp_s, frame_id, encoding='rgb8'):
    msg = Image()
    msg.header.stamp.sec, msg.header.frame_id = stamp_s, frame_id
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = encoding
    msg.step = rgb.shape[1] * (rgb.shape[2] if rgb.ndim == 3 else 1)
    msg.data = rgb.tobytes()
    return msg


def compressed_msg(rgb, stamp_s, frame_id):
    msg = CompressedImage()
    msg.header.stamp.sec, msg.header.frame_id = stamp_s, frame_id
    msg.format = 'png'
    msg.data = encode_compressed(rgb, 'png')
    return msg


def as_array(msg):
    channels = 3 if msg.encoding == 'rgb8' else 1
    shape = (msg.height, msg.width, channels) if channels == 3 else (msg.height, msg.width)
    return np.frombuffer(msg.data, np.uint8).reshape(shape)


class Client:
    """Publishes camera frames and records every seg_node output by (camera, stamp)."""

    def __init__(self):
        self.ros = BackgroundNode('seg_node_test_client')
        node = self.ros.node
        self.received = {}
        self.labels = {}
        self.diagnostics = []
        self.pubs = {FRONT: node.create_publisher(Image, FRONT, qos('reliable', 10)),
                     LEFT: node.create_publisher(CompressedImage, LEFT, qos('reliable', 10))}
        self.subs = []
        for camera, ns in ((FRONT, '/cam_front'), (LEFT, '/cam_left')):
            for name in OUTPUTS:
                self.subs.append(node.create_subscription(
                    Image, f'{ns}/segmentation/{name}',
                    lambda m, c=camera, n=name: self.received.setdefault((c, m.header.stamp.sec), {})
                    .__setitem__(n, m), qos('reliable', 10)))
            self.subs.append(node.create_subscription(
                LABELS_TYPE, f'{ns}/segmentation/labels',
                lambda m, c=camera: self.labels.__setitem__(c, m), qos('reliable', 1, latched=True)))
        self.subs.append(node.create_subscription(DiagnosticArray, '/diagnostics',
                                                  self.diagnostics.append, 10))

    def wait_connected(self, timeout=30.0):
        assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in self.pubs.values())
                        and all(s.get_publisher_count() > 0 for s in self.subs), timeout), \
            'seg_node and the test client did not discover each other'

    def outputs(self, camera, stamp):
        return self.received.get((camera, stamp), {})

    def send_and_wait(self, camera, msg, timeout=15.0):
        stamp, sent = msg.header.stamp.sec, []

        def answered():
            # Resent after a second unanswered: a node that has not yet matched our subscriptions
            # rightly skips the frame (nobody wants it).
            if not sent or (time.monotonic() - sent[-1] > 1.0 and not self.outputs(camera, stamp)):
                self.pubs[camera].publish(msg)
                sent.append(time.monotonic())
            return len(self.outputs(camera, stamp)) == len(OUTPUTS)
        return wait_for(answered, timeout)

    def diagnostic_values(self, camera_ns):
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name == f'seg_node: {camera_ns}':
                    return {kv.key: kv.value for kv in status.values}, status
        return None, None


MODEL_SIZE = (120, 160)
# Both data paths; each with one visualization scale (full size for the plain one, as before the
# serialized path existed, and the shipped default, half, for the serialized one).
VARIANTS = [('auto', 0.5), ('plain', 1.0)]


@pytest.fixture(scope='module', params=VARIANTS, ids=[f'{d}-{v:g}' for d, v in VARIANTS])
def live(tmp_path_factory, request):
    data_path, visualization = request.param
    model_path = tmp_path_factory.mktemp('model') / 'palette.onnx'
    onnx.save(palette_classifier(input_size=MODEL_SIZE), model_path)
    process = NodeProcess({
        'model_path': model_path, 'image_topics': [FRONT, LEFT], 'providers': ['cpu'],
        'input_reliability': 'reliable', 'input_depth': 10, 'publish_confidence': True,
        'overlay_alpha': ALPHA, 'diagnostics_period_s': 0.2, 'warn_throttle_s': 0.0,
        'data_path': data_path, 'visualization_scale': visualization,
    })
    process.model_path = model_path
    process.data_path, process.visualization = data_path, visualization
    client = Client()
    try:
        process.wait_ready()
        client.wait_connected()
        yield process, client
    finally:
        client.ros.close()
        process.stop(signal.SIGKILL)


@pytest.fixture(scope='module')
def sent(live):
    """Three frames on each camera, sent one at a time; the ground truth of each."""
    _, client = live
    truth = {}
    for i in range(3):
        stamp = 100 + i
        rgb, label = palette_scene(seed=i, height=240, width=320)
        assert client.send_and_wait(FRONT, image_msg(rgb, stamp, 'front_optical')), f'no output for {stamp}'
        truth[FRONT, stamp] = (rgb, label, 'front_optical')
        rgb, label = palette_scene(seed=10 + i, height=180, width=240)
        sent_ok = client.send_and_wait(LEFT, compressed_msg(rgb, stamp, 'left_optical'))
        assert sent_ok, f'no output for {stamp}'
        truth[LEFT, stamp] = (rgb, label, 'left_optical')
    return truth


def test_masks_equal_ground_truth_away_from_boundaries(live, sent):
    _, client = live
    for (camera, stamp), (_, label, _) in sent.items():
        mask = as_array(client.outputs(camera, stamp)['mask'])
        assert mask.shape == label.shape
        # Resizing to the model's 160x120 and back only moves boundaries, by at most the
        # downscale factor (2 for this camera, 1.5 for the other): no error lies further out.
        wrong = (mask != label) & ~boundary_mask(label, radius=2)
        assert not wrong.any(), f'{camera} stamp {stamp}: {wrong.sum()} pixels wrong away from edges'


def test_the_node_says_which_data_path_it_runs(live):
    process, _ = live
    expected = ('serialized CDR in, serialized CDR' if process.data_path == 'auto'
                else 'rclpy messages in, rclpy messages out')
    assert wait_for(lambda: f'data path: {expected}' in process.output, 5), process.output


def test_every_output_keeps_the_input_header_and_size(live, sent):
    process, client = live
    for (camera, stamp), (rgb, _, frame_id) in sent.items():
        for name, msg in client.outputs(camera, stamp).items():
            assert msg.header.stamp.sec == stamp and msg.header.stamp.nanosec == 0
            assert msg.header.frame_id == frame_id, name
            size = rgb.shape[:2]
            if name in ('color_mask', 'overlay'):
                size = scaled_size(size, process.visualization)
            assert (msg.height, msg.width) == size, name
            expected = 'rgb8' if name in ('color_mask', 'overlay') else 'mono8'
            assert msg.encoding == expected, name


@functools.cache
def reference_engine(model_path):
    """The node's model, loaded in this process the way the node loads it."""
    return load_model(ModelRequest(str(model_path), config=EngineConfig(providers=('cpu',)))).engine


def test_color_mask_and_overlay_are_the_palette_colours_of_the_mask(live, sent):
    process, client = live
    for (camera, stamp), (rgb, _, _) in sent.items():
        outputs = client.outputs(camera, stamp)
        colour = as_array(outputs['color_mask'])
        overlay = as_array(outputs['overlay'])
        if process.visualization == 1.0:
            mask = as_array(outputs['mask'])
            np.testing.assert_array_equal(colour, PALETTE[mask])
            expected = blend(rgb, PALETTE[mask], ALPHA)
        else:
            # Half size: exactly the colours of the model's own output for this frame (the
            # input-size masks are checked against the ground truth above), and the camera image
            # shrunk to that size under them.
            size = scaled_size(rgb.shape[:2], process.visualization)
            model_mask = reference_engine(process.model_path).segment([rgb])[0].class_mask
            np.testing.assert_array_equal(colour, PALETTE[resize_nearest(model_mask, size)])
            expected = blend(resize_image(rgb, size), colour, ALPHA)
        assert np.abs(overlay.astype(int) - expected.astype(int)).max() <= 1


def expected_confidence():
    """255 x max softmax of the classifier's scores for a pixel of each palette colour."""
    p = PALETTE.astype(float) / 255
    scores = SHARPNESS * (2 * p @ p.T - (p * p).sum(1)[None, :])  # [pixel colour, class]
    probs = np.exp(scores - scores.max(1, keepdims=True))
    return np.round(255 * (probs / probs.sum(1, keepdims=True)).max(1))


def test_confidence_is_the_softmax_of_the_known_scores(live, sent):
    _, client = live
    table = expected_confidence()
    for (camera, stamp), (_, label, _) in sent.items():
        confidence = as_array(client.outputs(camera, stamp)['confidence'])
        interior = ~boundary_mask(label, radius=3)
        error = np.abs(confidence[interior].astype(int) - table[label[interior]])
        assert error.max() <= 1, f'{camera} {stamp}: confidence off by {error.max()}'


def test_labels_are_latched_with_names_and_colours(live, sent):
    _, client = live
    assert wait_for(lambda: len(client.labels) == 2, 10)
    if LABELS_TYPE is String:
        table = json.loads(client.labels[FRONT].data)['classes']
        assert [c['name'] for c in table][:3] == ['road', 'sidewalk', 'building']
        assert len(table) == 19
        assert table[13] == {'id': 13, 'name': 'car', 'color': [0, 0, 142]}
    else:  # a workspace with vision_msgs: names by id, no colours
        classes = client.labels[FRONT].class_map
        assert [(c.class_id, c.class_name) for c in classes][:3] == [(0, 'road'), (1, 'sidewalk'), (2, 'building')]
        assert len(classes) == 19 and (classes[13].class_id, classes[13].class_name) == (13, 'car')


BAD_FRAMES = [
    ('unknown encoding', lambda: _raw(b'\0' * 48, 4, 4, 'weird42', 12)),
    ('data shorter than step x height', lambda: _raw(b'\0' * 40, 4, 4, 'rgb8', 12)),
    ('zero width', lambda: _raw(b'', 4, 0, 'rgb8', 0)),
    ('odd width for yuv422', lambda: _raw(b'\0' * 24, 4, 3, 'yuv422', 6)),
    ('step smaller than a row', lambda: _raw(b'\0' * 48, 4, 4, 'rgb8', 8)),
]


def _raw(data, height, width, encoding, step):
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = data
    return msg


def test_bad_frames_are_rejected_counted_and_the_next_good_frame_is_right(live, sent):
    process, client = live
    # A report made once every earlier frame ended counted (received = the sum of the outcomes):
    # the counts below are differences from it, whatever the tests before this one sent.
    reports_before = len(client.diagnostics)

    def settled_report():  # a report made after this test began, so after every earlier output
        values, _ = client.diagnostic_values('/cam_front')
        return len(client.diagnostics) > reports_before and values is not None and int(
            values['frames_received']) == sum(
            int(values[f'frames_{k}']) for k in ('processed', 'dropped', 'rejected', 'failed', 'skipped'))
    assert wait_for(settled_report, 5)
    before, _ = client.diagnostic_values('/cam_front')

    def front_count(name):
        values, _ = client.diagnostic_values('/cam_front')
        return int(values[name]) - int(before[name])
    for i, (_, make) in enumerate(BAD_FRAMES):
        msg = make()
        msg.header.stamp.sec = 500 + i
        client.pubs[FRONT].publish(msg)
        # One frame at a time: a second frame arriving before the worker took the first would
        # replace it (a drop, not a rejection).
        assert wait_for(lambda n=i + 1: front_count('frames_rejected') == n, 10), client.diagnostic_values('/cam_front')
    corrupt = CompressedImage(format='jpeg', data=b'\xff\xd8\xff\xe0 not really a jpeg')
    corrupt.header.stamp.sec = 600
    client.pubs[LEFT].publish(corrupt)

    rgb, label = palette_scene(seed=99, height=240, width=320)
    assert client.send_and_wait(FRONT, image_msg(rgb, 700, 'front_optical')), process.output
    mask = as_array(client.outputs(FRONT, 700)['mask'])
    interior = ~boundary_mask(label, radius=3)
    assert np.array_equal(mask[interior], label[interior])
    for i in range(len(BAD_FRAMES)):
        assert client.outputs(FRONT, 500 + i) == {}, 'a rejected frame produced output'

    def counted():
        left, _ = client.diagnostic_values('/cam_left')
        # The good frame was processed (twice only if it had to be resent); the bad ones never.
        return front_count('frames_processed') >= 1 and int(left['frames_rejected']) == 1
    assert wait_for(counted, 5), (before, client.diagnostic_values('/cam_front')[0])
    assert front_count('frames_rejected') == len(BAD_FRAMES)
    assert front_count('frames_dropped') == 0
    assert process.proc.poll() is None, 'seg_node died on bad input'
    assert 'frame rejected: unsupported encoding' in process.output
    assert 'could not be decoded' in process.output


def test_engine_diagnostics_name_the_provider_and_the_model(live, sent):
    _, client = live
    engine = [s for a in client.diagnostics for s in a.status if s.name == 'seg_node: engine']
    assert engine, 'no engine status on /diagnostics'
    values = {kv.key: kv.value for kv in engine[-1].values}
    model = live[0].model_path
    assert values['provider'] == 'cpu'
    assert values['model'] == str(model)
    assert values['model_sha256'] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert values['classes'] == '19'
    assert engine[-1].level == OK and engine[-1].message == 'running on cpu'


def test_sigint_stops_a_working_node_cleanly_within_two_seconds(tmp_path):
    # A node of its own, on a camera of its own, so that no other test depends on it being alive;
    # the frames before the signal are sent and answered one by one, so the test does not load
    # the machine itself while the shutdown is measured.
    camera, mask_topic = '/cam_sigint/image_raw', '/cam_sigint/segmentation/mask'
    model_path = tmp_path / 'palette.onnx'
    onnx.save(palette_classifier(input_size=(120, 160)), model_path)
    process = NodeProcess({'model_path': model_path, 'image_topics': [camera], 'providers': ['cpu'],
                           'input_reliability': 'reliable', 'input_depth': 10})
    peer = BackgroundNode('sigint_client')
    masks = []
    publisher = peer.node.create_publisher(Image, camera, qos('reliable', 10))
    peer.node.create_subscription(Image, mask_topic, masks.append, qos('reliable', 10))
    try:
        process.wait_ready()
        assert wait_for(lambda: publisher.get_subscription_count() > 0
                        and peer.node.count_publishers(mask_topic) > 0, 30)
        for stamp in range(3):
            rgb, _ = palette_scene(seed=stamp, height=240, width=320)
            msg, count = image_msg(rgb, stamp, 'sigint_optical'), len(masks)

            def answered(msg=msg, count=count) -> bool:
                # Until the node has matched our mask subscription it rightly skips frames: resend.
                if len(masks) == count:
                    publisher.publish(msg)
                return len(masks) > count
            assert wait_for(answered, 15, period=0.3), process.output
        start = time.monotonic()
        code = process.stop(signal.SIGINT, timeout=5)
        elapsed = time.monotonic() - start
    finally:
        peer.close()
        process.stop(signal.SIGKILL)
    assert code == 0 and elapsed < 2.0, f'exit {code} after {elapsed:.2f} s:\n{process.output}'
    assert 'Traceback' not in process.output
