"""Masks at model resolution with a rescaled camera_info, default sensor QoS, bgr8 and JPEG input."""

import signal

import numpy as np
import onnx
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from seg_node.model.known_answer import boundary_mask, palette_classifier, palette_scene
from seg_node.msg.image import encode_compressed
from seg_node.ros.camera import qos
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode

pytestmark = pytest.mark.dds

RAW = '/cam_a/image_raw'
JPEG = '/cam_b/image_raw/compressed'


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp('m') / 'palette_u8.onnx'
    # uint8 input, class-id output at half the 64x96 model input.
    onnx.save(palette_classifier(input_format='uint8', output='class_ids', downsample=2,
                                 input_size=(64, 96)), path)
    process = NodeProcess({'model_path': path, 'image_topics': [RAW, JPEG], 'providers': ['cpu'],
                           'mask_resolution': 'model', 'publish_overlay': False})
    client = BackgroundNode('seg_node_test_model_res')
    node = client.node
    got = {}

    def keep(key):
        return lambda msg: got.setdefault(key, []).append(msg)

    subs = [node.create_subscription(Image, f'/cam_{c}/segmentation/{o}', keep((c, o)), qos('reliable', 10))
            for c in 'ab' for o in ('mask', 'color_mask', 'overlay')]
    subs.append(node.create_subscription(CameraInfo, '/cam_a/segmentation/camera_info', keep(('a', 'info')),
                                         qos('reliable', 10)))
    # The node's default input QoS is sensor data (best effort): publish the same way.
    pub_raw = node.create_publisher(Image, RAW, qos_profile_sensor_data)
    pub_jpeg = node.create_publisher(CompressedImage, JPEG, qos_profile_sensor_data)
    pub_info = node.create_publisher(CameraInfo, '/cam_a/camera_info', qos('reliable', 1))
    try:
        process.wait_ready()
        pubs = (pub_raw, pub_jpeg, pub_info)
        assert wait_for(lambda: all(p.get_subscription_count() for p in pubs)
                        and all(s.get_publisher_count() for s in subs), 30)
        yield process, got, pub_raw, pub_jpeg, pub_info
    finally:
        client.close()
        process.stop(signal.SIGKILL)


def test_bgr8_mask_at_model_resolution_with_rescaled_camera_info(run):
    process, got, pub_raw, _, pub_info = run
    info = CameraInfo(height=256, width=384, distortion_model='plumb_bob')
    info.k = [400.0, 0.0, 192.0, 0.0, 400.0, 128.0, 0.0, 0.0, 1.0]
    info.p = [400.0, 0.0, 192.0, 0.0, 0.0, 400.0, 128.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    rgb, label = palette_scene(5, 256, 384, min_block=40)
    msg = Image(height=256, width=384, encoding='bgr8', step=384 * 3)
    msg.data = rgb[..., ::-1].tobytes()
    msg.header.frame_id = 'a_optical'
    msg.header.stamp.sec = 42
    # Best effort: repeat until one frame comes through (the first may precede matching).
    def delivered():
        pub_info.publish(info)
        pub_raw.publish(msg)
        return wait_for(lambda: ('a', 'mask') in got and ('a', 'info') in got, 1.0)
    assert wait_for(delivered, 20, period=0), process.output
    mask_msg = got['a', 'mask'][0]
    assert (mask_msg.height, mask_msg.width) == (32, 48)  # model input 64x96, output stride 2
    assert mask_msg.header.frame_id == 'a_optical' and mask_msg.header.stamp.sec == 42
    mask = np.frombuffer(mask_msg.data, np.uint8).reshape(32, 48)
    small_label = label[4::8, 4::8]  # centre of each 8x8 block of the 256x384 frame
    wrong = (mask != small_label) & ~boundary_mask(label, radius=8)[4::8, 4::8]
    assert not wrong.any()
    scaled = got['a', 'info'][-1]
    assert (scaled.height, scaled.width) == (32, 48)
    assert scaled.header.stamp.sec == 42
    np.testing.assert_allclose(scaled.k, [50.0, 0, 24.0, 0, 50.0, 16.0, 0, 0, 1])
    assert ('a', 'overlay') not in got, 'publish_overlay is false but an overlay came out'


def test_jpeg_input_is_segmented(run):
    process, got, _, pub_jpeg, _ = run
    rgb, label = palette_scene(6, 128, 192, min_block=40)
    msg = CompressedImage(format='jpeg')
    msg.data = encode_compressed(rgb, 'jpeg', quality=95)
    msg.header.stamp.sec = 7

    def delivered():
        pub_jpeg.publish(msg)
        return wait_for(lambda: ('b', 'mask') in got, 1.0)
    assert wait_for(delivered, 20, period=0), process.output
    mask = np.frombuffer(got['b', 'mask'][0].data, np.uint8).reshape(32, 48)
    # JPEG noise can move a pixel to a near-identical palette colour; the interior stays right.
    interior = ~boundary_mask(label, radius=8)[2::4, 2::4]
    assert np.mean(mask[interior] == label[2::4, 2::4][interior]) > 0.95
