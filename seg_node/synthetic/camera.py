"""The pinhole camera of the synthetic rig and the depth range it draws.

World axes: X right, Y up, Z along the street (the ego vehicle drives towards +Z), all in metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ['FAR', 'HORIZON', 'NEAR', 'PinholeCamera', 'clip_near']

NEAR, FAR = 0.4, 150.0  # metres in front of the camera that get drawn
HORIZON = 5000.0  # the ground beyond FAR, so that it meets the horizon within a pixel


@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole camera at (x, height, z) in world metres, turned by ``yaw`` about the vertical."""

    f: float  # focal length in pixels
    cx: float
    cy: float
    x: float
    height: float
    z: float
    yaw: float  # radians, positive turns right

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        """World points (..., 3) to camera coordinates (x right, y up, z depth)."""
        d = pts - np.array([self.x, self.height, self.z])
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.stack([c * d[..., 0] - s * d[..., 2], d[..., 1], s * d[..., 0] + c * d[..., 2]], -1)

    def to_pixels(self, pc: np.ndarray) -> np.ndarray:
        """Camera coordinates (..., 3) in front of the camera to pixel (u, v)."""
        return np.stack([self.cx + self.f * pc[..., 0] / pc[..., 2],
                         self.cy - self.f * pc[..., 1] / pc[..., 2]], -1)

    def depth(self, x: float, z: float) -> float:
        """Depth along the optical axis of the ground point (x, z)."""
        return math.sin(self.yaw) * (x - self.x) + math.cos(self.yaw) * (z - self.z)


def clip_near(pc: np.ndarray) -> np.ndarray | None:
    """Sutherland-Hodgman clip of one camera-space polygon against the near plane; None if nothing is left."""
    inside = pc[:, 2] >= NEAR
    if inside.all():
        return pc
    if not inside.any():
        return None
    out = []
    for i in range(len(pc)):
        a, b, ia, ib = pc[i], pc[(i + 1) % len(pc)], inside[i], inside[(i + 1) % len(pc)]
        if ia:
            out.append(a)
        if ia != ib:
            out.append(a + (NEAR - a[2]) / (b[2] - a[2]) * (b - a))
    return np.array(out) if len(out) >= 3 else None
