"""The ground grid's tf2 path, in process: poses from a stand-in tf2 buffer returning TransformStamped.

tf2_ros has no PyPI wheel, so the node's buffer is replaced by one that answers lookup_transform
with a geometry_msgs/TransformStamped, as tf2_ros.Buffer does.
"""

import math

import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from ground_scene import PITCH, REACH, RES, SIZE, F, assert_matches, expected_grid, optical_axes, ray_cast
from nav_msgs.msg import OccupancyGrid
from reliability_helpers import image_msg, node_in_process, save_model, spinning
from sensor_msgs.msg import CameraInfo

from seg_node.model.classes import CITYSCAPES_PALETTE
from seg_node.ros import node_base
from seg_node.ros.harness import wait_for
from seg_node.ros.node_base import StartupError

FRONT = '/cam_front/image_raw'
PALETTE = np.asarray(CITYSCAPES_PALETTE, np.uint8)


def quaternion(r):
    """(x, y, z, w) of a rotation matrix with a positive trace."""
    w = math.sqrt(1 + r[0, 0] + r[1, 1] + r[2, 2]) / 2
    return (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w), w


class StandInBuffer:
    """Answers lookup_transform like tf2_ros.Buffer, with the camera pitched by ``pitch``."""

    def __init__(self, pitch):
        self.pitch = pitch
        self.asked = []

    def lookup_transform(self, target, source, _time):
        self.asked.append((target, source))
        msg = TransformStamped()
        msg.header.frame_id, msg.child_frame_id = target, source
        msg.transform.translation.z = 1.5
        q = quaternion(optical_axes(self.pitch, 0.0))
        msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z, msg.transform.rotation.w = q
        return msg


def test_poses_come_from_tf_and_a_changed_transform_rebuilds_the_lookup(context, tmp_path):
    params = {'model_path': save_model(tmp_path / 'palette.onnx'), 'image_topics': [FRONT], 'ground_grid': True,
              'ground_resolution': RES, 'ground_x_min': 0.0, 'ground_x_max': 16.0, 'ground_y_min': -8.0,
              'ground_y_max': 8.0, 'ground_pitch_sigma_deg': 0.0}
    with node_in_process(context, **params) as harness:
        node, ground = harness.node, harness.node.ground
        ground.tf_buffer = StandInBuffer(PITCH)  # no tf2_ros on PyPI: the stand-in plays its part
        grids = []
        node.create_subscription(OccupancyGrid, '/cam_front/segmentation/ground_grid', grids.append, 10)
        info = node.create_publisher(CameraInfo, '/cam_front/camera_info', 10)
        msg = CameraInfo(height=SIZE[0], width=SIZE[1], k=[F, 0.0, 319.5, 0.0, F, 239.5, 0.0, 0.0, 1.0])
        with spinning(node):
            assert wait_for(lambda: ground.publishers[FRONT].get_subscription_count() > 0, 10)
            assert wait_for(lambda: (info.publish(msg), ground.has_camera_info(FRONT))[1], 10)
            for stamp, pitch in ((1, PITCH), (2, math.radians(15)), (3, math.radians(15))):
                ground.tf_buffer.pitch = pitch
                mask = ray_cast(SIZE, F, F, 319.5, 239.5, pitch, 0.0)
                harness.send_and_settle(FRONT, image_msg(PALETTE[mask], stamp, 'cam_front_optical'))
                assert wait_for(lambda s=stamp: any(g.header.stamp.sec == s for g in grids), 10)
                grid = next(g for g in grids if g.header.stamp.sec == stamp)
                cells = np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
                assert_matches(cells, expected_grid(SIZE, F, F, 319.5, 239.5, pitch, 0.0, REACH))
        assert ground.tf_buffer.asked[-1] == ('base_footprint', 'cam_front_optical')
        assert ground.mapper.lookups_built == 2  # the same transform twice: no rebuild


def test_an_unknown_class_name_stops_the_start_with_one_sentence(context, tmp_path):
    params = {'model_path': save_model(tmp_path / 'palette.onnx'), 'image_topics': [FRONT], 'ground_grid': True,
              'ground_obstacle_classes': ['car', 'lorry']}
    with (pytest.raises(StartupError, match=r"ground_obstacle_classes names 'lorry', which the model does not have"),
          node_in_process(context, **params)):
        pass


def test_without_nav_msgs_the_grid_is_off_and_the_node_runs(context, tmp_path, monkeypatch):
    monkeypatch.setattr(node_base, 'OccupancyGrid', None)
    params = {'model_path': save_model(tmp_path / 'palette.onnx'), 'image_topics': [FRONT], 'ground_grid': True}
    with node_in_process(context, **params) as harness:
        assert harness.node.ground is None and harness.node.pipeline.ground is None
        mask = ray_cast(SIZE, F, F, 319.5, 239.5, PITCH, 0.0)
        harness.send_and_settle(FRONT, image_msg(PALETTE[mask], 1, 'cam_front_optical'))
        totals = harness.totals(FRONT)
        assert totals['processed'] + totals['skipped'] == 1 and totals['failed'] == totals['rejected'] == 0


class RecordingView:
    """Stands in for the Foxglove live view: grid channels that viewers may watch, and the grids offered."""

    def __init__(self):
        self.watching = False
        self.declared, self.offered = set(), []

    def declare_grid(self, topic):
        self.declared.add(topic)
        return self

    def has_sinks(self):
        return self.watching

    def offer_grid(self, topic, cells, **info):
        self.offered.append((topic, cells.copy(), info))


def test_the_grids_go_to_the_live_view_only_while_a_viewer_watches(context, tmp_path):
    params = {'model_path': save_model(tmp_path / 'palette.onnx'), 'image_topics': [FRONT], 'ground_grid': True,
              'ground_resolution': RES, 'ground_x_min': 0.0, 'ground_x_max': 16.0, 'ground_y_min': -8.0,
              'ground_y_max': 8.0, 'ground_pitch_sigma_deg': 0.0}
    camera_grid, fused_grid = '/cam_front/segmentation/ground_grid', '/seg_node/ground_grid'
    with node_in_process(context, **params) as harness:
        node, ground = harness.node, harness.node.ground
        ground.tf_buffer = StandInBuffer(PITCH)
        view = RecordingView()
        ground.show_on(view)  # what the node does when foxglove_port is set
        assert view.declared == {camera_grid, fused_grid}  # advertised before the first grid
        info = node.create_publisher(CameraInfo, '/cam_front/camera_info', 10)
        msg = CameraInfo(height=SIZE[0], width=SIZE[1], k=[F, 0.0, 319.5, 0.0, F, 239.5, 0.0, 0.0, 1.0])
        mask = ray_cast(SIZE, F, F, 319.5, 239.5, PITCH, 0.0)
        with spinning(node):
            assert wait_for(lambda: (info.publish(msg), ground.has_camera_info(FRONT))[1], 10)
            harness.send_and_settle(FRONT, image_msg(PALETTE[mask], 1, 'cam_front_optical'))
            assert view.offered == [] and ground.counts[FRONT]['computed'] == 0  # nobody watches: not computed
            view.watching = True
            harness.send_and_settle(FRONT, image_msg(PALETTE[mask], 2, 'cam_front_optical'))
    assert [topic for topic, _, _ in view.offered] == [camera_grid, fused_grid]
    expected = expected_grid(SIZE, F, F, 319.5, 239.5, PITCH, 0.0, REACH)
    for _, cells, info in view.offered:
        assert_matches(cells, expected)
        assert info == {'resolution': RES, 'origin': (0.0, -8.0), 'frame_id': 'base_footprint', 'stamp': (2, 0)}
