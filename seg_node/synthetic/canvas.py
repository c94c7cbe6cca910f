"""The canvas: an RGB image and a label image painted together, with world-space drawing primitives.

Everything is drawn with OpenCV at 1/16 pixel precision into both images at once, so every RGB pixel
carries the label of the surface that painted it last (the painter's algorithm: far to near).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from seg_node.synthetic.camera import FAR, HORIZON, NEAR, PinholeCamera, clip_near
from seg_node.synthetic.classes import SKY

__all__ = ['Canvas', 'Sprite', 'disc', 'quad_ground', 'quad_x']

Sprite = tuple[np.ndarray, float, float]  # foot pixel (u, v), pixels per metre, depth


class Canvas:
    """RGB (float, before lighting) and label images painted together; starts as all sky."""

    def __init__(self, cam: PinholeCamera, width: int, height: int, haze: tuple[np.ndarray, float]) -> None:
        self.cam, self.w, self.h = cam, width, height
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.label = np.full((height, width), SKY, np.uint8)
        self.haze_colour, self.visibility = haze

    def _tint(self, colour: object, depth: float) -> tuple[float, float, float]:
        # Atmospheric perspective: far surfaces fade towards the horizon colour.
        a = 1.0 - math.exp(-max(depth, 0.0) / self.visibility)
        c = np.asarray(colour, np.float32) * (1 - a) + self.haze_colour * a
        return (float(c[0]), float(c[1]), float(c[2]))

    def fill_px(self, pts: np.ndarray, colour: object, label: int | None, depth: float) -> None:
        """Fill a polygon given in pixels; ``label`` None paints only the RGB image."""
        p = np.clip(np.round(pts * 16), -(1 << 26), 1 << 26).astype(np.int32)
        cv2.fillPoly(self.rgb, [p], self._tint(colour, depth), cv2.LINE_8, 4)
        if label is not None:
            cv2.fillPoly(self.label, [p], int(label), cv2.LINE_8, 4)

    def ellipse_px(self, centre: np.ndarray, axes: tuple[float, float], colour: object, label: int,
                   depth: float) -> None:
        """Fill an axis-aligned ellipse given in pixels (skipped when wholly off the image)."""
        c = (round(centre[0] * 16), round(centre[1] * 16))
        ax = (max(int(axes[0] * 16), 8), max(int(axes[1] * 16), 8))
        if not (-ax[0] < c[0] < self.w * 16 + ax[0] and -ax[1] < c[1] < self.h * 16 + ax[1]):
            return
        cv2.ellipse(self.rgb, c, ax, 0, 0, 360, self._tint(colour, depth), -1, cv2.LINE_8, 4)
        cv2.ellipse(self.label, c, ax, 0, 0, 360, int(label), -1, cv2.LINE_8, 4)

    def poly(self, world: np.ndarray, colour: object, label: int | None) -> None:
        """Fill a planar world polygon (N,3), clipped to the near plane."""
        pc = clip_near(self.cam.to_camera(world))
        if pc is not None and pc[:, 2].min() < FAR + HORIZON:
            self.fill_px(self.cam.to_pixels(pc), colour, label, float(pc[:, 2].mean()))

    def polys(self, world: np.ndarray, colours: np.ndarray, label: int | None) -> None:
        """Fill many world quads (K,4,3) with one colour each (K,3); vectorised projection."""
        pc = self.cam.to_camera(world)
        zmin = pc[..., 2].min(1)
        px = self.cam.to_pixels(np.maximum(pc, [[[-1e9, -1e9, NEAR]]]))
        for k in np.flatnonzero((zmin < FAR) & (pc[..., 2].max(1) >= NEAR)):
            if zmin[k] >= NEAR:
                self.fill_px(px[k], colours[k], label, float(pc[k, :, 2].mean()))
            else:
                self.poly(world[k], colours[k], label)

    def box(self, lo: tuple[float, float, float], hi: tuple[float, float, float], colour: object,
            label: int, shade: float = 0.8) -> list[tuple[np.ndarray, np.ndarray]]:
        """Draw the visible faces of an axis-aligned box; return the visible (face, normal) pairs."""
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        faces = (
            ([[x0, y0, z0], [x0, y1, z0], [x0, y1, z1], [x0, y0, z1]], (-1, 0, 0), shade),
            ([[x1, y0, z0], [x1, y1, z0], [x1, y1, z1], [x1, y0, z1]], (1, 0, 0), shade),
            ([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0]], (0, 0, -1), 1.0),
            ([[x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]], (0, 0, 1), 0.9),
            ([[x0, y1, z0], [x1, y1, z0], [x1, y1, z1], [x0, y1, z1]], (0, 1, 0), 1.15),
        )
        eye = np.array([self.cam.x, self.cam.height, self.cam.z])
        visible = []
        for quad, normal, k in faces:
            q, n = np.array(quad, np.float64), np.array(normal, np.float64)
            if np.dot(n, q.mean(0) - eye) < 0:
                self.poly(q, np.asarray(colour) * k, label)
                visible.append((q, n))
        return visible

    def sprite(self, x: float, z: float) -> Sprite | None:
        """Foot pixel, pixels per metre and depth of a camera-facing billboard at (x, z); None if not drawn."""
        depth = self.cam.depth(x, z)
        if not NEAR + 0.6 < depth < FAR:
            return None
        foot = self.cam.to_pixels(self.cam.to_camera(np.array([x, 0.0, z])))
        return foot, self.cam.f / depth, depth

    def rect(self, sp: Sprite, box: tuple[float, float, float, float], colour: object, label: int) -> None:
        """A rectangle (x0, y0, x1, y1) on a billboard, in metres from its foot (y up)."""
        (u, v), s, depth = sp
        x0, y0, x1, y1 = box
        pts = np.array([[u + s * x0, v - s * y0], [u + s * x1, v - s * y0],
                        [u + s * x1, v - s * y1], [u + s * x0, v - s * y1]])
        self.fill_px(pts, colour, label, depth)


def quad_x(x: float, z0: float, z1: float, y0: float, y1: float) -> np.ndarray:
    """A vertical quad in the plane X = ``x`` (a facade, seen from the street)."""
    return np.array([[x, y0, z0], [x, y1, z0], [x, y1, z1], [x, y0, z1]], np.float64)


def quad_ground(x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
    """A rectangle on the ground plane Y = 0."""
    return np.array([[x0, 0, z0], [x1, 0, z0], [x1, 0, z1], [x0, 0, z1]], np.float64)


def disc(centre: tuple[float, float, float], radius: float, axis: int, n: int = 14) -> np.ndarray:
    """A polygonal disc whose normal is world axis ``axis`` (0 = X, 2 = Z)."""
    a = np.linspace(0, 2 * math.pi, n, endpoint=False)
    pts = np.tile(np.asarray(centre, np.float64), (n, 1))
    pts[:, 1] += radius * np.sin(a)
    pts[:, 2 if axis == 0 else 0] += radius * np.cos(a)
    return pts
