"""Flat-ground geometry: grid cells on z = 0 of the base frame -> pixels of a mask, and the honest range.

Frames (REP-103): the base frame has x forward, y left, z up; a camera's optical frame has z
forward, x right, y down. Pixel centres are at integer coordinates (the CameraInfo convention),
so a cell's pixel is the one nearest its projection: ``floor(u + 0.5)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Optical axes expressed in the camera body frame (x forward, y left, z up): optical x (right)
# is body -y, optical y (down) is body -z, optical z (forward) is body x.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
# A point closer than this to the camera's image plane (metres of depth) is not projected.
MIN_DEPTH_M = 0.05


class GeometryError(ValueError):
    """A camera model or pose the grid cannot use; the message is one sentence."""


@dataclass(frozen=True)
class GridSpec:
    """The grid's cells: ``width`` along x from ``origin_x``, ``height`` along y from ``origin_y``.

    Cell (row i, column j) has its centre at x = origin_x + (j + 0.5) * resolution,
    y = origin_y + (i + 0.5) * resolution: nav_msgs/OccupancyGrid's row-major layout.
    """

    resolution: float
    origin_x: float
    origin_y: float
    width: int
    height: int

    @classmethod
    def from_extent(cls, resolution: float, x_min: float, x_max: float, y_min: float, y_max: float) -> GridSpec:
        """The grid covering [x_min, x_max] x [y_min, y_max] with cells of ``resolution`` metres."""
        if resolution <= 0 or x_max <= x_min or y_max <= y_min:
            msg = (f'the ground grid needs resolution > 0, x_max > x_min and y_max > y_min; got '
                   f'{resolution}, x {x_min}..{x_max}, y {y_min}..{y_max}')
            raise GeometryError(msg)
        width = max(1, round((x_max - x_min) / resolution))
        height = max(1, round((y_max - y_min) / resolution))
        return cls(resolution, x_min, y_min, width, height)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """The x and y of every cell centre, each (height, width)."""
        xs = self.origin_x + (np.arange(self.width) + 0.5) * self.resolution
        ys = self.origin_y + (np.arange(self.height) + 0.5) * self.resolution
        return np.meshgrid(xs, ys)


@dataclass(frozen=True)
class CameraPose:
    """The optical frame in the base frame: p_base = rotation @ p_optical + translation."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    @property
    def height(self) -> float:
        """Height of the optical centre above the ground plane z = 0."""
        return float(self.translation[2])

    def key(self) -> tuple:
        """Hashable value for telling poses apart."""
        return (*np.round(self.rotation, 12).ravel().tolist(), *np.round(self.translation, 12).tolist())


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) Ry(pitch) Rx(roll) (fixed-axis roll, then pitch, then yaw; REP-103)."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def pose_from_mount(mount: Sequence[float]) -> CameraPose:
    """The optical frame of a camera mounted at ``(x, y, z, roll, pitch, yaw)`` (metres, radians).

    The angles turn the camera's body frame (x forward, y left, z up); all zero looks straight
    ahead along base x. Positive pitch looks down, positive yaw looks left.
    """
    x, y, z, roll, pitch, yaw = (float(v) for v in mount)
    return CameraPose(rotation_rpy(roll, pitch, yaw) @ BODY_FROM_OPTICAL, np.array([x, y, z]))


def pose_from_quaternion(translation: tuple[float, float, float],
                         quaternion: tuple[float, float, float, float]) -> CameraPose:
    """A pose from a translation and an (x, y, z, w) quaternion, as in geometry_msgs/Transform."""
    qx, qy, qz, qw = quaternion
    norm = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    if not norm > 0:
        msg = 'the camera transform has a zero quaternion'
        raise GeometryError(msg)
    qx, qy, qz, qw = qx / norm, qy / norm, qz / norm, qw / norm
    rotation = np.array([
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
        [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
        [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)]])
    return CameraPose(rotation, np.asarray(translation, float))


