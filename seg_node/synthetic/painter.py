"""How the synthetic street looks: functions that paint each part of a ``StreetLayout`` onto a ``Canvas``.

The layout says where things are; these functions give them shape and colour, drawing any remaining
random numbers (a car's colour, a person's height) from the generator that placed the thing, so it
looks the same in every frame and camera. Order matters: the sky, then the ground, the buildings, and
the objects far to near (``paint_objects``), the bonnet last, then ``photometric`` on the RGB image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from seg_node.synthetic.camera import FAR, HORIZON, PinholeCamera
from seg_node.synthetic.canvas import Canvas, disc, quad_ground, quad_x
from seg_node.synthetic.classes import (
    BICYCLE,
    BUILDING,
    BUS,
    CAR,
    IGNORE,
    LIGHT,
    PERSON,
    POLE,
    RIDER,
    ROAD,
    SIDEWALK,
    SIGN,
    TRUCK,
    VEGETATION,
)
from seg_node.synthetic.layout import CELL, Item, Span, StreetLayout, Vehicle, seeded_rng
from seg_node.synthetic.palette import BUS_COLOURS, CAR_COLOURS, CLOTHES, FACADE_COLOURS, FOLIAGE, SKIN, pick_colour

__all__ = [
    'haze', 'paint_buildings', 'paint_cyclist', 'paint_ground', 'paint_hood', 'paint_objects', 'paint_person',
    'paint_sky', 'paint_street_furniture', 'paint_tree', 'paint_vehicle', 'photometric',
]

_LINE_PAINT = np.array([225, 225, 215.0])
_TYRE = (25, 25, 25)


# -- sky, ground and buildings -----------------------------------------------------------------


def _sky_colours(layout: StreetLayout) -> tuple[np.ndarray, np.ndarray]:
    if layout.overcast:
        return np.array([185, 185, 190.0]), np.array([200, 205, 210.0])
    return np.array([70, 120, 200.0]), np.array([205, 220, 235.0])


def haze(layout: StreetLayout) -> tuple[np.ndarray, float]:
    """The canvas's atmospheric haze: the sky's colour at the horizon and the visibility in metres."""
    return _sky_colours(layout)[1], layout.visibility


def paint_sky(canvas: Canvas, layout: StreetLayout) -> None:
    """A vertical gradient down to the horizon, with a few clouds at infinity."""
    top, low = _sky_colours(layout)
    cam = canvas.cam
    rows = np.clip(np.arange(canvas.h, dtype=np.float32) / max(cam.cy, 1), 0, 1)[:, None]
    canvas.rgb[:] = (top * (1 - rows) + low * rows)[:, None, :]
    r = seeded_rng(layout.seed, 2)
    for _ in range(int(r.integers(0, 6))):
        # Clouds sit at infinity: their pixel position depends on azimuth only.
        az, el = r.uniform(-math.pi, math.pi), r.uniform(0.05, 0.35)
        rel = (az - cam.yaw + math.pi) % (2 * math.pi) - math.pi
        if abs(rel) < 1.3:
            u = cam.cx + cam.f * math.tan(rel)
            v = cam.cy - cam.f * math.tan(el)
            s = cam.f * r.uniform(0.05, 0.15)
            cv2.ellipse(canvas.rgb, (int(u), int(v)), (int(s * 2.5) + 1, int(s) + 1), 0, 0, 360,
                        (235, 238, 240), -1)


def paint_ground(canvas: Canvas, layout: StreetLayout, span: Span, time: float) -> None:
    """Road, pavements and kerbs to the horizon, then patches, markings and the shadows of vehicles."""
    _paint_surfaces(canvas, layout, span)
    marks = _lane_marks(layout, span) + _crossings_and_patches(canvas, layout, span)
    quads = np.concatenate(marks)
    canvas.polys(quads, np.tile(_LINE_PAINT, (len(quads), 1)), ROAD)
    # Soft shadows under vehicles darken the road without changing its label.
    shadow = np.asarray(layout.road_colour) * 0.45
    for x0, x1, z0, z1 in layout.vehicle_footprints(span, time):
        canvas.poly(quad_ground(x0 - 0.2, x1 + 0.2, z0 - 0.3, z1 + 0.3), shadow, None)


def _paint_surfaces(canvas: Canvas, layout: StreetLayout, span: Span) -> None:
    z_lo, z_hi = span
    road_l, road_r, walk, road = layout.road_l, layout.road_r, layout.walk_colour, layout.road_colour
    far_l, far_r = road_l - layout.walk_w - 12, road_r + layout.walk_w + 12
    # The drawn range, then the street on to the horizon beyond it (hazed as one far strip each way).
    for z0, z1 in ((z_lo, z_hi), (z_hi, z_hi + HORIZON), (z_lo - HORIZON, z_lo)):
        canvas.poly(quad_ground(far_l, road_l, z0, z1), walk, SIDEWALK)
        canvas.poly(quad_ground(road_r, far_r, z0, z1), walk, SIDEWALK)
        canvas.poly(quad_ground(road_l, road_r, z0, z1), road, ROAD)
    kerb = np.asarray(walk) * 1.15
    canvas.poly(quad_ground(road_l - 0.25, road_l, z_lo, z_hi), kerb, SIDEWALK)
    canvas.poly(quad_ground(road_r, road_r + 0.25, z_lo, z_hi), kerb, SIDEWALK)


def _lane_marks(layout: StreetLayout, span: Span) -> list[np.ndarray]:
    """Lane markings as (K,4,3) quads: solid at the road's edges and the centre line, dashed between lanes."""
    z_lo, z_hi = span
    dash_z = np.arange(math.floor(z_lo / 9.0) * 9.0, z_hi, 9.0)
    half = layout.lane_w / 2
    marks = [quad_ground(x - 0.08, x + 0.08, z_lo, z_hi)[None]
             for x in (layout.lane_x(0) - half, layout.lane_x(layout.lanes - 1) + half)]
    for i in range(1, layout.lanes):
        x = layout.lane_x(i) - half
        if i == layout.oncoming:
            marks.append(quad_ground(x - 0.1, x + 0.1, z_lo, z_hi)[None])
        else:
            marks.append(np.stack([quad_ground(x - 0.08, x + 0.08, z, z + 3.0) for z in dash_z]))
    return marks


