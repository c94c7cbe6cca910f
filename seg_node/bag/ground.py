"""Ground grids in bags: the synthetic drive's truth, offline grids from masks, and their scores.

``seg_bag synth`` writes each camera's pose once on /tf_static (base_footprint <- its optical frame)
and a ground-truth grid per frame (``<ns>/segmentation/ground_grid_truth``, from the frame's exact
labels through the node's own geometry, the drive's pose and intrinsics being exact);
``seg_bag label --ground-grid`` writes ``<ns>/segmentation/ground_grid`` from the model's masks with
the bag's /tf_static and camera_info; ``seg_bag eval`` scores the one against the other.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from seg_node.bag.bagio import TYPESTORE, BagError, frame_key, read
from seg_node.ground.geometry import (
    BODY_FROM_OPTICAL,
    CameraPose,
    GeometryError,
    GridSpec,
    camera_matrix,
    pose_from_quaternion,
    rotation_rpy,
)
from seg_node.ground.grid import resolve_roles
from seg_node.ground.mapper import GroundConfig, GroundGridMapper
from seg_node.ground.score import GridScores
from seg_node.msg import topics

_T = TYPESTORE.types
OCCUPANCY_GRID = 'nav_msgs/msg/OccupancyGrid'
TF_MESSAGE = 'tf2_msgs/msg/TFMessage'
BASE_FRAME = 'base_footprint'
GRID_TOPIC, TRUTH_TOPIC = 'ground_grid', 'ground_grid_truth'
# The node's default extent in 0.2 m cells (a longer honest range than 0.1 m: sqrt(0.2 h f_y)); the
# drive's pose is exact, so no pitch uncertainty shortens it.
BAG_GRID = GridSpec.from_extent(0.2, 0.0, 20.0, -10.0, 10.0)


def mapper_for(classes: tuple[str, ...]) -> GroundGridMapper:
    """The mapper the bag tools use (node defaults, pitch uncertainty 0)."""
    return GroundGridMapper(GroundConfig(BAG_GRID, resolve_roles(classes), 20.0, 0.0, BASE_FRAME))


def _quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix (Shepperd's method: the largest diagonal term first)."""
    r = rotation
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0:
        s = 2 * math.sqrt(1 + trace)
        return (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4
    i = int(np.argmax(np.diag(r)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2 * math.sqrt(1 + r[i, i] - r[j, j] - r[k, k])
    q = [0.0, 0.0, 0.0]
    q[i] = s / 4
    q[j] = (r[j, i] + r[i, j]) / s
    q[k] = (r[k, i] + r[i, k]) / s
    return q[0], q[1], q[2], (r[k, j] - r[j, k]) / s


def tf_static(head: Any, mounts: dict[str, tuple[float, ...]]) -> Any:
    """A tf2_msgs/TFMessage: base_footprint <- each optical frame, from (x y z roll pitch yaw) mounts."""
    transforms = []
    for frame_id, (x, y, z, roll, pitch, yaw) in mounts.items():
        qx, qy, qz, qw = _quaternion(rotation_rpy(roll, pitch, yaw) @ BODY_FROM_OPTICAL)
        transforms.append(_T['geometry_msgs/msg/TransformStamped'](
            header=_T['std_msgs/msg/Header'](stamp=head.stamp, frame_id=BASE_FRAME), child_frame_id=frame_id,
            transform=_T['geometry_msgs/msg/Transform'](
                translation=_T['geometry_msgs/msg/Vector3'](x=x, y=y, z=z),
                rotation=_T['geometry_msgs/msg/Quaternion'](x=qx, y=qy, z=qz, w=qw))))
    return _T[TF_MESSAGE](transforms=transforms)


def occupancy_grid(head: Any, cells: np.ndarray, grid: GridSpec = BAG_GRID) -> Any:
    """A nav_msgs/OccupancyGrid (typestore) in base_footprint with the image's stamp."""
    pose = _T['geometry_msgs/msg/Pose'](
        position=_T['geometry_msgs/msg/Point'](x=float(grid.origin_x), y=float(grid.origin_y), z=0.0),
        orientation=_T['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0))
    info = _T['nav_msgs/msg/MapMetaData'](map_load_time=head.stamp, resolution=float(grid.resolution),
                                          width=grid.width, height=grid.height, origin=pose)
    header = _T['std_msgs/msg/Header'](stamp=head.stamp, frame_id=BASE_FRAME)
    return _T[OCCUPANCY_GRID](header=header, info=info, data=np.ascontiguousarray(cells, np.int8).reshape(-1))


def grid_cells(msg: Any) -> np.ndarray:
    """The (height, width) int8 cells of an OccupancyGrid."""
    return np.asarray(msg.data, np.int8).reshape(msg.info.height, msg.info.width)


def bag_poses(reader: Any) -> dict[str, CameraPose]:
    """Optical frame -> pose in base_footprint, from the bag's /tf_static."""
    poses = {}
    for conn, _, raw in read(reader, [c for c in reader.connections if c.msgtype == TF_MESSAGE]):
        for t in reader.deserialize(raw, conn.msgtype).transforms:
            if t.header.frame_id == BASE_FRAME:
                tr, q = t.transform.translation, t.transform.rotation
                poses[t.child_frame_id] = pose_from_quaternion((tr.x, tr.y, tr.z), (q.x, q.y, q.z, q.w))
    return poses


def bag_camera_infos(reader: Any, cameras: list[str]) -> dict[str, Any]:
    """Each camera topic's last CameraInfo in the bag."""
    by_topic = {topics.camera_info_topic(c): c for c in cameras}
    infos = {}
    conns = [c for c in reader.connections if c.topic in by_topic and c.msgtype == 'sensor_msgs/msg/CameraInfo']
    for conn, _, raw in read(reader, conns):
        infos[by_topic[conn.topic]] = reader.deserialize(raw, conn.msgtype)
    return infos


class BagGrids:
    """Grids of ``seg_bag label --ground-grid``: one mapper, each camera's pose and CameraInfo from the bag."""

    def __init__(self, reader: Any, cameras: list[str], classes: tuple[str, ...]) -> None:
        self.poses = bag_poses(reader)
        self.infos = bag_camera_infos(reader, cameras)
        missing = [c for c in cameras if c not in self.infos]
        if not self.poses or missing:
            what = f'camera_info for {", ".join(missing)}' if missing else 'poses on /tf_static'
            msg = f'--ground-grid needs the cameras\' {what} in the bag (seg_bag synth writes both)'
            raise BagError(msg)
        try:
            self.mapper = mapper_for(classes)
        except GeometryError as err:
            raise BagError(str(err)) from None

    def cells(self, camera: str, header: Any, mask: np.ndarray) -> np.ndarray:
        """One frame's grid from its model mask."""
        pose = self.poses.get(header.frame_id)
        if pose is None:
            msg = f'{camera}: no pose for frame {header.frame_id!r} on /tf_static'
            raise BagError(msg)
        info = self.infos[camera]
        k, distortion = camera_matrix(info)  # the node's rule: P[:3,:3] when set, else K
        try:
            lookup = self.mapper.lookup(camera, pose, k, (info.height, info.width), mask_size=mask.shape[:2],
                                        distortion=distortion)
        except GeometryError as err:
            msg = f'{camera}: {err}'
            raise BagError(msg) from None
        return self.mapper.camera_grid(camera, mask, lookup, 0).cells


def _grids(reader: Any, name: str) -> dict[tuple[str, tuple[int, str]], np.ndarray]:
    conns = [c for c in reader.connections if topics.output_name(c.topic) == name and c.msgtype == OCCUPANCY_GRID]
    found = {}
    for conn, _, raw in read(reader, conns):
        msg = reader.deserialize(raw, conn.msgtype)
        found[topics.namespace_of(conn.topic), frame_key(msg.header)] = grid_cells(msg)
    return found


def score_grids(reader: Any, truth_reader: Any = None) -> GridScores | None:
    """The grids of ``reader`` against the truth grids of the same frames; None when either has none.

    The truth is read from ``truth_reader`` (default: the same bag).
    """
    predicted = _grids(reader, GRID_TOPIC)
    truth = _grids(truth_reader if truth_reader is not None else reader, TRUTH_TOPIC)
    if not truth or not predicted:
        return None
    scores = GridScores()
    for key, cells in predicted.items():
        if key in truth:
            scores.add(cells, truth[key])
    return scores


def score_grids_of(bag: Any) -> GridScores | None:
    """``score_grids`` of a bag on disk."""
    from seg_node.bag.bagio import open_bag  # noqa: PLC0415 - bagio imports nothing of this module
    with open_bag(bag) as reader:
        return score_grids(reader)