def camera_matrix(info: Any, rectified: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(3x3 camera matrix, distortion to check) of a CameraInfo (rclpy's or rosbags'): P[:3,:3] when set, else K."""
    p = np.asarray(info.p, float).reshape(3, 4)[:, :3]
    k = p if p[0, 0] > 0 else np.asarray(info.k, float).reshape(3, 3)
    return k, None if rectified else np.asarray(info.d, float)


def intrinsics_for_mask(k: np.ndarray, image_size: tuple[int, int], mask_size: tuple[int, int]) -> np.ndarray:
    """The 3x3 camera matrix of an (H, W) image, rescaled to a mask of ``mask_size``.

    Pixel centres stay at integer coordinates: u_mask = (u + 0.5) * s - 0.5. With this rule a
    mask upsampled by an integer factor with nearest neighbour gives the very same grid.
    """
    k = np.asarray(k, float).reshape(3, 3)
    sy, sx = mask_size[0] / image_size[0], mask_size[1] / image_size[1]
    scale = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return scale @ k


def check_intrinsics(k: np.ndarray, distortion: np.ndarray | None = None) -> str | None:
    """Why ``k`` (and distortion ``d``) cannot project the grid, or None when they can."""
    k = np.asarray(k, float).reshape(3, 3)
    if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0 or k[2, 2] != 1.0:
        return ('the camera is uncalibrated (CameraInfo K has no positive focal lengths), so the '
                'ground grid cannot be projected')
    if distortion is not None and np.any(np.asarray(distortion, float) != 0):
        return ('the CameraInfo has non-zero distortion D, and the ground grid projects through '
                'the pinhole model only: feed it a rectified image (image_rect) and its CameraInfo')
    return None


def honest_range(resolution: float, height: float, focal_y: float, pitch_sigma_rad: float,
                 max_range: float) -> float:
    """The farthest ground distance at which the flat-ground grid is still good to one cell.

    The least of ``max_range``; sqrt(resolution * h * f_y), beyond which one mask row covers more
    than a cell (a row spans about d^2 / (h f_y) metres); and sqrt(resolution * h / sigma), beyond
    which a pitch error of ``pitch_sigma_rad`` moves a ground point (by about d^2 sigma / h) more
    than a cell.
    """
    rows = math.sqrt(resolution * height * focal_y)
    pitch = math.sqrt(resolution * height / pitch_sigma_rad) if pitch_sigma_rad > 0 else math.inf
    return min(max_range, rows, pitch)


@dataclass(frozen=True)
class GroundLookup:
    """Where each grid cell that can be seen lies in one camera's mask.

    ``seen`` holds the flat indices (row * width + column) of the cells that project into the mask
    within range; the other arrays have one entry per seen cell: ``pixel`` the flat index of the
    nearest mask pixel, ``row``/``column`` its coordinates, ``top``/``bottom`` the image rows v
    spanned by the cell's four corners (so that a contact row can be found in its footprint).
    """

    grid: GridSpec
    mask_size: tuple[int, int]
    seen: np.ndarray  # (n,) int64 flat cell indices
    pixel: np.ndarray  # (n,) int64 flat mask pixel indices
    row: np.ndarray
    column: np.ndarray
    top: np.ndarray  # float, v of the cell's farthest corner
    bottom: np.ndarray  # float, v of its nearest corner (inf: a corner is behind the camera)
    max_range: float
    first_row: int  # no seen cell reads or spans a mask row above this one


def _project(points: np.ndarray, pose: CameraPose, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, depth) of base-frame points (..., 3)."""
    optical = (points - pose.translation) @ pose.rotation  # R^T (p - t), row vectors
    depth = optical[..., 2]
    safe = np.where(depth > MIN_DEPTH_M, depth, 1.0)
    u = (k[0, 0] * optical[..., 0] + k[0, 1] * optical[..., 1]) / safe + k[0, 2]
    v = k[1, 1] * optical[..., 1] / safe + k[1, 2]
    return u, v, depth


def build_lookup(grid: GridSpec, pose: CameraPose, k_mask: np.ndarray, mask_size: tuple[int, int], *,
                 max_range: float) -> GroundLookup:
    """The cell -> pixel lookup of one camera (recomputed only when its pose or intrinsics change).

    A cell is unseen when its centre is behind the camera, outside the mask, or farther than
    ``max_range`` (horizontal distance from the camera) or the ground is not below the camera.
    """
    h, w = mask_size
    xs, ys = grid.centres()
    centres = np.stack([xs, ys, np.zeros_like(xs)], -1).reshape(-1, 3)
    u, v, depth = _project(centres, pose, k_mask)
    column, row = np.floor(u + 0.5), np.floor(v + 0.5)
    distance = np.hypot(centres[:, 0] - pose.translation[0], centres[:, 1] - pose.translation[1])
    seen = ((depth > MIN_DEPTH_M) & (column >= 0) & (column < w) & (row >= 0) & (row < h)
            & (distance <= max_range) & (pose.height > 0))
    half = 0.5 * grid.resolution
    corner_v = []
    for dx, dy in ((-half, -half), (-half, half), (half, -half), (half, half)):
        _, cv, cdepth = _project(centres + np.array([dx, dy, 0.0]), pose, k_mask)
        # A corner behind the camera: the footprint reaches the image bottom (and beyond).
        corner_v.append(np.where(cdepth > MIN_DEPTH_M, cv, np.inf))
    corner_v = np.stack(corner_v)
    cells = np.flatnonzero(seen)
    column, row = column[cells].astype(np.int64), row[cells].astype(np.int64)
    top, bottom = corner_v.min(0)[cells], corner_v.max(0)[cells]
    first_row = int(np.clip(np.floor(min(top.min(), row.min())), 0, h - 1)) if cells.size else 0
    return GroundLookup(grid, (h, w), cells, row * w + column, row, column, top, bottom, max_range, first_row)
