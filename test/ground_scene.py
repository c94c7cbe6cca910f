"""An analytic ground scene for the ground grid tests: masks ray-cast here, expected cells forward-projected here.

The scene: a road |y| <= 3 m (sidewalk beyond it, then terrain), and one car-labelled box
x 6..7 m, |y| <= 1 m, as tall as the camera is high (so nothing is seen over it). Nothing here
calls the code under test except to build the node-side inputs (``grid_for``).
"""

import math

import numpy as np

from seg_node.ground.geometry import GridSpec, pose_from_mount
from seg_node.ground.grid import resolve_roles
from seg_node.ground.mapper import GroundConfig, GroundGridMapper
from seg_node.model.classes import CITYSCAPES_CLASSES

ROAD, SIDEWALK, TERRAIN, CAR, SKY = (CITYSCAPES_CLASSES.index(n) for n in ('road', 'sidewalk', 'terrain', 'car', 'sky'))
HEIGHT_M = 1.5
BOX = (6.0, 7.0, -1.0, 1.0, HEIGHT_M)  # x0, x1, y0, y1, top
RES = 0.2
GRID = GridSpec.from_extent(RES, 0.0, 16.0, -8.0, 8.0)
ROLES = resolve_roles(CITYSCAPES_CLASSES)


def optical_axes(pitch: float, yaw: float) -> np.ndarray:
    """Columns: optical x (right), y (down), z (forward) in the base frame, written out by hand."""
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), -math.sin(pitch)])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.cross(forward, right)
    return np.stack([right, down, forward], 1)


def ground_class(x, y):
    y = np.abs(y)
    return np.where(y <= 3.0, ROAD, np.where(y <= 5.0, SIDEWALK, TERRAIN))


def box_hit(origin, dirs):
    """Ray parameter where each ray (N, 3) enters the box, inf where it misses (slab method)."""
    lo = np.array([BOX[0], BOX[2], 0.0])
    hi = np.array([BOX[1], BOX[3], BOX[4]])
    with np.errstate(divide='ignore', invalid='ignore'):
        t1 = (lo - origin) / dirs
        t2 = (hi - origin) / dirs
    near = np.nanmax(np.minimum(t1, t2), axis=1)
    far = np.nanmin(np.maximum(t1, t2), axis=1)
    return np.where((near <= far) & (far > 0), np.maximum(near, 0), np.inf)


def ray_cast(size, fx, fy, cx, cy, pitch, yaw, cam=(0.0, 0.0), box=True):
    """The class mask an ideal model would output, one ray through each pixel centre."""
    h, w = size
    v, u = np.mgrid[0:h, 0:w].astype(float)
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1).reshape(-1, 3)
    dirs = rays @ optical_axes(pitch, yaw).T
    origin = np.array([cam[0], cam[1], HEIGHT_M])
    with np.errstate(divide='ignore'):
        t_ground = np.where(dirs[:, 2] < 0, -HEIGHT_M / dirs[:, 2], np.inf)
    t_box = box_hit(origin, dirs) if box else np.full(len(dirs), np.inf)
    with np.errstate(invalid="ignore"):
        gx, gy = origin[0] + t_ground * dirs[:, 0], origin[1] + t_ground * dirs[:, 1]
    mask = np.where(np.isfinite(t_ground), ground_class(np.nan_to_num(gx), np.nan_to_num(gy)), SKY)
    mask = np.where(t_box < t_ground, CAR, mask)
    return mask.reshape(h, w).astype(np.uint8)


def expected_grid(size, fx, fy, cx, cy, pitch, yaw, reach, cam=(0.0, 0.0), box=True):
    """Each cell centre projected by hand: -1 out of view, range or sight; 100 on the box's front edge."""
    xs = GRID.origin_x + (np.arange(GRID.width) + 0.5) * RES
    ys = GRID.origin_y + (np.arange(GRID.height) + 0.5) * RES
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx, gy, np.zeros_like(gx)], -1).reshape(-1, 3)
    origin = np.array([cam[0], cam[1], HEIGHT_M])
    local = (pts - origin) @ optical_axes(pitch, yaw)
    depth = local[:, 2]
    u = fx * local[:, 0] / np.where(depth > 0, depth, 1) + cx
    v = fy * local[:, 1] / np.where(depth > 0, depth, 1) + cy
    inside = (depth > 0.05) & (np.floor(u + 0.5) >= 0) & (np.floor(u + 0.5) < size[1]) \
        & (np.floor(v + 0.5) >= 0) & (np.floor(v + 0.5) < size[0])
    in_range = np.hypot(pts[:, 0] - cam[0], pts[:, 1] - cam[1]) <= reach
    occluded = box_hit(origin, pts - origin) < 1.0 if box else np.zeros(len(pts), bool)
    visible = inside & in_range & ~occluded
    out = np.full(len(pts), -1, np.int8)
    out[visible & (ground_class(pts[:, 0], pts[:, 1]) == ROAD)] = 0
    if box:
        front = (np.abs(pts[:, 0] - BOX[0]) < RES / 2) & (np.abs(pts[:, 1]) < BOX[3]) & inside & in_range
        out[front] = 100
    return out.reshape(GRID.height, GRID.width)


def near_boundary(expected):
    """Cells with a differently valued cell among their 8 neighbours (region boundaries)."""
    padded = np.pad(expected, 1, mode='edge')
    h, w = expected.shape
    diff = np.zeros_like(expected, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            diff |= padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] != expected
    return diff


def assert_matches(actual, expected):
    """Interior cells exact; disagreements only on boundaries; contacts within one cell both ways."""
    wrong = actual != expected
    assert not (wrong & ~near_boundary(expected)).any(), np.argwhere(wrong & ~near_boundary(expected))[:10]
    assert wrong.sum() <= 0.02 * expected.size
    assert (actual == 0).sum() > 0
    for a, b in ((actual, expected), (expected, actual)):  # each contact has one within a cell in the other
        pad = np.pad(b == 100, 1)
        h, w = b.shape
        near = np.zeros_like(pad[1:-1, 1:-1])
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near |= pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        assert not ((a == 100) & ~near).any()


def grid_for(mask, k, image_size, pitch, yaw, cam=(0.0, 0.0), *, max_range=20.0, sigma_deg=0.1):
    mapper = GroundGridMapper(GroundConfig(GRID, ROLES, max_range, math.radians(sigma_deg)))
    pose = pose_from_mount((cam[0], cam[1], HEIGHT_M, 0.0, pitch, yaw))
    lookup = mapper.lookup('cam', pose, k, image_size, mask_size=mask.shape)
    return mapper.camera_grid('cam', mask, lookup, 0).cells, lookup


def k_matrix(f, cx, cy):
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])


SIZE, F = (480, 640), 500.0
PITCH = math.radians(10)
# Honest range by hand: rows get coarser than a cell at sqrt(0.2 * 1.5 * 500) = 12.25 m; a 0.1 degree
# pitch error moves a point a cell at sqrt(0.2 * 1.5 / 0.001745) = 13.1 m.
REACH = math.sqrt(RES * HEIGHT_M * F)
