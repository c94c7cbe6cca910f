"""The one entry point for ground grids: per-camera lookups kept current, grids per frame, fusion.

The node calls ``GroundGridMapper.camera_grid`` on its worker and ``fused`` when it publishes;
a live view (Foxglove) can call ``snapshot`` for the latest per-camera and fused arrays.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from seg_node.ground.geometry import (
    CameraPose,
    GeometryError,
    GridSpec,
    GroundLookup,
    build_lookup,
    check_intrinsics,
    honest_range,
    intrinsics_for_mask,
)
from seg_node.ground.grid import ClassRoles, camera_grid, fuse_grids


@dataclass(frozen=True)
class GroundConfig:
    """What every camera's grid shares: the cells, the class roles and the range limits."""

    grid: GridSpec
    roles: ClassRoles
    max_range: float  # the parameter; each camera's honest range is at most this
    pitch_sigma_rad: float
    frame_id: str = 'base_footprint'


@dataclass(frozen=True)
class CameraGrid:
    """One camera's grid of one frame and what it was made from."""

    camera: str
    cells: np.ndarray  # (height, width) int8: 0 drivable, 100 obstacle contact, -1 unknown
    stamp_ns: int
    max_range: float  # the range this camera's grid claims (metres from the camera)


@dataclass(frozen=True)
class GroundSnapshot:
    """The latest grid of each camera and their fusion, with the grid's geometry."""

    grid: GridSpec
    frame_id: str
    cameras: dict[str, CameraGrid]
    fused: np.ndarray | None
    fused_stamp_ns: int


class GroundGridMapper:
    """Keeps each camera's cell -> pixel lookup and its latest grid; thread-safe for one writer."""

    def __init__(self, config: GroundConfig) -> None:
        self.config = config
        self.lookups_built = 0  # how many times a lookup was (re)computed: pose or intrinsics changed
        self._lookups: dict[str, tuple[tuple, GroundLookup]] = {}
        self._latest: dict[str, CameraGrid] = {}
        self._lock = threading.Lock()

    def lookup(self, camera: str, pose: CameraPose, k: np.ndarray, image_size: tuple[int, int], *,
               mask_size: tuple[int, int], distortion: np.ndarray | None = None) -> GroundLookup:
        """The camera's lookup for this pose and intrinsics, rebuilt only when either changed.

        ``k`` is the camera matrix of an ``image_size`` (H, W) image (CameraInfo P[:3,:3] or K);
        raises GeometryError (one sentence) for an uncalibrated or distorted camera.
        """
        k = np.asarray(k, float).reshape(3, 3)
        key = (pose.key(), tuple(k.ravel()), tuple(image_size), tuple(mask_size),
               None if distortion is None else tuple(np.asarray(distortion, float).ravel()))
        cached = self._lookups.get(camera)
        if cached is not None and cached[0] == key:
            return cached[1]
        problem = check_intrinsics(k, distortion)
        if problem:
            raise GeometryError(problem)
        if pose.height <= 0:
            msg = f'the camera is {pose.height:.2f} m above the ground plane; the grid needs it above 0'
            raise GeometryError(msg)
        k_mask = intrinsics_for_mask(k, image_size, mask_size)
        cfg = self.config
        reach = honest_range(cfg.grid.resolution, pose.height, k_mask[1, 1], cfg.pitch_sigma_rad, cfg.max_range)
        lookup = build_lookup(cfg.grid, pose, k_mask, mask_size, max_range=reach)
        self._lookups[camera] = (key, lookup)
        self.lookups_built += 1
        return lookup

    def camera_grid(self, camera: str, mask: np.ndarray, lookup: GroundLookup, stamp_ns: int) -> CameraGrid:
        """The grid of one camera's frame (one gather), remembered as its latest."""
        result = CameraGrid(camera, camera_grid(mask, lookup, self.config.roles), stamp_ns, lookup.max_range)
        with self._lock:
            self._latest[camera] = result
        return result

    def fused(self, max_age_s: float) -> tuple[np.ndarray, int, list[str]] | None:
        """The fusion of the latest grids within ``max_age_s`` of the newest: (cells, stamp_ns, cameras)."""
        with self._lock:
            latest = list(self._latest.values())
        if not latest:
            return None
        newest = max(g.stamp_ns for g in latest)
        recent = [g for g in latest if newest - g.stamp_ns <= max_age_s * 1e9]
        return fuse_grids([g.cells for g in recent]), newest, sorted(g.camera for g in recent)

    def forget(self, camera: str) -> None:
        """Drop a camera's lookup and latest grid (its pose or intrinsics became unusable)."""
        self._lookups.pop(camera, None)
        with self._lock:
            self._latest.pop(camera, None)

    def snapshot(self, max_age_s: float = math.inf) -> GroundSnapshot:
        """The latest per-camera grids and their fusion (for a live view)."""
        with self._lock:
            cameras = dict(self._latest)
        fused = self.fused(max_age_s)
        return GroundSnapshot(self.config.grid, self.config.frame_id, cameras,
                              fused[0] if fused else None, fused[1] if fused else 0)
