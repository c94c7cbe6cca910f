"""The random street of a drive: ``StreetLayout`` holds everything drawn from the seed, and places things on it.

A layout is fixed for the whole drive: lanes and pavements, the ego vehicle's lane and speed, the camera
rig's optics, the lighting. What stands or moves along the street (vehicles, pedestrians, street
furniture, trees, cyclists) comes in streams of cells; each cell has its own generator keyed by
(seed, 5, stream, cell), so an item is the same in every frame and camera and a moving stream only
shifts with time. Placement is pure: it depends on the layout and the time, never on a camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from seg_node.synthetic.classes import BUS, CAR, TRUCK
from seg_node.synthetic.palette import CAR_COLOURS, pick_colour

__all__ = ['CELL', 'RIG_YAWS', 'Item', 'Span', 'StreetLayout', 'Vehicle', 'VehicleSpec', 'seeded_rng']

# Rig yaws in degrees: front, front-left, front-right, rear, rear-left, rear-right, ...
RIG_YAWS = (0.0, -55.0, 55.0, 180.0, -125.0, 125.0, -90.0, 90.0)
CELL = 30.0  # metres of street (buildings, crossings, patches) generated from one random stream
_BIG = 1 << 40  # keeps cell indices non-negative for SeedSequence

Span = tuple[float, float]  # (z_lo, z_hi): the stretch of street, in metres, that is wanted


def seeded_rng(*key: int) -> np.random.Generator:
    """The generator of one key, e.g. (seed, 4, cell, side): the same key always gives the same numbers."""
    return np.random.default_rng([int(k) + _BIG for k in key])


class VehicleSpec(NamedTuple):
    """A vehicle's class (a train id: CAR, TRUCK or BUS) and size in metres."""

    kind: int
    length: float
    width: float
    height: float


class Vehicle(NamedTuple):
    """A vehicle centred on ``x`` with its rear at ``z``; ``rng`` goes on to draw its looks."""

    x: float
    z: float
    spec: VehicleSpec
    rng: np.random.Generator


class Item(NamedTuple):
    """A pedestrian, pole, sign, light, tree or cyclist at (x, z); ``rng`` goes on to draw its looks."""

    x: float
    z: float
    rng: np.random.Generator


