"""The ground grid's ROS side: CameraInfo and poses in, nav_msgs/OccupancyGrid per camera and fused out.

The geometry is ``seg_node.ground``; this module feeds it. Poses come from ``ground_camera_poses``
when set, else from tf2 (base frame <- the image's optical frame, read per frame and the lookup
rebuilt only when it changed). Every problem a camera has (no CameraInfo yet, uncalibrated,
distorted, no transform) is said once per camera and reason, and costs only that camera's grid.
"""

from __future__ import annotations

import array
import math
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo

from seg_node.ground.geometry import (
    CameraPose,
    GeometryError,
    GridSpec,
    camera_matrix,
    pose_from_mount,
    pose_from_quaternion,
)
from seg_node.ground.grid import resolve_roles
from seg_node.ground.mapper import GroundConfig, GroundGridMapper, GroundSnapshot
from seg_node.msg import topics
from seg_node.ros.camera import qos
from seg_node.ros.parameters import GroundSettings
from seg_node.ros.transport import ros_header

try:  # nav_msgs is a ROS wheel on PyPI, but a workspace may lack it: then the grid is off
    from nav_msgs.msg import OccupancyGrid
except ImportError:  # pragma: no cover - depends on the install
    OccupancyGrid = None
try:  # tf2_ros has no PyPI wheel: without it, poses come from ground_camera_poses only
    import tf2_ros
except ImportError:
    tf2_ros = None

GROUND_GRID = 'ground_grid'
NAV_MSGS_MISSING = ('ground_grid is set but nav_msgs is not installed (pip install ros-nav-msgs, or '
                    'apt install ros-<distro>-nav-msgs), so no ground grid is published')


def grid_spec(settings: GroundSettings) -> GridSpec:
    """The cells the ground parameters describe."""
    return GridSpec.from_extent(settings.resolution, settings.x_min, settings.x_max, settings.y_min,
                                settings.y_max)


def occupancy_grid(cells: np.ndarray, grid: GridSpec, frame_id: str, header: Any) -> Any:
    """A nav_msgs/OccupancyGrid of ``cells`` (height, width) int8, stamped like ``header``."""
    msg = OccupancyGrid()
    msg.header = ros_header(header)
    msg.header.frame_id = frame_id
    msg.info.map_load_time = msg.header.stamp
    msg.info.resolution = float(grid.resolution)
    msg.info.width, msg.info.height = grid.width, grid.height
    msg.info.origin.position.x, msg.info.origin.position.y = float(grid.origin_x), float(grid.origin_y)
    msg.info.origin.orientation.w = 1.0
    msg.data = array.array('b', cells.tobytes())
    return msg


