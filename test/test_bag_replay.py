"""Replay: synth bag -> seg_node process (real DDS on loopback) -> recorded outputs -> checks.

The drive is painted in palette colours and the model is the palette classifier at native
resolution, so every mask must equal the ground truth exactly.
"""

import signal
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from seg_node.bag.bagio import frame_key, open_bag
from seg_node.bag.cli import main
from seg_node.bag.evaluate import evaluate_bag, last_diagnostics
from seg_node.bag.label import LabelOptions, label_bag
from seg_node.bag.synth import SynthOptions, write_drive
from seg_node.model.known_answer import palette_classifier
from seg_node.msg import topics
from seg_node.ros.harness import NodeProcess

pytestmark = pytest.mark.dds

CAMERAS = ('/cam_front/image_raw', '/cam_left/image_raw')
FRAMES, WIDTH, HEIGHT = 20, 320, 240
# 7.5 Hz per camera: far below what the node sustains here, so superseded frames are rare; the
# tests still account for each one through the node's own counters instead of assuming none.
RATE = 0.25
ALPHA = 0.5
OUTPUTS = ('mask', 'color_mask', 'overlay')


def by_header(path):
    """{topic: {(stamp, frame_id): message}} and the duplicate count of a bag."""
    found, duplicates = {}, 0
    with open_bag(path) as reader:
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if not hasattr(msg, 'header'):
                continue
            frames = found.setdefault(conn.topic, {})
            duplicates += frame_key(msg.header) in frames
            frames[frame_key(msg.header)] = msg
    return found, duplicates


@pytest.fixture(scope='module')
def replay(tmp_path_factory):
    root = tmp_path_factory.mktemp('replay')
    options = SynthOptions(cameras=2, frames=FRAMES, width=WIDTH, height=HEIGHT, scene='palette', seed=7)
    write_drive(root / 'drive', options)
    onnx.save(palette_classifier(), root / 'palette.onnx')
    # Reliable input with a queue: DDS never drops a frame, so any loss would be the node's.
    node = NodeProcess({'model_path': root / 'palette.onnx', 'image_topics': list(CAMERAS),
                        'providers': ['cpu'], 'input_reliability': 'reliable', 'input_depth': 10,
                        'overlay_alpha': ALPHA, 'diagnostics_period_s': 0.2,
                        # seg_bag label writes pictures at the camera's size; the node's default is half.
                        'visualization_scale': 1.0})
    recorded = [*CAMERAS, *(topics.segmentation_topic(c, n) for c in CAMERAS for n in (*OUTPUTS, 'labels')),
                '/diagnostics']
    try:
        node.wait_ready()
        code = main(['play', str(root / 'drive'), '--rate', str(RATE), '--wait-for', *CAMERAS,
                     '--record', str(root / 'recorded'), '--topics', *recorded, '--drain', '1.5'])
    finally:
        exit_code = node.stop(signal.SIGINT)
    assert code == 0, node.output
    diagnostics = last_diagnostics(root / 'recorded')
    counters = {camera: {k: int(v) for k, v in diagnostics[f'seg_node: {topics.camera_namespace(camera)}'].items()
                         if k.startswith('frames_')} for camera in CAMERAS}
    return SimpleNamespace(root=root, bag=root / 'drive', recorded=root / 'recorded', node=node,
                           exit_code=exit_code, model=root / 'palette.onnx', counters=counters)


def test_every_frame_is_accounted_for_and_each_processed_one_has_every_output(replay):
    inputs, _ = by_header(replay.bag)
    outputs, duplicates = by_header(replay.recorded)
    assert duplicates == 0
    for camera in CAMERAS:
        played = set(inputs[camera])
        assert len(played) == FRAMES
        assert set(outputs[camera]) == played, 'the recorder missed input frames'
        counts = replay.counters[camera]
        # Every frame the node received ends processed, dropped for a newer one, or skipped (before
        # the node matched the recorder's subscriptions, nobody wanted it); none bad, none failed.
        assert counts['frames_received'] == FRAMES
        assert counts['frames_processed'] + counts['frames_dropped'] + counts['frames_skipped'] == FRAMES, counts
        assert counts['frames_rejected'] == counts['frames_failed'] == 0
        masks = set(outputs[topics.segmentation_topic(camera, 'mask')])
        assert len(masks) == counts['frames_processed'] and masks <= played
        for name in OUTPUTS:
            got = set(outputs[topics.segmentation_topic(camera, name)])
            assert got == masks, f'{camera} {name}: outputs of other frames than the masks'


def test_masks_equal_the_ground_truth(replay):
    report = evaluate_bag(replay.recorded, truth_bag=replay.bag)
    for image_topic in CAMERAS:
        camera = report.cameras[topics.camera_namespace(image_topic)]
        processed = replay.counters[image_topic]['frames_processed']
        assert (camera.matched, len(camera.missing), camera.extra, camera.duplicates) == (
            processed, FRAMES - processed, [], 0)
    assert report.metrics.mean_iou == 1.0
    assert report.metrics.pixel_accuracy == 1.0


def test_latency_is_measured_from_input_receipt(replay):
    report = evaluate_bag(replay.recorded, truth_bag=replay.bag)
    for image_topic in CAMERAS:
        camera = report.cameras[topics.camera_namespace(image_topic)]
        assert camera.latency_from == 'input receipt'
        assert len(camera.latency_ms) == replay.counters[image_topic]['frames_processed']
        assert min(camera.latency_ms) > 0 and max(camera.latency_ms) < 2000


def test_the_output_bag_reads_back_with_rosbags(replay):
    with open_bag(replay.recorded) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        counts = {c.topic: c.msgcount for c in reader.connections}
    for camera in CAMERAS:
        for name in OUTPUTS:
            topic = topics.segmentation_topic(camera, name)
            assert types[topic] == 'sensor_msgs/msg/Image'
            assert counts[topic] == replay.counters[camera]['frames_processed']
        assert types[topics.segmentation_topic(camera, 'labels')] == 'std_msgs/msg/String'
    assert not any(t.endswith(topics.GROUND_TRUTH) for t in types), 'ground truth is not played by default'
    outputs, _ = by_header(replay.recorded)
    for camera in CAMERAS:
        for msg in outputs[topics.segmentation_topic(camera, 'overlay')].values():
            assert (msg.height, msg.width, msg.encoding) == (HEIGHT, WIDTH, 'rgb8')


def test_offline_label_equals_the_live_node_output(replay):
    offline = replay.root / 'offline'
    options = LabelOptions(overlay_alpha=ALPHA, providers=('cpu',), batch=5)
    label_bag(replay.bag, offline, replay.model, options)
    live, _ = by_header(replay.recorded)
    labelled, _ = by_header(offline)
    inputs, _ = by_header(replay.bag)
    for camera in CAMERAS:
        for name in OUTPUTS:
            topic = topics.segmentation_topic(camera, name)
            assert set(labelled[topic]) == set(inputs[camera])  # offline, every frame is labelled
            for key, msg in live[topic].items():
                other = labelled[topic][key]
                assert (other.encoding, other.step) == (msg.encoding, msg.step)
                assert np.array_equal(other.data, msg.data), f'{topic} differs at {key}'


def test_the_node_exits_cleanly_after_the_replay(replay):
    assert replay.exit_code == 0
    assert 'Traceback' not in replay.node.output