def _lane_centre(road_l: float, left_parking: bool, lane_w: float, lane: int) -> float:
    return road_l + 2.2 * left_parking + (lane + 0.5) * lane_w


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class StreetLayout:
    """Everything about a drive that is drawn once from its seed (metres, radians, float RGB 0..255)."""

    seed: int
    lanes: int
    lane_w: float
    parking: tuple[bool, bool]  # a parking strip on the left, on the right
    road_l: float  # x of the kerbs
    road_r: float
    walk_w: float  # pavement width
    oncoming: int  # the lanes left of the centre line drive towards us
    ego_lane: int
    ego_x: float
    ego_z0: float
    ego_speed: float  # metres per second, +Z
    lane_speed: tuple[float, ...]
    walk_speed: tuple[float, float]  # pedestrians on the left, right pavement
    hfov: float
    cam_height: float
    horizon: float  # the horizon's row as a fraction of the image height
    yaw_jitter: tuple[float, ...]  # degrees, per rig camera
    hood: bool  # the front camera sees the ego vehicle's bonnet
    hood_colour: tuple[float, float, float]
    exposure: float
    tint: tuple[float, float, float]  # white balance gains
    sun: float  # the sunlit side of the street: -1 left, 1 right
    overcast: bool
    visibility: float  # metres: haze length scale
    camera_gain: tuple[float, ...]  # per rig camera
    road_colour: tuple[float, float, float]
    walk_colour: tuple[float, float, float]

    @classmethod
    def from_seed(cls, seed: int) -> StreetLayout:
        """Draw the layout of drive ``seed``."""
        # One generator, drawn in this exact order: reordering the draws changes every drive.
        r = seeded_rng(seed, 0)
        lanes = int(r.integers(2, 5))
        lane_w = r.uniform(3.0, 3.7)
        parking = (r.random() < 0.5, r.random() < 0.6)
        road_l = -(lanes / 2) * lane_w - 2.2 * parking[0]
        road_r = (lanes / 2) * lane_w + 2.2 * parking[1]
        walk_w = r.uniform(2.0, 5.0)
        oncoming = lanes // 2
        ego_lane = int(r.integers(oncoming, lanes))
        ego_x = _lane_centre(road_l, parking[0], lane_w, ego_lane) + r.uniform(-0.4, 0.4)
        ego_z0 = r.uniform(0, 5000.0)
        ego_speed = r.uniform(6.0, 14.0)
        lane_speed = tuple(-r.uniform(7, 14) if i < oncoming else
                           (ego_speed if i == ego_lane else r.uniform(5, 15))
                           for i in range(lanes))
        walk_speed = (float(r.choice([-1.3, 1.1])), float(r.choice([-1.2, 1.4])))
        hfov = math.radians(r.uniform(55, 85))
        cam_height = r.uniform(1.25, 1.7)
        horizon = r.uniform(0.40, 0.52)
        yaw_jitter = _floats(r.uniform(-5, 5, len(RIG_YAWS)))
        hood = r.random() < 0.4
        hood_colour = _floats(pick_colour(r, CAR_COLOURS, 10))
        # Lighting: exposure, white balance, sun side, haze and sky type.
        exposure = r.uniform(0.65, 1.25)
        tint = _floats(r.uniform(0.9, 1.1, 3))
        sun = float(r.choice([-1.0, 1.0]))
        overcast = r.random() < 0.35
        visibility = r.uniform(120, 600)
        camera_gain = _floats(r.uniform(0.9, 1.1, len(RIG_YAWS)))
        road_colour = _floats(np.full(3, r.uniform(70, 125)) + r.normal(0, 4, 3))
        walk_colour = _floats(pick_colour(r, [(170, 165, 160), (185, 150, 140), (140, 140, 135)], 10))
        return cls(seed=seed, lanes=lanes, lane_w=lane_w, parking=parking, road_l=road_l, road_r=road_r,
                   walk_w=walk_w, oncoming=oncoming, ego_lane=ego_lane, ego_x=ego_x, ego_z0=ego_z0,
                   ego_speed=ego_speed, lane_speed=lane_speed, walk_speed=walk_speed, hfov=hfov,
                   cam_height=cam_height, horizon=horizon, yaw_jitter=yaw_jitter, hood=hood,
                   hood_colour=hood_colour, exposure=exposure, tint=tint, sun=sun, overcast=overcast,
                   visibility=visibility, camera_gain=camera_gain, road_colour=road_colour,
                   walk_colour=walk_colour)

    def lane_x(self, lane: int) -> float:
        """The centre line of lane ``lane`` (0 = leftmost)."""
        return _lane_centre(self.road_l, self.parking[0], self.lane_w, lane)

    def kerb(self, side: int) -> float:
        """The kerb's x on ``side`` (-1 left, 1 right)."""
        return self.road_r if side > 0 else self.road_l

    def vehicles(self, span: Span, time: float) -> list[Vehicle]:
        """Every vehicle on the road near ``span`` at ``time`` (seconds): moving lanes, then parked cars."""
        out = []
        ego_z = self.ego_z0 + self.ego_speed * time
        for lane in range(self.lanes):
            for z, r in self._stream(10 + lane, self.lane_speed[lane], span, time, spacing=22.0, density=0.55):
                if lane == self.ego_lane and -9 < z - ego_z < 9:
                    continue  # that is where the ego vehicle drives
                out.append(Vehicle(self.lane_x(lane) + r.uniform(-0.3, 0.3), z, _vehicle_spec(r), r))
        for side, parked in zip((-1, 1), self.parking, strict=True):
            if parked:
                x = (self.road_l + 1.1) if side < 0 else (self.road_r - 1.1)
                for z, r in self._stream(20 + side, 0.0, span, time, spacing=7.0, density=0.6):
                    spec = VehicleSpec(CAR, r.uniform(3.9, 4.8), r.uniform(1.65, 1.85), r.uniform(1.35, 1.6))
                    out.append(Vehicle(x, z, spec, r))
        return out

    def vehicle_footprints(self, span: Span, time: float) -> list[tuple[float, float, float, float]]:
        """(x0, x1, z0, z1) on the ground of every vehicle of ``vehicles``."""
        return [(v.x - v.spec.width / 2, v.x + v.spec.width / 2, v.z, v.z + v.spec.length)
                for v in self.vehicles(span, time)]

    def pedestrians(self, side: int, span: Span, time: float) -> list[Item]:
        """People walking on the pavement of ``side`` (-1 left, 1 right)."""
        kerb, speed = self.kerb(side), self.walk_speed[0 if side < 0 else 1]
        stream = self._stream(30 + side, speed, span, time, spacing=6.0, density=0.45)
        return [Item(kerb + side * r.uniform(0.6, self.walk_w - 0.4), z, r) for z, r in stream]

    def street_furniture(self, side: int, span: Span) -> list[Item]:
        """Lamps, signs and traffic lights just behind the kerb of ``side``."""
        kerb = self.kerb(side)
        stream = self._stream(40 + side, 0.0, span, 0.0, spacing=12.0, density=0.7)
        return [Item(kerb + side * r.uniform(0.35, 0.7), z, r) for z, r in stream]

    def trees(self, side: int, span: Span) -> list[Item]:
        """Trees along the pavement of ``side`` (some stand just beyond it)."""
        kerb = self.kerb(side)
        stream = self._stream(50 + side, 0.0, span, 0.0, spacing=10.0, density=0.5)
        return [Item(kerb + side * r.uniform(0.8, self.walk_w + 0.5), z, r) for z, r in stream]

    def cyclists(self, span: Span, time: float) -> list[Item]:
        """Cyclists at the right edge of the rightmost lane, riding at half the ego vehicle's speed."""
        x = self.lane_x(self.lanes - 1) + self.lane_w / 2 - 0.7
        stream = self._stream(60, self.ego_speed * 0.5, span, time, spacing=25.0, density=0.45)
        return [Item(x, z, r) for z, r in stream]

    def _stream(self, kind: int, speed: float, span: Span, time: float, *,
                spacing: float, density: float) -> list[tuple[float, np.random.Generator]]:
        """Items of a stream moving at ``speed``: positions are fixed in the stream's own frame."""
        z_lo, z_hi = span
        shift = speed * time
        out = []
        for cell in range(int((z_lo - shift - 15) // spacing), int((z_hi - shift + 15) // spacing) + 1):
            r = seeded_rng(self.seed, 5, kind, cell)
            if r.random() < density:
                out.append((cell * spacing + r.uniform(0, spacing * 0.4) + shift, r))
        return out


def _vehicle_spec(r: np.random.Generator) -> VehicleSpec:
    kind = r.choice([CAR, CAR, CAR, CAR, TRUCK, BUS])
    if kind == CAR:
        return VehicleSpec(CAR, r.uniform(3.9, 4.9), r.uniform(1.65, 1.9), r.uniform(1.35, 1.6))
    if kind == TRUCK:
        return VehicleSpec(TRUCK, r.uniform(6.0, 9.0), r.uniform(2.2, 2.5), r.uniform(2.8, 3.8))
    return VehicleSpec(BUS, r.uniform(10.0, 12.5), 2.5, r.uniform(2.9, 3.3))
