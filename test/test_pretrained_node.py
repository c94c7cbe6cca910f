"""A converted mmsegmentation Cityscapes DeepLabV3-R50 runs in seg_node over DDS (random weights, tiny input)."""

import json
import signal

import numpy as np
import pytest
from mmseg_reference import randomize_batchnorm, save_mmseg_checkpoint
from sensor_msgs.msg import Image
from std_msgs.msg import String

from seg_node.model.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from seg_node.ros import camera as camera_io
from seg_node.ros.camera import qos
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.loader import ModelRequest, load_model
from seg_node.runtime.render import resize_nearest
from seg_node.synthetic.drive import render_scene
from seg_node.training.export import ExportOptions
from seg_node.training.pretrained import MMSegNetwork, export_pretrained

pytestmark = pytest.mark.dds
CAMERA = '/cam_front/image_raw'
MODEL_SIZE = (64, 128)
LABELS_TYPE = camera_io.LabelInfo or String  # vision_msgs/LabelInfo where installed, else JSON


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """seg_export --pretrained mmseg:deeplabv3_r50-d8_cityscapes --checkpoint FILE, at a tiny input size."""
    root = tmp_path_factory.mktemp('converted')
    checkpoint = save_mmseg_checkpoint(root / 'deeplabv3.pth',
                                       randomize_batchnorm(MMSegNetwork('deeplab', 19), seed=7).state_dict())
    model_path = root / 'deeplabv3_r50_cityscapes.onnx'
    export_pretrained('mmseg:deeplabv3_r50-d8_cityscapes', model_path,
                      ExportOptions(height=MODEL_SIZE[0], width=MODEL_SIZE[1]), checkpoint=checkpoint)
    return model_path


def test_converted_model_segments_camera_frames_over_dds(converted):
    process = NodeProcess({'model_path': converted, 'image_topics': [CAMERA], 'providers': ['cpu'],
                           'input_reliability': 'reliable', 'input_depth': 5})
    client = BackgroundNode('pretrained_test_client')
    masks, labels = {}, []
    node = client.node
    publisher = node.create_publisher(Image, CAMERA, qos('reliable', 5))
    subscriptions = [
        node.create_subscription(Image, '/cam_front/segmentation/mask',
                                 lambda m: masks.__setitem__(m.header.stamp.sec, m), qos('reliable', 5)),
        node.create_subscription(LABELS_TYPE, '/cam_front/segmentation/labels', labels.append,
                                 qos('reliable', 1, latched=True)),
    ]
    try:
        process.wait_ready(timeout=60)
        assert wait_for(lambda: publisher.get_subscription_count() > 0 and
                        all(s.get_publisher_count() > 0 for s in subscriptions), 30), 'no discovery'
        rgb, _ = render_scene(1, height=120, width=256)
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=rgb.shape[1] * 3,
                    data=rgb.tobytes())
        msg.header.stamp.sec, msg.header.frame_id = 42, 'front_optical'

        def answered():
            if 42 not in masks:
                publisher.publish(msg)
            return 42 in masks
        assert wait_for(answered, 60, period=1.0), process.output
        got = np.frombuffer(masks[42].data, np.uint8).reshape(rgb.shape[:2])
        engine = load_model(ModelRequest(str(converted), config=EngineConfig(providers=('cpu',)))).engine
        expected = resize_nearest(engine.segment([rgb])[0].class_mask, rgb.shape[:2])
        np.testing.assert_array_equal(got, expected)
        assert len(np.unique(got)) > 1, 'the random-weight model should not predict one class everywhere'
        # The class table comes from the converted file's metadata: Cityscapes names (and colours).
        assert wait_for(lambda: labels, 10)
        if hasattr(labels[-1], 'class_map'):
            assert tuple(c.class_name for c in labels[-1].class_map) == CITYSCAPES_CLASSES
        else:
            table = json.loads(labels[-1].data)['classes']
            assert [(c['name'], tuple(c['color'])) for c in table] == list(
                zip(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, strict=True))
    finally:
        client.close()
        process.stop(signal.SIGKILL)
