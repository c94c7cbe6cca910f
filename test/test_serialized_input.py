"""Frames taken as CDR bytes (the default data path) through the node's worker: same masks, same
rejections as rclpy messages, a payload the CDR reader refuses goes through rclpy and is counted."""

import struct

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from reliability_helpers import FRONT, LEFT, compressed_msg, image_msg, node_in_process, png_msg, save_model

from seg_node.model.known_answer import palette_scene


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp('m') / 'palette.onnx')


def _big_endian(rgb, stamp):
    """``rgb`` as an rgb8 Image serialized big endian, frame_id 'be'."""
    height, width = rgb.shape[:2]
    body = struct.pack('>iII', stamp, 0, 3) + b'be\x00' + bytes(1)
    body += struct.pack('>II', height, width) + struct.pack('>I', 5) + b'rgb8\x00' + b'\x00'
    body += bytes(-(len(body)) % 4) + struct.pack('>I', width * 3) + struct.pack('>I', rgb.size) + rgb.tobytes()
    return b'\x00\x00\x00\x00' + body


def test_serialized_frames_give_the_masks_of_the_messages_and_the_same_rejections(context, model):
    with node_in_process(context, model_path=model, image_topics=[FRONT, LEFT]) as run:
        assert all(camera.serialized for camera in run.node.cameras.values())
        rgb, label = palette_scene(1, 24, 32, min_block=4)
        run.send_and_settle(FRONT, serialize_message(image_msg(rgb, 1, 'front_optical')))
        run.send_and_settle(FRONT, _big_endian(rgb, 2))
        run.send_and_settle(LEFT, serialize_message(png_msg(rgb, 3, 'left_optical')))
        outputs = run.recorder.by_stamp(FRONT)
        assert sorted(outputs) == [1, 2]
        assert (outputs[1].frame_id, outputs[2].frame_id) == ('front_optical', 'be')
        for output in (*outputs.values(), run.recorder.by_stamp(LEFT)[3]):
            np.testing.assert_array_equal(output.mask, label)
        # What the plain path rejects, the serialized one rejects with the same reason.
        short = image_msg(rgb, 4)
        short.data = bytes(short.data)[:-5]
        run.send_and_settle(FRONT, serialize_message(short))
        assert run.node.cameras[FRONT].stats.last_reject_reason == (
            f'data holds {rgb.size - 5} bytes but step x height needs {rgb.size} (96 x 24)')
        run.send_and_settle(LEFT, serialize_message(compressed_msg(b'\xff\xd8 not a jpeg', 5, fmt='jpeg')))
        assert run.node.cameras[LEFT].stats.last_reject_reason.startswith('compressed data could not be decoded')
        # Bytes neither reader can read: one sentence from the CDR reader.
        run.send_and_settle(FRONT, serialize_message(image_msg(rgb, 6))[:30])
        assert run.node.cameras[FRONT].stats.last_reject_reason.startswith('serialized Image is truncated')
        totals = run.totals(FRONT)
        assert (totals['processed'], totals['rejected'], totals['deserialized']) == (2, 2, 1)
        assert run.node.pipeline.unexpected_errors == 0


def test_the_plain_data_path_takes_messages(context, model):
    with node_in_process(context, model_path=model, image_topics=[FRONT], data_path='plain') as run:
        camera = run.node.cameras[FRONT]
        assert not camera.serialized
        assert not any(output.serialized for output in camera.outputs.values())
        rgb, label = palette_scene(2, 24, 32, min_block=4)
        run.send_and_settle(FRONT, image_msg(rgb, 1))
        np.testing.assert_array_equal(run.recorder.by_stamp(FRONT)[1].mask, label)
