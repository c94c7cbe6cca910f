"""Recordings any MCAP reader opens: read back with Foxglove's own ``mcap`` + ``mcap-ros2-support`` (not rosbags).

The drive (``seg_bag synth``), the node's outputs recorded live (``seg_bag play --record``) and the
offline labels (``seg_bag label``) are all written with ``--storage mcap``. A ROS peer records the
node's outputs as DDS delivered them; the MCAP copies must be those bytes, and the pictures in
them the known answers of the palette classifier.
"""

import signal
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from seg_node.bag.cli import main
from seg_node.bag.label import LabelOptions, label_bag
from seg_node.bag.synth import SynthOptions, write_drive
from seg_node.model.classes import CITYSCAPES_PALETTE
from seg_node.model.known_answer import palette_classifier
from seg_node.msg import topics
from seg_node.ros.camera import qos
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode
from seg_node.runtime.render import blend

mcap_reader = pytest.importorskip('mcap.reader')
ros2_decoder = pytest.importorskip('mcap_ros2.decoder')

pytestmark = pytest.mark.dds

CAMERAS = ('/cam_front/image_raw', '/cam_left/image_raw')
FRAMES, WIDTH, HEIGHT = 4, 160, 120
ALPHA = 0.5
OUTPUTS = ('mask', 'color_mask', 'overlay')
PALETTE = np.asarray(CITYSCAPES_PALETTE, np.uint8)


def mcap_file(bag: Path) -> Path:
    files = sorted(bag.glob('*.mcap'))
    assert len(files) == 1, f'{bag}: {files}'
    return files[0]


def read_mcap(bag: Path):
    """(header, summary, {topic: [(raw CDR, decoded message)]}) through the mcap readers alone."""
    with mcap_file(bag).open('rb') as f:
        reader = mcap_reader.make_reader(f, decoder_factories=[ros2_decoder.DecoderFactory()])
        header, summary = reader.get_header(), reader.get_summary()
        found = {}
        for _, channel, message, decoded in reader.iter_decoded_messages():
            found.setdefault(channel.topic, []).append((bytes(message.data), decoded))
    return header, summary, found


def picture(msg):
    channels = 3 if msg.encoding == 'rgb8' else 1
    shape = (msg.height, msg.width, channels) if channels == 3 else (msg.height, msg.width)
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(shape)


def key(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp('mcap')
    write_drive(root / 'drive', SynthOptions(cameras=2, frames=FRAMES, width=WIDTH, height=HEIGHT,
                                             scene='palette', seed=11, storage='mcap'))
    onnx.save(palette_classifier(), root / 'palette.onnx')
    node = NodeProcess({'model_path': root / 'palette.onnx', 'image_topics': list(CAMERAS), 'providers': ['cpu'],
                        'input_reliability': 'reliable', 'input_depth': 10, 'overlay_alpha': ALPHA,
                        'visualization_scale': 1.0})
    outputs = [topics.segmentation_topic(c, n) for c in CAMERAS for n in OUTPUTS]
    peer = BackgroundNode('mcap_peer')
    published = {topic: [] for topic in outputs}
    subs = [peer.node.create_subscription(Image, topic, published[topic].append, qos('reliable', 10), raw=True)
            for topic in outputs]
    try:
        node.wait_ready()
        assert wait_for(lambda: all(s.get_publisher_count() > 0 for s in subs), 30)
        # Discovery is not symmetric: the node may match these subscriptions a moment after they see its
        # publishers, and it skips the frames of outputs it thinks nobody wants (a loaded CI run lost 2 of 4).
        time.sleep(1.0)
        code = main(['play', str(root / 'drive'), '--rate', '0.5', '--wait-for', *CAMERAS,
                     '--record', str(root / 'recorded'), '--storage', 'mcap',
                     '--topics', *CAMERAS, *outputs, '--drain', '1.5'])
        assert code == 0, node.output
    finally:
        peer.close()
        node.stop(signal.SIGINT)
    label_bag(root / 'drive', root / 'labelled', root / 'palette.onnx',
              LabelOptions(overlay_alpha=ALPHA, providers=('cpu',), storage='mcap'))
    return SimpleNamespace(root=root, published=published, outputs=outputs)


def test_every_recording_is_ros2_mcap_with_zstd_chunks_and_chunk_indexes(recorded):
    for name in ('drive', 'recorded', 'labelled'):
        header, summary, messages = read_mcap(recorded.root / name)
        assert header.profile == 'ros2', name
        assert summary.chunk_indexes, f'{name}: no chunk index'
        assert {c.compression for c in summary.chunk_indexes} == {'zstd'}, name
        assert all(c.compressed_size < c.uncompressed_size for c in summary.chunk_indexes), name
        assert {s.encoding for s in summary.schemas.values()} == {'ros2msg'}, name
        assert {c.message_encoding for c in summary.channels.values()} == {'cdr'}, name
        assert summary.statistics.message_count == sum(len(v) for v in messages.values()) > 0, name


def test_recorded_outputs_are_the_bytes_the_node_published(recorded):
    _, _, messages = read_mcap(recorded.root / 'recorded')
    for topic in recorded.outputs:
        published = sorted(bytes(raw) for raw in recorded.published[topic])
        assert len(published) >= FRAMES - 1, f'{topic}: the node published {len(published)} of {FRAMES} frames'
        assert sorted(raw for raw, _ in messages[topic]) == published, topic
        # and mcap-ros2-support decodes them to what rclpy decodes
        for raw, decoded in messages[topic]:
            ours = deserialize_message(raw, Image)
            assert key(decoded) == key(ours) and bytes(decoded.data) == bytes(ours.data)


def test_recorded_pictures_are_the_known_answers(recorded):
    _, _, drive = read_mcap(recorded.root / 'drive')
    _, _, messages = read_mcap(recorded.root / 'recorded')
    for camera in CAMERAS:
        inputs = {key(msg): picture(msg) for _, msg in drive[camera]}
        truth = {key(msg): picture(msg) for _, msg in drive[topics.segmentation_topic(camera, topics.GROUND_TRUTH)]}
        by_name = {name: {key(m): picture(m) for _, m in messages[topics.segmentation_topic(camera, name)]}
                   for name in OUTPUTS}
        assert by_name['mask'], camera
        for frame, mask in by_name['mask'].items():
            np.testing.assert_array_equal(mask, truth[frame])  # native-size palette classifier: exact
            np.testing.assert_array_equal(by_name['color_mask'][frame], PALETTE[mask])
            expected = blend(inputs[frame], PALETTE[mask], ALPHA)
            assert np.abs(by_name['overlay'][frame].astype(int) - expected).max() <= 1


def test_offline_labels_in_mcap_equal_the_live_node_outputs(recorded):
    _, _, live = read_mcap(recorded.root / 'recorded')
    _, _, labelled = read_mcap(recorded.root / 'labelled')
    for topic in recorded.outputs:
        offline = {key(msg): msg for _, msg in labelled[topic]}
        assert len(offline) == FRAMES, topic  # offline, every frame is labelled
        for _, msg in live[topic]:
            other = offline[key(msg)]
            assert (other.encoding, other.step, other.height, other.width) == (msg.encoding, msg.step, msg.height,
                                                                                msg.width)
            assert bytes(other.data) == bytes(msg.data), f'{topic} differs at {key(msg)}'
