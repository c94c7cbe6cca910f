"""Synthetic driving scenes with exact per-pixel labels in Cityscapes train ids (255 = ignore).

numpy + OpenCV only (no torch), deterministic by seed. A ``Drive`` is an endless street
(buildings, trees, poles, signs, lights, traffic, pedestrians, cyclists) seen by a rig of
cameras on a moving ego vehicle; ``render_scene`` is one frame of a fresh drive. Geometry is
projected with a pinhole camera and painted far to near, so labels are exact by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seg_node.model.labels import TRAIN_ID_TO_CAMVID, TRAIN_ID_TO_CITYSCAPES_ID, lookup_table

__all__ = [
    'CLASSES_PRESENT', 'Drive', 'dataset_frame', 'render_scene', 'write_camvid_dataset',
    'write_cityscapes_dataset', 'write_sagemaker_dataset',
]

ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN, VEGETATION, SKY = 0, 1, 2, 5, 6, 7, 8, 10
PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE, IGNORE = 11, 12, 13, 14, 15, 18, 255
# Train ids the generator draws (the rest of the 19 Cityscapes classes never appear).
CLASSES_PRESENT = (ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN, VEGETATION, SKY, PERSON, RIDER,
                   CAR, TRUCK, BUS, BICYCLE)

NEAR, FAR = 0.4, 150.0  # metres in front of the camera that get drawn
HORIZON = 5000.0  # the ground beyond FAR, so that it meets the horizon within a pixel
CELL = 30.0  # metres of street generated from one random stream
# Rig yaws in degrees: front, front-left, front-right, rear, rear-left, rear-right, ...
RIG_YAWS = (0.0, -55.0, 55.0, 180.0, -125.0, 125.0, -90.0, 90.0)
_BIG = 1 << 40  # keeps cell indices non-negative for SeedSequence
_Spec = tuple[int, float, float, float]  # vehicle class, length, width, height


@dataclass(frozen=True)
class _Camera:
    """Pinhole camera at (x, height, z) in world metres (X right, Y up, Z along the street)."""

    f: float
    cx: float
    cy: float
    x: float
    height: float
    z: float
    yaw: float  # radians, positive turns right

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        d = pts - np.array([self.x, self.height, self.z])
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.stack([c * d[..., 0] - s * d[..., 2], d[..., 1], s * d[..., 0] + c * d[..., 2]], -1)

    def to_pixels(self, pc: np.ndarray) -> np.ndarray:
        return np.stack([self.cx + self.f * pc[..., 0] / pc[..., 2],
                         self.cy - self.f * pc[..., 1] / pc[..., 2]], -1)

    def depth(self, x: float, z: float) -> float:
        return math.sin(self.yaw) * (x - self.x) + math.cos(self.yaw) * (z - self.z)


def _clip_near(pc: np.ndarray) -> np.ndarray | None:
    """Sutherland-Hodgman clip of one camera-space polygon against the near plane."""
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


class _Canvas:
    """RGB (float, before lighting) and label images painted together."""

    def __init__(self, cam: _Camera, width: int, height: int, haze: tuple[np.ndarray, float]) -> None:
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
        c = (round(centre[0] * 16), round(centre[1] * 16))
        ax = (max(int(axes[0] * 16), 8), max(int(axes[1] * 16), 8))
        if not (-ax[0] < c[0] < self.w * 16 + ax[0] and -ax[1] < c[1] < self.h * 16 + ax[1]):
            return
        cv2.ellipse(self.rgb, c, ax, 0, 0, 360, self._tint(colour, depth), -1, cv2.LINE_8, 4)
        cv2.ellipse(self.label, c, ax, 0, 0, 360, int(label), -1, cv2.LINE_8, 4)

    def poly(self, world: np.ndarray, colour: object, label: int | None) -> None:
        """Fill a planar world polygon (N,3), clipped to the near plane."""
        pc = _clip_near(self.cam.to_camera(world))
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

    def sprite(self, x: float, z: float) -> tuple[np.ndarray, float, float] | None:
        """Foot pixel, pixels per metre and depth of a camera-facing billboard at (x, z)."""
        depth = self.cam.depth(x, z)
        if not NEAR + 0.6 < depth < FAR:
            return None
        foot = self.cam.to_pixels(self.cam.to_camera(np.array([x, 0.0, z])))
        return foot, self.cam.f / depth, depth

    def rect(self, sp: tuple[np.ndarray, float, float], box: tuple[float, float, float, float],
             colour: object, label: int) -> None:
        """A rectangle (x0, y0, x1, y1) on a billboard, in metres from its foot (y up)."""
        (u, v), s, depth = sp
        x0, y0, x1, y1 = box
        pts = np.array([[u + s * x0, v - s * y0], [u + s * x1, v - s * y0],
                        [u + s * x1, v - s * y1], [u + s * x0, v - s * y1]])
        self.fill_px(pts, colour, label, depth)


def _quad_x(x: float, z0: float, z1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x, y0, z0], [x, y1, z0], [x, y1, z1], [x, y0, z1]], np.float64)


def _quad_ground(x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
    return np.array([[x0, 0, z0], [x1, 0, z0], [x1, 0, z1], [x0, 0, z1]], np.float64)


def _disc(centre: tuple[float, float, float], radius: float, axis: int, n: int = 14) -> np.ndarray:
    """A polygonal disc whose normal is world axis ``axis`` (0 = X, 2 = Z)."""
    a = np.linspace(0, 2 * math.pi, n, endpoint=False)
    pts = np.tile(np.asarray(centre, np.float64), (n, 1))
    pts[:, 1] += radius * np.sin(a)
    pts[:, 2 if axis == 0 else 0] += radius * np.cos(a)
    return pts


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) + _BIG for k in key])


def _colour(rng: np.random.Generator, palette: list[tuple[int, int, int]], jitter: float = 18) -> np.ndarray:
    return np.clip(np.asarray(palette[rng.integers(len(palette))], np.float64)
                   + rng.normal(0, jitter, 3), 0, 255)


CAR_COLOURS = [(200, 200, 205), (30, 30, 35), (120, 120, 125), (160, 20, 25), (25, 50, 130),
               (235, 235, 230), (60, 90, 60), (180, 140, 40), (90, 60, 40), (70, 110, 160)]
BUS_COLOURS = [(215, 180, 20), (200, 40, 30), (30, 90, 170), (235, 235, 235), (40, 140, 80)]
FACADE_COLOURS = [(185, 160, 130), (150, 90, 70), (200, 195, 185), (120, 115, 110),
                  (170, 140, 110), (225, 210, 170), (95, 85, 80), (160, 170, 180)]
CLOTHES = [(30, 30, 40), (200, 30, 40), (40, 60, 140), (220, 220, 220), (90, 70, 50),
           (40, 110, 60), (230, 180, 40), (120, 120, 130), (150, 60, 140)]
SKIN = [(225, 185, 150), (190, 140, 100), (120, 80, 55), (240, 205, 175)]
FOLIAGE = [(60, 100, 35), (40, 80, 30), (90, 120, 45), (50, 90, 55), (110, 130, 60)]


class Drive:
    """An endless synthetic street driven by a camera rig; ``frame(t, camera)`` renders it."""

    def __init__(self, seed: int, *, width: int = 640, height: int = 320, num_cameras: int = 1,
                 fps: float = 30.0) -> None:
        if not 1 <= num_cameras <= len(RIG_YAWS):
            msg = f'num_cameras must be 1..{len(RIG_YAWS)}, got {num_cameras}'
            raise ValueError(msg)
        self.seed, self.width, self.height, self.num_cameras, self.fps = seed, width, height, num_cameras, fps
        r = _rng(seed, 0)
        self.lanes = int(r.integers(2, 5))
        self.lane_w = r.uniform(3.0, 3.7)
        self.parking = (r.random() < 0.5, r.random() < 0.6)  # left, right
        self.road_l = -(self.lanes / 2) * self.lane_w - 2.2 * self.parking[0]
        self.road_r = (self.lanes / 2) * self.lane_w + 2.2 * self.parking[1]
        self.walk_w = r.uniform(2.0, 5.0)
        self.oncoming = self.lanes // 2  # lanes left of the centre drive towards us
        self.ego_lane = int(r.integers(self.oncoming, self.lanes))
        self.ego_x = self._lane_x(self.ego_lane) + r.uniform(-0.4, 0.4)
        self.ego_z0 = r.uniform(0, 5000.0)
        self.ego_speed = r.uniform(6.0, 14.0)
        self.lane_speed = [-r.uniform(7, 14) if i < self.oncoming else
                           (self.ego_speed if i == self.ego_lane else r.uniform(5, 15))
                           for i in range(self.lanes)]
        self.walk_speed = (r.choice([-1.3, 1.1]), r.choice([-1.2, 1.4]))
        self.hfov = math.radians(r.uniform(55, 85))
        self.cam_height = r.uniform(1.25, 1.7)
        self.horizon = r.uniform(0.40, 0.52)
        self.yaw_jitter = r.uniform(-5, 5, len(RIG_YAWS))
        self.hood = r.random() < 0.4
        self.hood_colour = _colour(r, CAR_COLOURS, 10)
        # Lighting: exposure, white balance, sun side, haze and sky type.
        self.exposure = r.uniform(0.65, 1.25)
        self.tint = r.uniform(0.9, 1.1, 3)
        self.sun = r.choice([-1.0, 1.0])
        self.overcast = r.random() < 0.35
        self.visibility = r.uniform(120, 600)
        self.camera_gain = r.uniform(0.9, 1.1, len(RIG_YAWS))
        self.road_colour = np.full(3, r.uniform(70, 125)) + r.normal(0, 4, 3)
        self.walk_colour = _colour(r, [(170, 165, 160), (185, 150, 140), (140, 140, 135)], 10)

    def _lane_x(self, lane: int) -> float:
        return self.road_l + 2.2 * self.parking[0] + (lane + 0.5) * self.lane_w

    def camera(self, t: int, camera: int) -> _Camera:
        """The pinhole camera ``camera`` of the rig at frame ``t``."""
        yaw = math.radians(RIG_YAWS[camera] + self.yaw_jitter[camera])
        side = math.sin(yaw)
        f = self.width / 2 / math.tan(self.hfov / 2)
        ego_z = self.ego_z0 + self.ego_speed * t / self.fps
        fwd = 1.5 if abs(RIG_YAWS[camera]) < 90 else -2.0
        return _Camera(f=f, cx=self.width / 2, cy=self.height * self.horizon, x=self.ego_x + 0.8 * side,
                       height=self.cam_height - (0.3 if camera else 0.0), z=ego_z + fwd, yaw=yaw)

    def frame(self, t: int, camera: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Render frame ``t`` of camera ``camera``: (RGB uint8 HxWx3, train ids uint8 HxW)."""
        if not 0 <= camera < self.num_cameras:
            msg = f'camera must be 0..{self.num_cameras - 1}, got {camera}'
            raise ValueError(msg)
        cam = self.camera(t, camera)
        sky_low = np.array([200, 205, 210.0]) if self.overcast else np.array([205, 220, 235.0])
        canvas = _Canvas(cam, self.width, self.height, (sky_low, self.visibility))
        self._sky(canvas, sky_low, camera)
        time = t / self.fps
        z_lo, z_hi = cam.z - FAR, cam.z + FAR
        self._ground(canvas, z_lo, z_hi, time)
        for side in (-1, 1):
            self._buildings(canvas, side, z_lo, z_hi)
        objects = self._objects(canvas, z_lo, z_hi, time)
        for _, draw in sorted(objects, key=lambda o: -o[0]):
            draw()
        if self.hood and camera == 0:
            self._draw_hood(canvas)
        rgb = self._photometric(canvas.rgb, _rng(self.seed, 1, t, camera), camera)
        return rgb, canvas.label

    # -- scene layers ---------------------------------------------------------------------------

    def _sky(self, canvas: _Canvas, sky_low: np.ndarray, camera: int) -> None:
        top = np.array([185, 185, 190.0]) if self.overcast else np.array([70, 120, 200.0])
        rows = np.clip(np.arange(self.height, dtype=np.float32) / max(canvas.cam.cy, 1), 0, 1)[:, None]
        canvas.rgb[:] = (top * (1 - rows) + sky_low * rows)[:, None, :]
        r = _rng(self.seed, 2)
        for _ in range(int(r.integers(0, 6))):
            # Clouds sit at infinity: their pixel position depends on azimuth only.
            az, el = r.uniform(-math.pi, math.pi), r.uniform(0.05, 0.35)
            rel = (az - canvas.cam.yaw + math.pi) % (2 * math.pi) - math.pi
            if abs(rel) < 1.3:
                u = canvas.cam.cx + canvas.cam.f * math.tan(rel)
                v = canvas.cam.cy - canvas.cam.f * math.tan(el)
                s = canvas.cam.f * r.uniform(0.05, 0.15)
                cv2.ellipse(canvas.rgb, (int(u), int(v)), (int(s * 2.5) + 1, int(s) + 1), 0, 0, 360,
                            (235, 238, 240), -1)

    def _ground(self, canvas: _Canvas, z_lo: float, z_hi: float, time: float) -> None:
        far_l, far_r = self.road_l - self.walk_w - 12, self.road_r + self.walk_w + 12
        canvas.poly(_quad_ground(far_l, self.road_l, z_lo, z_hi), self.walk_colour, SIDEWALK)
        canvas.poly(_quad_ground(self.road_r, far_r, z_lo, z_hi), self.walk_colour, SIDEWALK)
        canvas.poly(_quad_ground(self.road_l, self.road_r, z_lo, z_hi), self.road_colour, ROAD)
        # The street goes on to the horizon beyond the drawn range (hazed as one far strip).
        for z0, z1 in ((z_hi, z_hi + HORIZON), (z_lo - HORIZON, z_lo)):
            canvas.poly(_quad_ground(far_l, self.road_l, z0, z1), self.walk_colour, SIDEWALK)
            canvas.poly(_quad_ground(self.road_r, far_r, z0, z1), self.walk_colour, SIDEWALK)
            canvas.poly(_quad_ground(self.road_l, self.road_r, z0, z1), self.road_colour, ROAD)
        kerb = self.walk_colour * 1.15
        canvas.poly(_quad_ground(self.road_l - 0.25, self.road_l, z_lo, z_hi), kerb, SIDEWALK)
        canvas.poly(_quad_ground(self.road_r, self.road_r + 0.25, z_lo, z_hi), kerb, SIDEWALK)
        # Lane markings (road class): dashed between lanes, solid in the middle and at the edges.
        marks, paint = [], np.array([225, 225, 215.0])
        z0 = math.floor(z_lo / 9.0) * 9.0
        dash_z = np.arange(z0, z_hi, 9.0)
        edges = [self._lane_x(0) - self.lane_w / 2, self._lane_x(self.lanes - 1) + self.lane_w / 2]
        for x in edges:
            marks.append(_quad_ground(x - 0.08, x + 0.08, z_lo, z_hi)[None])
        for i in range(1, self.lanes):
            x = self._lane_x(i) - self.lane_w / 2
            if i == self.oncoming:
                marks.append(_quad_ground(x - 0.1, x + 0.1, z_lo, z_hi)[None])
            else:
                marks.append(np.stack([_quad_ground(x - 0.08, x + 0.08, z, z + 3.0) for z in dash_z]))
        for cell in range(int(z_lo // CELL), int(z_hi // CELL) + 1):
            r = _rng(self.seed, 3, cell)
            if r.random() < 0.25:  # a zebra crossing
                zc = (cell + r.uniform(0.2, 0.8)) * CELL
                xs = np.arange(self.road_l + 0.3, self.road_r - 0.5, 1.0)
                marks.append(np.stack([_quad_ground(x, x + 0.5, zc, zc + 3.5) for x in xs]))
            if r.random() < 0.5:  # an asphalt patch
                x, z = r.uniform(self.road_l, self.road_r - 2), (cell + r.random()) * CELL
                canvas.poly(_quad_ground(x, x + r.uniform(1, 3), z, z + r.uniform(1, 5)),
                            self.road_colour * r.uniform(0.75, 1.2), ROAD)
        quads = np.concatenate(marks)
        canvas.polys(quads, np.tile(paint, (len(quads), 1)), ROAD)
        # Soft shadows under vehicles darken the road without changing its label.
        for x0, x1, z0_, z1_ in self._vehicle_footprints(z_lo, z_hi, time):
            canvas.poly(_quad_ground(x0 - 0.2, x1 + 0.2, z0_ - 0.3, z1_ + 0.3), self.road_colour * 0.45, None)

    def _buildings(self, canvas: _Canvas, side: int, z_lo: float, z_hi: float) -> None:
        kerb = self.road_r if side > 0 else self.road_l
        blocks = []
        for cell in range(int(z_lo // CELL), int(z_hi // CELL) + 1):
            r = _rng(self.seed, 4, cell, side)
            z = cell * CELL
            while z < (cell + 1) * CELL - 0.5:
                length = min(r.uniform(6, 22), (cell + 1) * CELL - z)
                setback = self.walk_w + r.uniform(0, 3)
                blocks.append((z, z + length, kerb + side * setback, r))
                z += length
        eye_z = canvas.cam.z
        # Farthest first; both end faces of a block are covered by its neighbours or drawn.
        blocks.sort(key=lambda b: -abs((b[0] + b[1]) / 2 - eye_z))
        for z0, z1, x, r in blocks:
            x_back = x + side * 12.0
            lo, hi = (min(x, x_back), 0.0, z0), (max(x, x_back), 0.0, z1)
            if r.random() < 0.2:
                self._hedge(canvas, x, z0, z1, r)
                continue
            height = r.uniform(5, 25)
            colour = _colour(r, FACADE_COLOURS) * (1.1 if side == self.sun else 0.85)
            canvas.box(lo, (hi[0], height, hi[2]), colour, BUILDING, shade=1.0)
            self._windows(canvas, x - side * 0.02, (z0, z1, height), r)

    def _windows(self, canvas: _Canvas, x: float, span: tuple[float, float, float],
                 r: np.random.Generator) -> None:
        z0, z1, height = span
        pitch, floor_h = r.uniform(2.2, 3.6), r.uniform(2.8, 3.4)
        w, h = pitch * r.uniform(0.35, 0.65), floor_h * r.uniform(0.35, 0.6)
        zs = np.arange(z0 + 0.8, z1 - w - 0.3, pitch)
        ys = np.arange(floor_h * 1.2 if r.random() < 0.5 else 0.9, height - h - 0.5, floor_h)
        if not len(zs) or not len(ys):
            return
        zz, yy = np.meshgrid(zs, ys)
        zz, yy = zz.ravel(), yy.ravel()
        quads = np.stack([np.stack([np.full_like(zz, x), yy, zz], -1),
                          np.stack([np.full_like(zz, x), yy + h, zz], -1),
                          np.stack([np.full_like(zz, x), yy + h, zz + w], -1),
                          np.stack([np.full_like(zz, x), yy, zz + w], -1)], 1)
        glass = _colour(r, [(60, 70, 85), (40, 45, 55), (110, 125, 140), (150, 140, 110)], 8)
        colours = glass * r.uniform(0.8, 1.2, (len(quads), 1))
        canvas.polys(quads, colours, BUILDING)

    def _hedge(self, canvas: _Canvas, x: float, z0: float, z1: float, r: np.random.Generator) -> None:
        zs = np.linspace(z0, z1, max(int((z1 - z0) / 1.5), 2))
        tops = r.uniform(1.5, 6.0) + np.cumsum(r.normal(0, 0.4, len(zs)))
        top = np.stack([np.full_like(zs, x), np.maximum(tops, 0.8), zs], -1)
        base = np.array([[x, 0, z1], [x, 0, z0]], np.float64)
        canvas.poly(np.concatenate([base, top]), _colour(r, FOLIAGE, 8), VEGETATION)
        behind = x + math.copysign(r.uniform(15, 40), x)
        if r.random() < 0.6:  # a taller building behind the park
            canvas.poly(_quad_x(behind, z0 - 5, z1 + 5, 0, r.uniform(10, 30)),
                        _colour(r, FACADE_COLOURS), BUILDING)

    def _stream(self, kind: int, speed: float, span: tuple[float, float], time: float, *,
                spacing: float, density: float) -> list[tuple[float, np.random.Generator]]:
        """Items of a stream moving at ``speed``: positions are fixed in the stream's own frame."""
        z_lo, z_hi = span
        shift = speed * time
        out = []
        for cell in range(int((z_lo - shift - 15) // spacing), int((z_hi - shift + 15) // spacing) + 1):
            r = _rng(self.seed, 5, kind, cell)
            if r.random() < density:
                out.append((cell * spacing + r.uniform(0, spacing * 0.4) + shift, r))
        return out

    def _vehicles(self, z_lo: float, z_hi: float,
                  time: float) -> list[tuple[float, float, _Spec, np.random.Generator]]:
        """(x, z of the rear, (class, length, width, height), rng) of every vehicle on the road."""
        out = []
        ego_z = self.ego_z0 + self.ego_speed * time
        for lane in range(self.lanes):
            stream = self._stream(10 + lane, self.lane_speed[lane], (z_lo, z_hi), time, spacing=22.0,
                                  density=0.55)
            for z, r in stream:
                if lane == self.ego_lane and -9 < z - ego_z < 9:
                    continue  # that is where the ego vehicle drives
                out.append((self._lane_x(lane) + r.uniform(-0.3, 0.3), z, self._vehicle_spec(r), r))
        for side, parked in zip((-1, 1), self.parking, strict=True):
            if parked:
                x = (self.road_l + 1.1) if side < 0 else (self.road_r - 1.1)
                for z, r in self._stream(20 + side, 0.0, (z_lo, z_hi), time, spacing=7.0, density=0.6):
                    spec = (CAR, r.uniform(3.9, 4.8), r.uniform(1.65, 1.85), r.uniform(1.35, 1.6))
                    out.append((x, z, spec, r))
        return out

    def _vehicle_spec(self, r: np.random.Generator) -> tuple[int, float, float, float]:
        kind = r.choice([CAR, CAR, CAR, CAR, TRUCK, BUS])
        if kind == CAR:
            return CAR, r.uniform(3.9, 4.9), r.uniform(1.65, 1.9), r.uniform(1.35, 1.6)
        if kind == TRUCK:
            return TRUCK, r.uniform(6.0, 9.0), r.uniform(2.2, 2.5), r.uniform(2.8, 3.8)
        return BUS, r.uniform(10.0, 12.5), 2.5, r.uniform(2.9, 3.3)

    def _vehicle_footprints(self, z_lo: float, z_hi: float,
                            time: float) -> list[tuple[float, float, float, float]]:
        return [(x - spec[2] / 2, x + spec[2] / 2, z, z + spec[1])
                for x, z, spec, _ in self._vehicles(z_lo, z_hi, time)]

    def _objects(self, canvas: _Canvas, z_lo: float, z_hi: float,
                 time: float) -> list[tuple[float, Callable[[], None]]]:
        cam, objs = canvas.cam, []

        half_fov = math.atan2(cam.cx, cam.f)
        cos_yaw, sin_yaw = math.cos(cam.yaw), math.sin(cam.yaw)

        def add(x: float, z: float, draw: Callable[[], None]) -> None:
            d = math.hypot(x - cam.x, z - cam.z)
            depth = sin_yaw * (x - cam.x) + cos_yaw * (z - cam.z)
            lateral = cos_yaw * (x - cam.x) - sin_yaw * (z - cam.z)
            # Skip what is behind the camera or outside the field of view (7 m margin: buses).
            if depth > -7 and d < FAR + 15 and abs(lateral) - 7 < max(depth, 0) * math.tan(half_fov):
                objs.append((d, draw))

        for x, z, spec, r in self._vehicles(z_lo, z_hi, time):
            add(x, z + spec[1] / 2, lambda x=x, z=z, spec=spec, r=r: self._vehicle(canvas, x, z, spec, r))
        for side, speed in zip((-1, 1), self.walk_speed, strict=True):
            kerb = self.road_r if side > 0 else self.road_l
            for z, r in self._stream(30 + side, speed, (z_lo, z_hi), time, spacing=6.0, density=0.45):
                x = kerb + side * r.uniform(0.6, self.walk_w - 0.4)
                add(x, z, lambda x=x, z=z, r=r: self._person(canvas, x, z, r, time))
            for z, r in self._stream(40 + side, 0.0, (z_lo, z_hi), time, spacing=12.0, density=0.7):
                x = kerb + side * r.uniform(0.35, 0.7)
                add(x, z, lambda x=x, z=z, r=r, side=side: self._street_furniture(canvas, x, z, side, r))
            for z, r in self._stream(50 + side, 0.0, (z_lo, z_hi), time, spacing=10.0, density=0.5):
                x = kerb + side * r.uniform(0.8, self.walk_w + 0.5)
                add(x, z, lambda x=x, z=z, r=r: self._tree(canvas, x, z, r))
        for z, r in self._stream(60, self.ego_speed * 0.5, (z_lo, z_hi), time, spacing=25.0, density=0.45):
            x = self._lane_x(self.lanes - 1) + self.lane_w / 2 - 0.7
            add(x, z, lambda x=x, z=z, r=r: self._cyclist(canvas, x, z, r, time))
        return objs

    # -- objects ---------------------------------------------------------------------------

    def _vehicle(self, canvas: _Canvas, x: float, z: float, spec: _Spec,
                 r: np.random.Generator) -> None:
        kind, length, width, height = spec
        body = _colour(r, BUS_COLOURS if kind == BUS else CAR_COLOURS, 12)
        glass = np.array([45, 55, 65.0]) * r.uniform(0.8, 1.3)
        x0, x1 = x - width / 2, x + width / 2
        wheels = [(xw, zw) for zw in (z + 0.85, z + length - 0.85) for xw in (x0, x1)]
        for xw, zw in wheels:  # drawn first: from behind or ahead only their lower part shows
            canvas.box((xw - 0.12, 0.0, zw - 0.3), (xw + 0.12, 0.5, zw + 0.3), (25, 25, 25), kind)
        parts = []
        if kind == CAR:
            parts.append(((x0, 0.3, z), (x1, 0.95, z + length), body, None))
            cz0, cz1 = z + length * r.uniform(0.22, 0.32), z + length * r.uniform(0.65, 0.78)
            parts.append(((x0 + 0.12, 0.95, cz0), (x1 - 0.12, height, cz1), body, glass))
        elif kind == TRUCK:
            cab = r.uniform(1.8, 2.3)
            box = _colour(r, [(230, 230, 230), (180, 180, 185), (60, 80, 140), (150, 40, 40)], 10)
            parts.append(((x0, 0.45, z + length - cab), (x1, 2.7, z + length), body, glass))
            parts.append(((x0, 0.6, z), (x1, height, z + length - cab - 0.15), box, None))
        else:
            parts.append(((x0, 0.3, z), (x1, height, z + length), body, glass))
        eye = (canvas.cam.x, canvas.cam.z)
        # Painter's order among the parts: farthest centre first.
        parts.sort(key=lambda p: -math.dist(((p[0][0] + p[1][0]) / 2, (p[0][2] + p[1][2]) / 2), eye))
        for lo, hi, colour, window in parts:
            for quad, normal in canvas.box(lo, hi, colour, kind):
                if window is not None and normal[1] == 0:
                    self._window_band(canvas, quad, normal, window, kind)
        for xw, zw in wheels:  # tyres on the sides that face the camera
            if (xw - canvas.cam.x) * (xw - x) < 0:
                canvas.poly(_disc((xw + math.copysign(0.01, xw - x), 0.33, zw), 0.33, 0), (25, 25, 25), kind)

    @staticmethod
    def _window_band(canvas: _Canvas, quad: np.ndarray, normal: np.ndarray, glass: np.ndarray,
                     kind: int) -> None:
        """Glass on a visible vertical face: its upper part, inset from the edges."""
        lo, hi = quad.min(0), quad.max(0)
        y0 = lo[1] + (hi[1] - lo[1]) * (0.5 if kind == BUS else 0.1)
        y1 = hi[1] - (hi[1] - lo[1]) * 0.1
        off = normal * 0.01
        if normal[0] != 0:
            pts = _quad_x(lo[0], lo[2] + 0.15, hi[2] - 0.15, y0, y1) + off
        else:
            pts = np.array([[lo[0] + 0.1, y0, lo[2]], [hi[0] - 0.1, y0, lo[2]],
                            [hi[0] - 0.1, y1, lo[2]], [lo[0] + 0.1, y1, lo[2]]]) + off
        canvas.poly(pts, glass, kind)

    def _person(self, canvas: _Canvas, x: float, z: float, r: np.random.Generator, time: float) -> None:
        label = PERSON
        sp = canvas.sprite(x, z)
        if sp is None:
            return
        h = r.uniform(1.55, 1.92)
        legs, shirt, skin = _colour(r, CLOTHES), _colour(r, CLOTHES), _colour(r, SKIN, 6)
        step = 0.12 * math.sin(time * 6.0 + r.uniform(0, 6.3))
        canvas.rect(sp, (-0.17 + step, 0, -0.02 + step, 0.48 * h), legs, label)
        canvas.rect(sp, (0.02 - step, 0, 0.17 - step, 0.48 * h), legs, label)
        canvas.rect(sp, (-0.21, 0.46 * h, 0.21, 0.82 * h), shirt, label)
        canvas.rect(sp, (-0.28, 0.5 * h, -0.2, 0.8 * h), shirt * 0.9, label)
        canvas.rect(sp, (0.2, 0.5 * h, 0.28, 0.8 * h), shirt * 0.9, label)
        (u, v), s, depth = sp
        head = np.array([u, v - s * 0.9 * h])
        canvas.ellipse_px(head, (s * 0.1 * h / 1.4, s * 0.075 * h), skin, label, depth)

    def _cyclist(self, canvas: _Canvas, x: float, z: float, r: np.random.Generator, time: float) -> None:
        sp = canvas.sprite(x, z)
        if sp is None:
            return
        frame = _colour(r, CAR_COLOURS, 10)
        canvas.poly(_disc((x, 0.34, z - 0.55), 0.34, 0), (30, 30, 30), BICYCLE)
        canvas.poly(_disc((x, 0.34, z + 0.55), 0.34, 0), (30, 30, 30), BICYCLE)
        for (ya, za), (yb, zb) in (((0.34, -0.55), (0.95, -0.15)), ((0.34, 0.55), (0.95, -0.15)),
                                   ((0.95, -0.15), (1.05, 0.5)), ((0.34, 0.55), (1.05, 0.5))):
            canvas.poly(np.array([[x, ya, z + za], [x, yb, z + zb], [x, yb + 0.07, z + zb],
                                  [x, ya + 0.07, z + za]]), frame, BICYCLE)
        canvas.poly(np.array([[x - 0.3, 1.05, z + 0.5], [x + 0.3, 1.05, z + 0.5], [x + 0.3, 1.1, z + 0.5],
                              [x - 0.3, 1.1, z + 0.5]]), (40, 40, 40), BICYCLE)
        (u, v), s, depth = sp
        shirt, skin = _colour(r, CLOTHES), _colour(r, SKIN, 6)
        pedal = 0.1 * math.sin(time * 5.0)
        canvas.rect(sp, (-0.16, 0.35 + pedal, -0.03, 0.95), _colour(r, CLOTHES), RIDER)
        canvas.rect(sp, (0.03, 0.35 - pedal, 0.16, 0.95), _colour(r, CLOTHES), RIDER)
        canvas.rect(sp, (-0.22, 0.9, 0.22, 1.55), shirt, RIDER)
        canvas.ellipse_px(np.array([u, v - s * 1.68]), (s * 0.11, s * 0.13), skin, RIDER, depth)

    def _street_furniture(self, canvas: _Canvas, x: float, z: float, side: int,
                          r: np.random.Generator) -> None:
        kind = r.choice(['lamp', 'lamp', 'sign', 'light'])
        grey = _colour(r, [(130, 130, 130), (90, 95, 90), (160, 160, 150)], 8)
        if kind == 'lamp':
            h = r.uniform(5, 8)
            canvas.box((x - 0.13, 0, z - 0.13), (x + 0.13, h, z + 0.13), grey, POLE)
            arm = x - side * r.uniform(1.0, 2.0)
            canvas.box((min(x, arm), h - 0.15, z - 0.08), (max(x, arm), h, z + 0.08), grey, POLE)
            canvas.box((arm - 0.3, h - 0.3, z - 0.2), (arm + 0.3, h - 0.1, z + 0.2), grey * 1.2, POLE)
            return
        h = r.uniform(2.2, 3.0) if kind == 'sign' else r.uniform(3.0, 4.0)
        canvas.box((x - 0.07, 0, z - 0.07), (x + 0.07, h, z + 0.07), grey, POLE)
        zf = z - 0.09  # the face looks at oncoming ego traffic (-Z)
        front = canvas.cam.z < zf
        if kind == 'light':
            canvas.box((x - 0.18, h, zf), (x + 0.18, h + 0.95, zf + 0.3), (35, 35, 30), LIGHT)
            if front:
                lit = int(r.integers(3))
                for i, colour in enumerate(((230, 40, 30), (240, 180, 20), (40, 220, 90))):
                    c = colour if i == lit else (60, 55, 50)
                    canvas.poly(_disc((x, h + 0.78 - 0.3 * i, zf - 0.01), 0.11, 2, 10), c, LIGHT)
            return
        shape = r.integers(3)
        y = h + 0.35
        if shape == 0:
            plate = _disc((x, y, zf), 0.36, 2, 16)
            colours = ((220, 30, 30), (235, 235, 235)) if r.random() < 0.6 else ((30, 70, 180), (30, 70, 180))
        elif shape == 1:
            plate = np.array([[x - 0.4, y - 0.3, zf], [x + 0.4, y - 0.3, zf], [x, y + 0.4, zf]])
            colours = ((220, 30, 30), (240, 240, 240))
        else:
            plate = np.array([[x - 0.35, y - 0.35, zf], [x + 0.35, y - 0.35, zf],
                              [x + 0.35, y + 0.35, zf], [x - 0.35, y + 0.35, zf]])
            colours = ((30, 70, 180), (30, 70, 180)) if r.random() < 0.5 else ((240, 200, 20), (240, 200, 20))
        if not front:
            canvas.poly(plate, (150, 150, 150), SIGN)
            return
        canvas.poly(plate, colours[0], SIGN)
        centre = plate.mean(0)
        canvas.poly(centre + (plate - centre) * 0.72 + [0, 0, -0.005], colours[1], SIGN)

    def _tree(self, canvas: _Canvas, x: float, z: float, r: np.random.Generator) -> None:
        sp = canvas.sprite(x, z)
        if sp is None:
            return
        trunk_h = r.uniform(1.8, 3.0)
        canvas.rect(sp, (-0.15, 0, 0.15, trunk_h + 0.5), (80, 60, 40), VEGETATION)
        (u, v), s, depth = sp
        base = _colour(r, FOLIAGE, 8)
        for _ in range(int(r.integers(3, 6))):
            cx, cy = r.uniform(-1.0, 1.0), trunk_h + r.uniform(0.6, 2.5)
            ax = (s * r.uniform(0.9, 1.8), s * r.uniform(0.8, 1.5))
            centre = np.array([u + s * cx, v - s * cy])
            canvas.ellipse_px(centre, ax, base * r.uniform(0.8, 1.2), VEGETATION, depth)

    def _draw_hood(self, canvas: _Canvas) -> None:
        # The ego vehicle's bonnet: Cityscapes marks it "ego vehicle", i.e. ignored (255).
        w, h = self.width, self.height
        xs = np.linspace(0, w, 24)
        ys = h * (0.9 - 0.05 * np.cos(np.linspace(-1.2, 1.2, 24)))
        pts = np.concatenate([np.stack([xs, ys], -1), [[w, h], [0, h]]])
        canvas.fill_px(pts, self.hood_colour * 0.7, IGNORE, 0.0)

    def _photometric(self, rgb: np.ndarray, r: np.random.Generator, camera: int) -> np.ndarray:
        """Exposure, white balance, vignetting, texture, blur and sensor noise."""
        h, w = rgb.shape[:2]
        scale = max(w / 640.0, 0.25)
        field = cv2.resize(r.normal(0, 1, (8, 16)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        vignette = 1 - 0.25 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
        gain = self.exposure * self.camera_gain[camera] * r.uniform(0.95, 1.05)
        rgb = rgb * (gain * vignette * (1 + 0.05 * field))[..., None] * self.tint.astype(np.float32)
        sigma = r.uniform(0.2, 0.9) * scale
        rgb = cv2.GaussianBlur(rgb, (0, 0), sigma)
        fine = r.normal(0, 1, rgb.shape).astype(np.float32)
        rgb = rgb + fine * r.uniform(2.0, 7.0)
        return np.clip(rgb, 0, 255).astype(np.uint8)


def render_scene(seed: int, *, width: int = 640, height: int = 320,
                 camera: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One frame of a fresh drive: (RGB uint8 HxWx3, Cityscapes train ids uint8 HxW)."""
    return Drive(seed, width=width, height=height, num_cameras=len(RIG_YAWS)).frame(0, camera)


def dataset_frame(seed: int, index: int, *, width: int, height: int,
                  cameras: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of a dataset split: its own drive, a random time, camera index mod ``cameras``."""
    drive = Drive(seed * 1_000_003 + index, width=width, height=height, num_cameras=cameras)
    return drive.frame(int(_rng(seed, 6, index).integers(0, 300)), index % cameras)


def _frames(n: int, seed: int, width: int, height: int,
            cameras: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i in range(n):
        yield dataset_frame(seed, i, width=width, height=height, cameras=cameras)


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = image[..., ::-1] if image.ndim == 3 else image
    if not cv2.imwrite(str(path), np.ascontiguousarray(data)):
        msg = f'could not write {path}'
        raise OSError(msg)


def write_sagemaker_dataset(root: str | Path, *, n_train: int, n_val: int, seed: int = 0, width: int = 320,
                            height: int = 160, cameras: int = 3, image_ext: str = 'jpg') -> Path:
    """Write SageMaker's layout: train/, train_annotation/, validation/, validation_annotation/.

    Split seeds: ``2 * seed`` for training and ``2 * seed + 1`` for validation (``dataset_frame``).
    """
    root = Path(root)
    for split, n, s in (('train', n_train, seed * 2), ('validation', n_val, seed * 2 + 1)):
        for i, (rgb, label) in enumerate(_frames(n, s, width, height, cameras)):
            _write(root / split / f'frame_{i:05d}.{image_ext}', rgb)
            _write(root / f'{split}_annotation' / f'frame_{i:05d}.png', label)
    return root


def write_cityscapes_dataset(root: str | Path, *, n_train: int, n_val: int, seed: int = 0, width: int = 320,
                             height: int = 160, cameras: int = 3, city: str = 'synthcity') -> Path:
    """Write Cityscapes' layout: leftImg8bit/{split}/{city}/ and gtFine/ ``*_labelIds.png`` (label ids)."""
    to_ids = lookup_table(TRAIN_ID_TO_CITYSCAPES_ID, default=0)
    to_ids[IGNORE] = 1  # the only ignored thing we draw is the ego vehicle
    root = Path(root)
    for split, n, s in (('train', n_train, seed * 2), ('val', n_val, seed * 2 + 1)):
        for i, (rgb, label) in enumerate(_frames(n, s, width, height, cameras)):
            stem = f'{city}_{i // 30:06d}_{i % 30:06d}'
            _write(root / 'leftImg8bit' / split / city / f'{stem}_leftImg8bit.png', rgb)
            _write(root / 'gtFine' / split / city / f'{stem}_gtFine_labelIds.png', to_ids[label])
    return root


def write_camvid_dataset(root: str | Path, *, n_train: int, n_val: int, seed: int = 0, width: int = 320,
                         height: int = 160, cameras: int = 3) -> Path:
    """Write SegNet's CamVid layout: train/, trainannot/, val/, valannot/ (11 classes, 11 = void)."""
    to_camvid = lookup_table(TRAIN_ID_TO_CAMVID, default=11)
    root = Path(root)
    for split, n, s in (('train', n_train, seed * 2), ('val', n_val, seed * 2 + 1)):
        for i, (rgb, label) in enumerate(_frames(n, s, width, height, cameras)):
            _write(root / split / f'frame_{i:05d}.png', rgb)
            _write(root / f'{split}annot' / f'frame_{i:05d}.png', to_camvid[label])
    return root