def _crossings_and_patches(canvas: Canvas, layout: StreetLayout, span: Span) -> list[np.ndarray]:
    """Paint the asphalt patches of each street cell now (under the markings); return its zebra crossings."""
    z_lo, z_hi = span
    road_l, road_r = layout.road_l, layout.road_r
    zebras = []
    for cell in range(int(z_lo // CELL), int(z_hi // CELL) + 1):
        r = seeded_rng(layout.seed, 3, cell)
        if r.random() < 0.25:
            zc = (cell + r.uniform(0.2, 0.8)) * CELL
            xs = np.arange(road_l + 0.3, road_r - 0.5, 1.0)
            zebras.append(np.stack([quad_ground(x, x + 0.5, zc, zc + 3.5) for x in xs]))
        if r.random() < 0.5:
            x, z = r.uniform(road_l, road_r - 2), (cell + r.random()) * CELL
            canvas.poly(quad_ground(x, x + r.uniform(1, 3), z, z + r.uniform(1, 5)),
                        np.asarray(layout.road_colour) * r.uniform(0.75, 1.2), ROAD)
    return zebras


def paint_buildings(canvas: Canvas, layout: StreetLayout, side: int, span: Span) -> None:
    """The row of buildings (or parks behind hedges) set back behind the pavement of ``side``."""
    z_lo, z_hi = span
    kerb = layout.kerb(side)
    blocks = []
    for cell in range(int(z_lo // CELL), int(z_hi // CELL) + 1):
        r = seeded_rng(layout.seed, 4, cell, side)
        z = cell * CELL
        while z < (cell + 1) * CELL - 0.5:
            length = min(r.uniform(6, 22), (cell + 1) * CELL - z)
            setback = layout.walk_w + r.uniform(0, 3)
            blocks.append((z, z + length, kerb + side * setback, r))
            z += length
    eye_z = canvas.cam.z
    # Farthest first; both end faces of a block are covered by its neighbours or drawn.
    blocks.sort(key=lambda b: -abs((b[0] + b[1]) / 2 - eye_z))
    for z0, z1, x, r in blocks:
        x_back = x + side * 12.0
        lo, hi = (min(x, x_back), 0.0, z0), (max(x, x_back), 0.0, z1)
        if r.random() < 0.2:
            _hedge(canvas, x, z0, z1, r)
            continue
        height = r.uniform(5, 25)
        colour = pick_colour(r, FACADE_COLOURS) * (1.1 if side == layout.sun else 0.85)
        canvas.box(lo, (hi[0], height, hi[2]), colour, BUILDING, shade=1.0)
        _windows(canvas, x - side * 0.02, (z0, z1, height), r)


def _windows(canvas: Canvas, x: float, span: tuple[float, float, float], r: np.random.Generator) -> None:
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
    glass = pick_colour(r, [(60, 70, 85), (40, 45, 55), (110, 125, 140), (150, 140, 110)], 8)
    colours = glass * r.uniform(0.8, 1.2, (len(quads), 1))
    canvas.polys(quads, colours, BUILDING)


def _hedge(canvas: Canvas, x: float, z0: float, z1: float, r: np.random.Generator) -> None:
    zs = np.linspace(z0, z1, max(int((z1 - z0) / 1.5), 2))
    tops = r.uniform(1.5, 6.0) + np.cumsum(r.normal(0, 0.4, len(zs)))
    top = np.stack([np.full_like(zs, x), np.maximum(tops, 0.8), zs], -1)
    base = np.array([[x, 0, z1], [x, 0, z0]], np.float64)
    canvas.poly(np.concatenate([base, top]), pick_colour(r, FOLIAGE, 8), VEGETATION)
    behind = x + math.copysign(r.uniform(15, 40), x)
    if r.random() < 0.6:  # a taller building behind the park
        canvas.poly(quad_x(behind, z0 - 5, z1 + 5, 0, r.uniform(10, 30)), pick_colour(r, FACADE_COLOURS), BUILDING)


# -- objects -----------------------------------------------------------------------------------


def _distance_if_in_view(cam: PinholeCamera, x: float, z: float) -> float | None:
    """Distance from the camera to (x, z), or None if it is behind the camera or outside the field of view."""
    half_fov = math.atan2(cam.cx, cam.f)
    cos_yaw, sin_yaw = math.cos(cam.yaw), math.sin(cam.yaw)
    d = math.hypot(x - cam.x, z - cam.z)
    depth = sin_yaw * (x - cam.x) + cos_yaw * (z - cam.z)
    lateral = cos_yaw * (x - cam.x) - sin_yaw * (z - cam.z)
    # A 7 m margin, so that long buses partly in view are not dropped.
    if depth > -7 and d < FAR + 15 and abs(lateral) - 7 < max(depth, 0) * math.tan(half_fov):
        return d
    return None


def paint_objects(canvas: Canvas, layout: StreetLayout, span: Span, time: float) -> None:
    """Vehicles, pedestrians, street furniture, trees and cyclists in view, painted far to near."""
    objs: list[tuple[float, Callable[[], None]]] = []

    def add(x: float, z: float, draw: Callable[[], None]) -> None:
        d = _distance_if_in_view(canvas.cam, x, z)
        if d is not None:
            objs.append((d, draw))

    # The order of ``add`` calls breaks ties in distance: keep it.
    for v in layout.vehicles(span, time):
        add(v.x, v.z + v.spec.length / 2, partial(paint_vehicle, canvas, v))
    for side in (-1, 1):
        for item in layout.pedestrians(side, span, time):
            add(item.x, item.z, partial(paint_person, canvas, item, time))
        for item in layout.street_furniture(side, span):
            add(item.x, item.z, partial(paint_street_furniture, canvas, item, side))
        for item in layout.trees(side, span):
            add(item.x, item.z, partial(paint_tree, canvas, item))
    for item in layout.cyclists(span, time):
        add(item.x, item.z, partial(paint_cyclist, canvas, item, time))
    for _, draw in sorted(objs, key=lambda o: -o[0]):
        draw()


def paint_vehicle(canvas: Canvas, vehicle: Vehicle) -> None:
    """A car, truck or bus: wheels, body boxes with window bands, tyres on the sides in view."""
    x, z, (kind, length, width, height), r = vehicle
    body = pick_colour(r, BUS_COLOURS if kind == BUS else CAR_COLOURS, 12)
    glass = np.array([45, 55, 65.0]) * r.uniform(0.8, 1.3)
    x0, x1 = x - width / 2, x + width / 2
    wheels = [(xw, zw) for zw in (z + 0.85, z + length - 0.85) for xw in (x0, x1)]
    for xw, zw in wheels:  # drawn first: from behind or ahead only their lower part shows
        canvas.box((xw - 0.12, 0.0, zw - 0.3), (xw + 0.12, 0.5, zw + 0.3), _TYRE, kind)
    parts = []
    if kind == CAR:
        parts.append(((x0, 0.3, z), (x1, 0.95, z + length), body, None))
        cz0, cz1 = z + length * r.uniform(0.22, 0.32), z + length * r.uniform(0.65, 0.78)
        parts.append(((x0 + 0.12, 0.95, cz0), (x1 - 0.12, height, cz1), body, glass))
    elif kind == TRUCK:
        cab = r.uniform(1.8, 2.3)
        box = pick_colour(r, [(230, 230, 230), (180, 180, 185), (60, 80, 140), (150, 40, 40)], 10)
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
                _window_band(canvas, quad, normal, window, kind)
    for xw, zw in wheels:  # tyres on the sides that face the camera
        if (xw - canvas.cam.x) * (xw - x) < 0:
            canvas.poly(disc((xw + math.copysign(0.01, xw - x), 0.33, zw), 0.33, 0), _TYRE, kind)


def _window_band(canvas: Canvas, quad: np.ndarray, normal: np.ndarray, glass: np.ndarray, kind: int) -> None:
    """Glass on a visible vertical face: its upper part, inset from the edges."""
    lo, hi = quad.min(0), quad.max(0)
    y0 = lo[1] + (hi[1] - lo[1]) * (0.5 if kind == BUS else 0.1)
    y1 = hi[1] - (hi[1] - lo[1]) * 0.1
    off = normal * 0.01
    if normal[0] != 0:
        pts = quad_x(lo[0], lo[2] + 0.15, hi[2] - 0.15, y0, y1) + off
    else:
        pts = np.array([[lo[0] + 0.1, y0, lo[2]], [hi[0] - 0.1, y0, lo[2]],
                        [hi[0] - 0.1, y1, lo[2]], [lo[0] + 0.1, y1, lo[2]]]) + off
    canvas.poly(pts, glass, kind)


def paint_person(canvas: Canvas, item: Item, time: float) -> None:
    """A walking pedestrian as a billboard: legs in step, torso, arms and head."""
    sp = canvas.sprite(item.x, item.z)
    if sp is None:
        return
    r = item.rng
    h = r.uniform(1.55, 1.92)
    legs, shirt, skin = pick_colour(r, CLOTHES), pick_colour(r, CLOTHES), pick_colour(r, SKIN, 6)
    step = 0.12 * math.sin(time * 6.0 + r.uniform(0, 6.3))
    canvas.rect(sp, (-0.17 + step, 0, -0.02 + step, 0.48 * h), legs, PERSON)
    canvas.rect(sp, (0.02 - step, 0, 0.17 - step, 0.48 * h), legs, PERSON)
    canvas.rect(sp, (-0.21, 0.46 * h, 0.21, 0.82 * h), shirt, PERSON)
    canvas.rect(sp, (-0.28, 0.5 * h, -0.2, 0.8 * h), shirt * 0.9, PERSON)
    canvas.rect(sp, (0.2, 0.5 * h, 0.28, 0.8 * h), shirt * 0.9, PERSON)
    (u, v), s, depth = sp
    head = np.array([u, v - s * 0.9 * h])
    canvas.ellipse_px(head, (s * 0.1 * h / 1.4, s * 0.075 * h), skin, PERSON, depth)


def paint_cyclist(canvas: Canvas, item: Item, time: float) -> None:
    """A bicycle in world space (labelled bicycle) ridden by a billboard rider (labelled rider)."""
    x, z, r = item
    sp = canvas.sprite(x, z)
    if sp is None:
        return
    frame = pick_colour(r, CAR_COLOURS, 10)
    canvas.poly(disc((x, 0.34, z - 0.55), 0.34, 0), (30, 30, 30), BICYCLE)
    canvas.poly(disc((x, 0.34, z + 0.55), 0.34, 0), (30, 30, 30), BICYCLE)
    for (ya, za), (yb, zb) in (((0.34, -0.55), (0.95, -0.15)), ((0.34, 0.55), (0.95, -0.15)),
                               ((0.95, -0.15), (1.05, 0.5)), ((0.34, 0.55), (1.05, 0.5))):
        canvas.poly(np.array([[x, ya, z + za], [x, yb, z + zb], [x, yb + 0.07, z + zb],
                              [x, ya + 0.07, z + za]]), frame, BICYCLE)
    canvas.poly(np.array([[x - 0.3, 1.05, z + 0.5], [x + 0.3, 1.05, z + 0.5], [x + 0.3, 1.1, z + 0.5],
                          [x - 0.3, 1.1, z + 0.5]]), (40, 40, 40), BICYCLE)
    (u, v), s, depth = sp
    shirt, skin = pick_colour(r, CLOTHES), pick_colour(r, SKIN, 6)
    pedal = 0.1 * math.sin(time * 5.0)
    canvas.rect(sp, (-0.16, 0.35 + pedal, -0.03, 0.95), pick_colour(r, CLOTHES), RIDER)
    canvas.rect(sp, (0.03, 0.35 - pedal, 0.16, 0.95), pick_colour(r, CLOTHES), RIDER)
    canvas.rect(sp, (-0.22, 0.9, 0.22, 1.55), shirt, RIDER)
    canvas.ellipse_px(np.array([u, v - s * 1.68]), (s * 0.11, s * 0.13), skin, RIDER, depth)


def paint_street_furniture(canvas: Canvas, item: Item, side: int) -> None:
    """A street lamp, traffic sign or traffic light at the kerb of ``side``."""
    x, z, r = item
    kind = r.choice(['lamp', 'lamp', 'sign', 'light'])
    grey = pick_colour(r, [(130, 130, 130), (90, 95, 90), (160, 160, 150)], 8)
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
    if kind == 'light':
        _traffic_light(canvas, (x, h, zf), r)
    else:
        _sign(canvas, (x, h + 0.35, zf), r)


def _traffic_light(canvas: Canvas, at: tuple[float, float, float], r: np.random.Generator) -> None:
    """A light housing on top of its pole at ``at`` (x, pole height, face z); one lamp lit if the face is in view."""
    x, h, zf = at
    canvas.box((x - 0.18, h, zf), (x + 0.18, h + 0.95, zf + 0.3), (35, 35, 30), LIGHT)
    if canvas.cam.z < zf:
        lit = int(r.integers(3))
        for i, colour in enumerate(((230, 40, 30), (240, 180, 20), (40, 220, 90))):
            c = colour if i == lit else (60, 55, 50)
            canvas.poly(disc((x, h + 0.78 - 0.3 * i, zf - 0.01), 0.11, 2, 10), c, LIGHT)


def _sign(canvas: Canvas, at: tuple[float, float, float], r: np.random.Generator) -> None:
    """A round, triangular or square sign plate centred on ``at`` (x, y, face z); grey from behind."""
    x, y, zf = at
    shape = r.integers(3)
    if shape == 0:
        plate = disc((x, y, zf), 0.36, 2, 16)
        colours = ((220, 30, 30), (235, 235, 235)) if r.random() < 0.6 else ((30, 70, 180), (30, 70, 180))
    elif shape == 1:
        plate = np.array([[x - 0.4, y - 0.3, zf], [x + 0.4, y - 0.3, zf], [x, y + 0.4, zf]])
        colours = ((220, 30, 30), (240, 240, 240))
    else:
        plate = np.array([[x - 0.35, y - 0.35, zf], [x + 0.35, y - 0.35, zf],
                          [x + 0.35, y + 0.35, zf], [x - 0.35, y + 0.35, zf]])
        colours = ((30, 70, 180), (30, 70, 180)) if r.random() < 0.5 else ((240, 200, 20), (240, 200, 20))
    if canvas.cam.z >= zf:
        canvas.poly(plate, (150, 150, 150), SIGN)
        return
    canvas.poly(plate, colours[0], SIGN)
    centre = plate.mean(0)
    canvas.poly(centre + (plate - centre) * 0.72 + [0, 0, -0.005], colours[1], SIGN)


def paint_tree(canvas: Canvas, item: Item) -> None:
    """A tree as a billboard: a trunk and a few overlapping ellipses of foliage."""
    sp = canvas.sprite(item.x, item.z)
    if sp is None:
        return
    r = item.rng
    trunk_h = r.uniform(1.8, 3.0)
    canvas.rect(sp, (-0.15, 0, 0.15, trunk_h + 0.5), (80, 60, 40), VEGETATION)
    (u, v), s, depth = sp
    base = pick_colour(r, FOLIAGE, 8)
    for _ in range(int(r.integers(3, 6))):
        cx, cy = r.uniform(-1.0, 1.0), trunk_h + r.uniform(0.6, 2.5)
        ax = (s * r.uniform(0.9, 1.8), s * r.uniform(0.8, 1.5))
        centre = np.array([u + s * cx, v - s * cy])
        canvas.ellipse_px(centre, ax, base * r.uniform(0.8, 1.2), VEGETATION, depth)


def paint_hood(canvas: Canvas, colour: tuple[float, float, float]) -> None:
    """The ego vehicle's bonnet at the bottom of the front camera's image."""
    # Cityscapes marks it "ego vehicle", i.e. ignored (255).
    w, h = canvas.w, canvas.h
    xs = np.linspace(0, w, 24)
    ys = h * (0.9 - 0.05 * np.cos(np.linspace(-1.2, 1.2, 24)))
    pts = np.concatenate([np.stack([xs, ys], -1), [[w, h], [0, h]]])
    canvas.fill_px(pts, np.asarray(colour) * 0.7, IGNORE, 0.0)


# -- the sensor --------------------------------------------------------------------------------


def photometric(rgb: np.ndarray, layout: StreetLayout, camera: int, r: np.random.Generator) -> np.ndarray:
    """Exposure, white balance, vignetting, texture, blur and sensor noise: float RGB to uint8."""
    h, w = rgb.shape[:2]
    scale = max(w / 640.0, 0.25)
    field = cv2.resize(r.normal(0, 1, (8, 16)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = 1 - 0.25 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
    # A float64 scalar, so that NumPy computes the product below in float64 (a Python float would
    # keep it in float32 and move pixels by one level).
    gain = np.float64(layout.exposure * layout.camera_gain[camera] * r.uniform(0.95, 1.05))
    rgb = rgb * (gain * vignette * (1 + 0.05 * field))[..., None] * np.asarray(layout.tint, np.float32)
    sigma = r.uniform(0.2, 0.9) * scale
    rgb = cv2.GaussianBlur(rgb, (0, 0), sigma)
    fine = r.normal(0, 1, rgb.shape).astype(np.float32)
    rgb = rgb + fine * r.uniform(2.0, 7.0)
    return np.clip(rgb, 0, 255).astype(np.uint8)