class GroundOutputs:
    """Grid publishers, CameraInfo subscriptions and pose sources of every camera, and the mapper."""

    def __init__(self, node: Node, settings: GroundSettings, classes: tuple[str, ...], image_topics: tuple[str, ...],
                 output_qos: QoSProfile) -> None:
        roles = resolve_roles(classes, settings.drivable, settings.obstacle, settings.ignore)  # GeometryError
        self.mapper = GroundGridMapper(GroundConfig(grid_spec(settings), roles, settings.max_range,
                                                    math.radians(settings.pitch_sigma_deg), settings.frame_id))
        self.settings = settings
        self.counts: dict[str, Counter] = {topic: Counter() for topic in image_topics}
        self._node = node
        self._logger = node.get_logger()
        self._topics = image_topics
        self._said: set[tuple[str, str]] = set()
        self._ranges: dict[str, float] = {}
        self._info: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.publishers = {topic: node.create_publisher(OccupancyGrid, topics.segmentation_topic(topic, GROUND_GRID),
                                                        output_qos) for topic in image_topics}
        self.fused_publisher = node.create_publisher(OccupancyGrid, f'~/{GROUND_GRID}', output_qos)
        self._info_subscriptions = [
            node.create_subscription(CameraInfo, topics.camera_info_topic(topic),
                                     lambda msg, t=topic: self._info.__setitem__(t, msg), qos('best_effort', 1))
            for topic in image_topics]
        self.view: Any = None  # the Foxglove live view (seg_node.viewer.live.LiveView), set by the node
        self.tf_buffer = None
        self._tf_listener = None
        if not settings.poses and tf2_ros is not None:
            self.tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self.tf_buffer, node)
        self._log_start(roles)

    def _log_start(self, roles: Any) -> None:
        s = self.settings
        source = ('ground_camera_poses' if s.poses else 'tf2' if self.tf_buffer is not None
                  else 'nothing (set ground_camera_poses; tf2_ros is not installed)')
        grid = self.mapper.config.grid
        self._logger.info(
            f'ground grid: {grid.width}x{grid.height} cells of {grid.resolution} m in {s.frame_id} '
            f'(x {s.x_min}..{s.x_max}, y {s.y_min}..{s.y_max}); poses of {", ".join(self._topics)} from {source}; '
            f'drivable {list(roles.drivable)}, obstacles {list(roles.obstacle)}, unknown {list(roles.unlisted)}')

    def apply(self, settings: GroundSettings) -> None:
        """Take runtime changes (poses, fusion age): the next frame of each camera uses them."""
        self.settings = settings

    def has_camera_info(self, topic: str) -> bool:
        """True once a CameraInfo of the camera arrived."""
        return topic in self._info

    def show_on(self, view: Any) -> None:
        """Offer every grid on the live view ``view`` too, under its ROS topic name (viewers can subscribe at once)."""
        self.view = view
        for publisher in (*self.publishers.values(), self.fused_publisher):
            view.declare_grid(publisher.topic_name)

    def _watched(self, publisher: Any) -> bool:
        """True when a ROS subscriber or a live-view viewer wants this grid."""
        return publisher.get_subscription_count() > 0 or (
            self.view is not None and self.view.declare_grid(publisher.topic_name).has_sinks())

    def wanted(self, topic: str) -> bool:
        """True when this camera's grid or the fused grid has a subscriber (else nothing is computed)."""
        wanted = self._watched(self.publishers[topic]) or self._watched(self.fused_publisher)
        if not wanted:
            self.counts[topic]['skipped'] += 1
        return wanted

    def _say_once(self, topic: str, reason: str) -> None:
        self.counts[topic]['waiting'] += 1
        if (topic, reason) not in self._said:
            self._said.add((topic, reason))
            self._logger.warning(f'{topic}: ground grid waits: {reason}')

    def _pose(self, topic: str, frame_id: str) -> CameraPose | None:
        poses = self.settings.poses
        if poses:
            return pose_from_mount(poses[self._topics.index(topic)])
        if self.tf_buffer is None:
            self._say_once(topic, 'no camera pose: set ground_camera_poses (tf2_ros is not installed)')
            return None
        try:
            t = self.tf_buffer.lookup_transform(self.settings.frame_id, frame_id, Time()).transform
        except Exception as err:  # noqa: BLE001 - tf2 raises several lookup errors
            self._say_once(topic, f'no transform {self.settings.frame_id} <- {frame_id!r} ({type(err).__name__})')
            return None
        return pose_from_quaternion((t.translation.x, t.translation.y, t.translation.z),
                                    (t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w))

    def publish(self, topic: str, class_mask: np.ndarray, image_size: tuple[int, int], header: Any) -> bool:
        """Compute and publish one frame's grid (and the fused one); False when the camera must wait."""
        info = self._info.get(topic)
        if info is None:
            self._say_once(topic, f'no CameraInfo yet on {topics.camera_info_topic(topic)}')
            return False
        pose = self._pose(topic, header.frame_id)
        if pose is None:
            return False
        k, distortion = camera_matrix(info, self.settings.rectified)
        size = (info.height, info.width) if info.height and info.width else image_size
        try:
            lookup = self.mapper.lookup(topic, pose, k, size, mask_size=class_mask.shape[:2],
                                        distortion=distortion)
        except GeometryError as err:
            self._say_once(topic, str(err))
            return False
        if self._ranges.get(topic) != lookup.max_range:
            self._ranges[topic] = lookup.max_range
            self._logger.info(f'{topic}: ground grid claims up to {lookup.max_range:.1f} m (camera '
                              f'{pose.height:.2f} m high, mask {class_mask.shape[1]}x{class_mask.shape[0]})')
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        grid = self.mapper.camera_grid(topic, class_mask, lookup, stamp_ns)
        self.counts[topic]['computed'] += 1
        spec, frame_id = self.mapper.config.grid, self.settings.frame_id
        if self.publishers[topic].get_subscription_count() > 0:
            self.publishers[topic].publish(occupancy_grid(grid.cells, spec, frame_id, header))
        self._offer_to_view(self.publishers[topic], grid.cells, stamp_ns)
        if self._watched(self.fused_publisher):
            fused = self.mapper.fused(self.settings.fusion_max_age_s)
            if fused is not None:
                cells, newest_ns, _ = fused
                fused_header = ros_header(header)
                fused_header.stamp.sec, fused_header.stamp.nanosec = divmod(newest_ns, 1_000_000_000)
                with self._lock:  # two workers never, but the fused publisher is shared by cameras
                    if self.fused_publisher.get_subscription_count() > 0:
                        self.fused_publisher.publish(occupancy_grid(cells, spec, frame_id, fused_header))
                    self._offer_to_view(self.fused_publisher, cells, newest_ns)
        return True

    def _offer_to_view(self, publisher: Any, cells: np.ndarray, stamp_ns: int) -> None:
        """Hand a grid to the live view (it sends only to subscribed viewers, on its own thread)."""
        if self.view is not None:
            spec = self.mapper.config.grid
            self.view.offer_grid(publisher.topic_name, cells, resolution=spec.resolution,
                                 origin=(spec.origin_x, spec.origin_y), frame_id=self.settings.frame_id,
                                 stamp=divmod(stamp_ns, 1_000_000_000))

    def snapshot(self) -> GroundSnapshot:
        """The latest per-camera grids and their fusion (for a live view)."""
        return self.mapper.snapshot(self.settings.fusion_max_age_s)

    def status(self, names: Mapping[str, str]) -> DiagnosticStatus:
        """A /diagnostics status: per camera the grids computed, skipped and waiting, and the range claimed."""
        status = DiagnosticStatus(name='seg_node: ground grid', hardware_id='seg_node')
        status.level, status.message = DiagnosticStatus.OK, 'ground grid'
        values = []
        for topic in self._topics:
            name = names.get(topic, topic)
            counts = self.counts[topic]
            values += [KeyValue(key=f'{name} {what}', value=str(counts[what]))
                       for what in ('computed', 'skipped', 'waiting')]
            reach = self._ranges.get(topic)
            values.append(KeyValue(key=f'{name} range_m', value='none yet' if reach is None else f'{reach:.2f}'))
        status.values = values
        return status

    def destroy(self) -> None:
        """Remove the publishers and subscriptions from the node."""
        for publisher in (*self.publishers.values(), self.fused_publisher):
            self._node.destroy_publisher(publisher)
        for subscription in self._info_subscriptions:
            self._node.destroy_subscription(subscription)
        self.publishers, self._info_subscriptions = {}, []
