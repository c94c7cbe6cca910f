"""The ground grid over DDS: one node, two cameras with known poses, a known-answer model.

One node process serves every assertion, in order: nothing computed without a subscriber; a
camera without CameraInfo waits and says so once; an uncalibrated one (K all zeros) is refused
in one sentence while its masks still flow; exact cells, metadata, frame and stamp against the
ray-cast scene; the fused grid; a pose changed at run time applies to the next frame.
"""

import math
import time

import numpy as np
import onnx
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from ground_scene import GRID, PITCH, RES, SIZE, F, assert_matches, expected_grid, ray_cast
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from reliability_helpers import image_msg
from sensor_msgs.msg import CameraInfo, Image

from seg_node.model.classes import CITYSCAPES_PALETTE
from seg_node.model.known_answer import palette_classifier
from seg_node.ros.camera import qos
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode

pytestmark = pytest.mark.dds

FRONT, LEFT = '/cam_front/image_raw', '/cam_left/image_raw'
YAW_LEFT = math.radians(60)
POSES = {FRONT: (0.0, 0.0, 1.5, 0.0, PITCH, 0.0), LEFT: (0.0, 0.5, 1.5, 0.0, PITCH, YAW_LEFT)}
# The model pools 2x2 before classifying: masks at 320x240, so the node rescales the 640x480
# CameraInfo; rows are then twice as coarse and the honest range sqrt(0.2 * 1.5 * 250) = 8.66 m.
REACH = math.sqrt(RES * 1.5 * F / 2)
PALETTE = np.asarray(CITYSCAPES_PALETTE, np.uint8)


def camera_info(k):
    msg = CameraInfo()
    msg.height, msg.width = SIZE
    msg.k = [float(v) for v in np.ravel(k)]
    msg.distortion_model, msg.d = 'plumb_bob', [0.0] * 5
    return msg


GOOD_K = [[F, 0, 319.5], [0, F, 239.5], [0, 0, 1]]


def frame(camera, stamp, pose):
    mask = ray_cast(SIZE, F, F, 319.5, 239.5, pose[4], pose[5], cam=pose[:2])
    return image_msg(PALETTE[mask], stamp, f'{camera}_optical')


def expected(pose):
    return expected_grid(SIZE, F, F, 319.5, 239.5, pose[4], pose[5], REACH, cam=pose[:2])


class Client:
    def __init__(self):
        self.ros = BackgroundNode('ground_grid_test_client')
        node = self.ros.node
        self.images = {t: node.create_publisher(Image, t, qos('reliable', 10)) for t in (FRONT, LEFT)}
        self.infos = {t: node.create_publisher(CameraInfo, t.replace('image_raw', 'camera_info'), qos('reliable', 1))
                      for t in (FRONT, LEFT)}
        self.masks, self.grids, self.diagnostics = {}, {}, []
        self.info = {}  # the CameraInfo sent with each frame of a camera, as a camera driver does
        self.subs = [node.create_subscription(Image, t.replace('image_raw', 'segmentation/mask'),
                                              lambda m, t=t: self.masks.setdefault(t, []).append(m.header.stamp.sec),
                                              qos('reliable', 10)) for t in (FRONT, LEFT)]
        self.subs.append(node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 10))

    def subscribe_grids(self):
        for topic in (FRONT, LEFT, '/seg_node/ground_grid'):
            name = topic.replace('image_raw', 'segmentation/ground_grid')
            self.subs.append(self.ros.node.create_subscription(
                OccupancyGrid, name, lambda m, t=topic: self.grids.setdefault(t, []).append(m), qos('reliable', 10)))

    def send_until(self, camera, msg, done, timeout=20.0):
        """Publish ``msg`` (again each second: the node skips frames before it matched us) until ``done()``."""
        sent = []

        def answered():
            if not sent or time.monotonic() - sent[-1] > 1.0:
                if camera in self.info:
                    self.infos[camera].publish(self.info[camera])
                    time.sleep(0.05)
                self.images[camera].publish(msg)
                sent.append(time.monotonic())
            return done()
        return wait_for(answered, timeout)

    def grid(self, topic, stamp):
        return next((m for m in reversed(self.grids.get(topic, [])) if m.header.stamp.sec == stamp), None)

    def ground_status(self):
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name == 'seg_node: ground grid':
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def set_poses(self, values):
        client = self.ros.node.create_client(SetParameters, '/seg_node/set_parameters')
        assert client.wait_for_service(timeout_sec=15)
        request = SetParameters.Request(parameters=[ParameterMsg(name='ground_camera_poses', value=ParameterValue(
            type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=[float(v) for v in values]))])
        future = client.call_async(request)
        assert wait_for(future.done, 15)
        return future.result().results[0].successful


def cells(msg):
    return np.asarray(msg.data, np.int8).reshape(msg.info.height, msg.info.width)


