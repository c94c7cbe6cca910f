"""Synthetic driving scenes with exact per-pixel labels in Cityscapes train ids (255 = ignore).

numpy + OpenCV only (no torch), deterministic by seed. A ``Drive`` is an endless street
(buildings, trees, poles, signs, lights, traffic, pedestrians, cyclists) seen by a rig of
cameras on a moving ego vehicle; ``render_scene`` is one frame of a fresh drive. The street is a
``StreetLayout`` drawn from the seed; each frame projects it with a pinhole camera and paints it
far to near (``painter``), so labels are exact by construction.
"""

from __future__ import annotations

import math

import numpy as np

from seg_node.synthetic import painter
from seg_node.synthetic.camera import FAR, PinholeCamera
from seg_node.synthetic.canvas import Canvas
from seg_node.synthetic.classes import (
    BICYCLE,
    BUILDING,
    BUS,
    CAR,
    CLASSES_PRESENT,
    IGNORE,
    LIGHT,
    PERSON,
    POLE,
    RIDER,
    ROAD,
    SIDEWALK,
    SIGN,
    SKY,
    TRUCK,
    VEGETATION,
)
from seg_node.synthetic.layout import RIG_YAWS, StreetLayout, seeded_rng

__all__ = [
    'BICYCLE', 'BUILDING', 'BUS', 'CAR', 'CLASSES_PRESENT', 'IGNORE', 'LIGHT', 'PERSON', 'POLE', 'RIDER',
    'RIG_YAWS', 'ROAD', 'SIDEWALK', 'SIGN', 'SKY', 'TRUCK', 'VEGETATION', 'Drive', 'dataset_frame',
    'render_scene',
]


class Drive:
    """An endless synthetic street driven by a camera rig; ``frame(t, camera)`` renders it."""

    def __init__(self, seed: int, *, width: int = 640, height: int = 320, num_cameras: int = 1,
                 fps: float = 30.0) -> None:
        if not 1 <= num_cameras <= len(RIG_YAWS):
            msg = f'num_cameras must be 1..{len(RIG_YAWS)}, got {num_cameras}'
            raise ValueError(msg)
        self.seed, self.width, self.height, self.num_cameras, self.fps = seed, width, height, num_cameras, fps
        self.layout = StreetLayout.from_seed(seed)

    def camera(self, t: int, camera: int) -> PinholeCamera:
        """The pinhole camera ``camera`` of the rig at frame ``t``."""
        lay = self.layout
        yaw = math.radians(RIG_YAWS[camera] + lay.yaw_jitter[camera])
        side = math.sin(yaw)
        f = self.width / 2 / math.tan(lay.hfov / 2)
        ego_z = lay.ego_z0 + lay.ego_speed * t / self.fps
        # Each camera is mounted towards where it looks: out to the side, ahead or behind; all but
        # the front one 0.3 m lower.
        fwd = 1.5 if abs(RIG_YAWS[camera]) < 90 else -2.0
        return PinholeCamera(f=f, cx=self.width / 2, cy=self.height * lay.horizon, x=lay.ego_x + 0.8 * side,
                             height=lay.cam_height - (0.3 if camera else 0.0), z=ego_z + fwd, yaw=yaw)

    def mount(self, camera: int) -> tuple[float, float, float, float, float, float]:
        """Camera ``camera`` in the ego vehicle's base frame (x forward, y left, z up; REP-103).

        (x, y, z, roll, pitch, yaw) of its body, as ``ground_camera_poses`` takes it: the rig's
        cameras look level (pitch 0), and a world yaw to the right is a negative base yaw.
        """
        cam, lay = self.camera(0, camera), self.layout
        return (cam.z - lay.ego_z0, -(cam.x - lay.ego_x), cam.height, 0.0, 0.0, -cam.yaw)

    def intrinsics(self, camera: int) -> tuple[float, float, float]:
        """(f, cx, cy) in pixels of camera ``camera`` (the same for every frame)."""
        cam = self.camera(0, camera)
        return cam.f, cam.cx, cam.cy

    def frame(self, t: int, camera: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Render frame ``t`` of camera ``camera``: (RGB uint8 HxWx3, train ids uint8 HxW)."""
        if not 0 <= camera < self.num_cameras:
            msg = f'camera must be 0..{self.num_cameras - 1}, got {camera}'
            raise ValueError(msg)
        lay, cam, time = self.layout, self.camera(t, camera), t / self.fps
        canvas = Canvas(cam, self.width, self.height, painter.haze(lay))
        span = (cam.z - FAR, cam.z + FAR)
        painter.paint_sky(canvas, lay)
        painter.paint_ground(canvas, lay, span, time)
        for side in (-1, 1):
            painter.paint_buildings(canvas, lay, side, span)
        painter.paint_objects(canvas, lay, span, time)
        if lay.hood and camera == 0:
            painter.paint_hood(canvas, lay.hood_colour)
        rgb = painter.photometric(canvas.rgb, lay, camera, seeded_rng(self.seed, 1, t, camera))
        return rgb, canvas.label


def render_scene(seed: int, *, width: int = 640, height: int = 320,
                 camera: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One frame of a fresh drive: (RGB uint8 HxWx3, Cityscapes train ids uint8 HxW)."""
    return Drive(seed, width=width, height=height, num_cameras=len(RIG_YAWS)).frame(0, camera)


def dataset_frame(seed: int, index: int, *, width: int, height: int,
                  cameras: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of a dataset split: its own drive, a random time, camera index mod ``cameras``."""
    drive = Drive(seed * 1_000_003 + index, width=width, height=height, num_cameras=cameras)
    return drive.frame(int(seeded_rng(seed, 6, index).integers(0, 300)), index % cameras)
