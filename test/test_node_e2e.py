"""seg_node end to end over real DDS: two cameras in, masks / overlays / labels out."""

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
from seg_node.ros.camera import qos
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode
from seg_node.runtime.render import blend

pytestmark = pytest.mark.dds

FRONT = '/cam_front/image_raw'
LEFT = '/cam_left/image_raw/compressed'
OUTPUTS = ('mask', 'color_mask', 'overlay', 'confidence')
ALPHA = 0.4
PALETTE = np.asarray(CITYSCAPES_PALETTE, np.uint8)


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
                String, f'{ns}/segmentation/labels',
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
        self.pubs[camera].publish(msg)
        stamp = msg.header.stamp.sec
        return wait_for(lambda: len(self.outputs(camera, stamp)) == len(OUTPUTS), timeout)

    def diagnostic_values(self, camera_ns):
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name == f'seg_node: {camera_ns}':
                    return {kv.key: kv.value for kv in status.values}, status
        return None, None


@pytest.fixture(scope='module')
def live(tmp_path_factory):
    model_path = tmp_path_factory.mktemp('model') / 'palette.onnx'
    onnx.save(palette_classifier(input_size=(120, 160)), model_path)
    process = NodeProcess({
        'model_path': model_path, 'image_topics': [FRONT, LEFT], 'providers': ['cpu'],
        'input_reliability': 'reliable', 'input_depth': 10, 'publish_confidence': True,
        'overlay_alpha': ALPHA, 'diagnostics_period_s': 0.2, 'warn_throttle_s': 0.0,
    })
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


def test_every_output_keeps_the_input_header_and_size(live, sent):
    _, client = live
    for (camera, stamp), (rgb, _, frame_id) in sent.items():
        for name, msg in client.outputs(camera, stamp).items():
            assert msg.header.stamp.sec == stamp and msg.header.stamp.nanosec == 0
            assert msg.header.frame_id == frame_id, name
            assert (msg.height, msg.width) == rgb.shape[:2], name
            expected = 'rgb8' if name in ('color_mask', 'overlay') else 'mono8'
            assert msg.encoding == expected, name


def test_color_mask_and_overlay_are_the_palette_colours_of_the_mask(live, sent):
    _, client = live
    for (camera, stamp), (rgb, _, _) in sent.items():
        outputs = client.outputs(camera, stamp)
        mask = as_array(outputs['mask'])
        colour = as_array(outputs['color_mask'])
        np.testing.assert_array_equal(colour, PALETTE[mask])
        overlay = as_array(outputs['overlay'])
        expected = blend(rgb, PALETTE[mask], ALPHA)
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
    table = json.loads(client.labels[FRONT].data)['classes']
    assert [c['name'] for c in table][:3] == ['road', 'sidewalk', 'building']
    assert len(table) == 19
    assert table[13] == {'id': 13, 'name': 'car', 'color': [0, 0, 142]}


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
    # The frames above can all be done before the first report (every 0.2 s) comes in.
    assert wait_for(lambda: client.diagnostic_values('/cam_front')[0] is not None, 5)
    before, _ = client.diagnostic_values('/cam_front')
    rejected_before = int(before['frames_rejected'])
    for i, (_, make) in enumerate(BAD_FRAMES):
        msg = make()
        msg.header.stamp.sec = 500 + i
        client.pubs[FRONT].publish(msg)
        time.sleep(0.1)
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
        front, _ = client.diagnostic_values('/cam_front')
        left, _ = client.diagnostic_values('/cam_left')
        return (int(front['frames_rejected']) - rejected_before == len(BAD_FRAMES)
                and int(left['frames_rejected']) == 1)
    assert wait_for(counted, 5), client.diagnostic_values('/cam_front')
    front, _ = client.diagnostic_values('/cam_front')
    assert front['frames_processed'] == str(len(sent) // 2 + 1)
    assert process.proc.poll() is None, 'seg_node died on bad input'
    assert 'frame rejected: unsupported encoding' in process.output
    assert 'could not be decoded' in process.output


def test_engine_diagnostics_name_the_provider(live, sent):
    _, client = live
    engine = [s for a in client.diagnostics for s in a.status if s.name == 'seg_node: engine']
    assert engine, 'no engine status on /diagnostics'
    values = {kv.key: kv.value for kv in engine[-1].values}
    assert values['provider'] == 'cpu'
    assert float(values['inference_ms_p50']) > 0


def test_sigint_stops_the_node_cleanly_within_two_seconds(live, sent):
    process, _ = live
    start = time.monotonic()
    code = process.stop(signal.SIGINT, timeout=5)
    assert time.monotonic() - start < 2.0
    assert code == 0
    assert 'Traceback' not in process.output