@pytest.fixture(scope='module')
def live(tmp_path_factory):
    model_path = tmp_path_factory.mktemp('model') / 'palette_stride2.onnx'
    onnx.save(palette_classifier(downsample=2), model_path)
    process = NodeProcess({
        'model_path': model_path, 'image_topics': [FRONT, LEFT], 'providers': ['cpu'],
        'input_reliability': 'reliable', 'input_depth': 10, 'publish_color_mask': False,
        'publish_overlay': False, 'diagnostics_period_s': 0.2, 'warn_throttle_s': 0.0,
        'ground_grid': True, 'ground_resolution': RES, 'ground_x_min': 0.0, 'ground_x_max': 16.0,
        'ground_y_min': -8.0, 'ground_y_max': 8.0, 'ground_pitch_sigma_deg': 0.0,
        'ground_camera_poses': [*POSES[FRONT], *POSES[LEFT]], 'ground_fusion_max_age_s': 0.05,
    })
    client = Client()
    try:
        process.wait_ready()
        yield process, client
    finally:
        client.ros.close()
        process.stop()


def test_ground_grid_over_dds(live):
    process, client = live
    assert 'poses of /cam_front/image_raw, /cam_left/image_raw from ground_camera_poses' in process.output
    client.info[FRONT] = camera_info(GOOD_K)
    # 1. Nobody subscribes to a grid: masks flow, no grid is computed (counted as skipped).
    assert client.send_until(FRONT, frame('front', 1, POSES[FRONT]), lambda: 1 in client.masks.get(FRONT, []))
    assert wait_for(lambda: int(client.ground_status().get('/cam_front skipped', 0)) >= 1, 5)
    assert client.ground_status()['/cam_front computed'] == '0'

    # 2. Exact cells, metadata, frame and stamp of the front camera's grid.
    client.subscribe_grids()
    assert client.send_until(FRONT, frame('front', 2, POSES[FRONT]), lambda: client.grid(FRONT, 2) is not None), \
        process.output[-3000:]
    msg = client.grid(FRONT, 2)
    assert msg.header.frame_id == 'base_footprint' and msg.header.stamp.sec == 2
    assert (msg.info.width, msg.info.height, msg.info.resolution) == (GRID.width, GRID.height, pytest.approx(RES))
    assert (msg.info.origin.position.x, msg.info.origin.position.y) == (0.0, -8.0)
    front = expected(POSES[FRONT])
    assert_matches(cells(msg), front)
    assert (cells(msg) == 100).sum() >= 5
    assert 'claims up to 8.7 m' in process.output

    # 3. No CameraInfo yet for the left camera: its grid waits and says so once; masks still flow.
    for stamp in (3, 4):
        assert client.send_until(LEFT, frame('left', stamp, POSES[LEFT]),
                                 lambda s=stamp: s in client.masks.get(LEFT, []))
    assert wait_for(lambda: process.output.count('no CameraInfo yet on /cam_left/camera_info') == 1, 5)
    # 4. K all zeros: refused in one sentence, once, and the node runs on.
    client.info[LEFT] = camera_info(np.zeros((3, 3)))
    for stamp in (5, 6):
        assert client.send_until(LEFT, frame('left', stamp, POSES[LEFT]),
                                 lambda s=stamp: s in client.masks.get(LEFT, []))
    assert wait_for(lambda: process.output.count('uncalibrated') == 1, 5), process.output[-2000:]
    assert client.grid(LEFT, 6) is None

    # 5. Calibrated: the left camera's grid, and both fused at one stamp.
    client.info[LEFT] = camera_info(GOOD_K)
    left = expected(POSES[LEFT])
    assert client.send_until(LEFT, frame('left', 7, POSES[LEFT]), lambda: client.grid(LEFT, 7) is not None)
    assert_matches(cells(client.grid(LEFT, 7)), left)
    assert client.send_until(FRONT, frame('front', 8, POSES[FRONT]), lambda: client.grid(FRONT, 8) is not None)
    assert client.send_until(LEFT, frame('left', 8, POSES[LEFT]), lambda: client.grid(LEFT, 8) is not None)
    fused_at_8 = lambda: [m for m in client.grids.get('/seg_node/ground_grid', []) if m.header.stamp.sec == 8]  # noqa: E731
    assert wait_for(lambda: len(fused_at_8()) >= 2, 5)
    both = np.where((front == 100) | (left == 100), 100, np.where((front == 0) | (left == 0), 0, -1))
    assert_matches(cells(fused_at_8()[-1]), both.astype(np.int8))
    # The fused grid of stamp 7 (left alone: the front's grid of stamp 2 is too old) is the left grid.
    assert all(np.array_equal(cells(m), cells(client.grid(LEFT, 7)))
               for m in client.grids['/seg_node/ground_grid'] if m.header.stamp.sec == 7)

    # 6. A pose changed at run time applies to the next frame.
    lower = (0.0, 0.0, 1.5, 0.0, math.radians(15), 0.0)
    assert client.set_poses([*lower, *POSES[LEFT]])
    assert client.send_until(FRONT, frame('front', 9, lower), lambda: client.grid(FRONT, 9) is not None)
    assert_matches(cells(client.grid(FRONT, 9)), expected(lower))
    assert not np.array_equal(expected(lower), front)
    assert wait_for(lambda: int(client.ground_status()['/cam_front computed']) >= 3, 5)
    assert client.ground_status()['/cam_front range_m'] == f'{REACH:.2f}'
