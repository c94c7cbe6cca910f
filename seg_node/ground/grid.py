"""Masks -> ground grids: class roles, one camera's grid from one gather, and the fused grid.

Cell values follow nav_msgs/OccupancyGrid: 0 drivable, 100 an obstacle's ground contact,
-1 unknown. Per image column only the lowest obstacle pixel that stands on drivable ground is
a ground contact; everything the mask shows above it in that column (the obstacle's upper part,
and whatever lies behind it) stays unknown, so a raised object is never smeared onto the ground.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from seg_node.ground.geometry import GeometryError, GroundLookup

FREE, OCCUPIED, UNKNOWN = 0, 100, -1
# Role codes of the class lookup table.
OTHER, DRIVABLE, OBSTACLE = 0, 1, 2

# Defaults by Cityscapes name; a model's table keeps those it has (VOC or custom models name their own).
DEFAULT_DRIVABLE = ('road',)
DEFAULT_OBSTACLE = ('person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle', 'bicycle', 'pole',
                    'wall', 'fence', 'building', 'traffic light', 'traffic sign', 'vegetation')
DEFAULT_IGNORE = ('sky',)


@dataclass(frozen=True)
class ClassRoles:
    """What each class id means to the grid: a 256-entry table of OTHER, DRIVABLE, OBSTACLE."""

    table: np.ndarray  # (256,) uint8
    obstacle_table: np.ndarray  # (256,) uint8: 255 for obstacle classes (a cv2.LUT table)
    drivable: tuple[str, ...]
    obstacle: tuple[str, ...]
    ignore: tuple[str, ...]
    unlisted: tuple[str, ...]  # classes in no list: unknown ground, never an obstacle


def resolve_roles(classes: Sequence[str], drivable: Sequence[str] = (), obstacle: Sequence[str] = (),
                  ignore: Sequence[str] = ()) -> ClassRoles:
    """Class lists by name -> ``ClassRoles`` for a model's class table.

    An empty list takes the Cityscapes defaults that the model has; a name given explicitly that
    the model lacks, or a class in two lists, raises GeometryError with one sentence.
    """
    index = {name: i for i, name in enumerate(classes)}
    lists = {}
    for role, given, default in (('drivable', drivable, DEFAULT_DRIVABLE), ('obstacle', obstacle, DEFAULT_OBSTACLE),
                                 ('ignore', ignore, DEFAULT_IGNORE)):
        if given:
            unknown = [name for name in given if name not in index]
            if unknown:
                msg = (f'ground_{role}_classes names {", ".join(map(repr, unknown))}, which the model '
                       f'does not have (its classes: {", ".join(classes)})')
                raise GeometryError(msg)
            lists[role] = tuple(dict.fromkeys(given))
        else:
            lists[role] = tuple(name for name in default if name in index)
    for a, b in (('drivable', 'obstacle'), ('drivable', 'ignore'), ('obstacle', 'ignore')):
        both = sorted(set(lists[a]) & set(lists[b]))
        if both:
            msg = f'class {both[0]!r} is in both ground_{a}_classes and ground_{b}_classes'
            raise GeometryError(msg)
    table = np.full(256, OTHER, np.uint8)
    table[[index[n] for n in lists['drivable']]] = DRIVABLE
    table[[index[n] for n in lists['obstacle']]] = OBSTACLE
    listed = {*lists['drivable'], *lists['obstacle'], *lists['ignore']}
    return ClassRoles(table, np.where(table == OBSTACLE, 255, 0).astype(np.uint8), lists['drivable'], lists['obstacle'],
                      lists['ignore'], tuple(n for n in classes if n not in listed))


def column_contacts(mask: np.ndarray, roles: ClassRoles, first_row: int) -> tuple[np.ndarray, np.ndarray]:
    """Per mask column: the lowest obstacle row (-1: none) and the ground contact row (-1: none).

    Only rows from ``first_row`` down are searched (no grid cell reads or spans a row above it).
    The lowest obstacle pixel is a ground contact when the pixel right below it is drivable.
    """
    h, w = mask.shape[:2]
    obstacle = cv2.LUT(mask[first_row:], roles.obstacle_table)  # 255 on obstacle pixels, else 0
    lowest = np.full(w, -1, np.int64)
    # In blocks of at most 255 rows, each obstacle pixel becomes its row number in the block (1..255)
    # with one uint8 AND, and the column maximum is the block's lowest obstacle row + 1.
    for start, weights in _row_blocks(h - first_row, w):
        block_lowest = cv2.bitwise_and(obstacle[start:start + len(weights)], weights).max(axis=0)
        hit = block_lowest > 0
        lowest[hit] = first_row + start + block_lowest[hit].astype(np.int64) - 1
    under = np.minimum(lowest + 1, h - 1)
    on_ground = (lowest >= 0) & (lowest + 1 < h) & (roles.table[mask[under, np.arange(w)]] == DRIVABLE)
    return lowest, np.where(on_ground, lowest, -1)


@functools.lru_cache(maxsize=16)
def _row_blocks(rows: int, width: int) -> tuple[tuple[int, np.ndarray], ...]:
    """(first row, uint8 row numbers 1..n as a (n, width) array) of each block of up to 255 rows."""
    blocks = []
    for start in range(0, rows, 255):
        n = min(255, rows - start)
        numbers = np.broadcast_to(np.arange(1, n + 1, dtype=np.uint8)[:, None], (n, width))
        blocks.append((start, np.ascontiguousarray(numbers)))
    return tuple(blocks)


def camera_grid(mask: np.ndarray, lookup: GroundLookup, roles: ClassRoles) -> np.ndarray:
    """One camera's grid (height, width) int8 from its class mask (at ``lookup.mask_size``)."""
    if mask.shape[:2] != lookup.mask_size:
        msg = (f'the mask is {mask.shape[1]}x{mask.shape[0]} but the lookup was built for '
               f'{lookup.mask_size[1]}x{lookup.mask_size[0]}')
        raise GeometryError(msg)
    grid = np.full(lookup.grid.height * lookup.grid.width, UNKNOWN, np.int8)
    seen = lookup.seen
    if seen.size == 0:
        return grid.reshape(lookup.grid.height, lookup.grid.width)
    mask = np.ascontiguousarray(mask, np.uint8)
    lowest, contact = column_contacts(mask, roles, lookup.first_row)
    column, row = lookup.column, lookup.row
    role = roles.table[mask.ravel()[lookup.pixel]]
    value = np.full(seen.size, UNKNOWN, np.int8)
    value[(role == DRIVABLE) & (row > lowest[column])] = FREE
    contact_row = contact[column]
    edge = contact_row + 0.5  # the contact lies on the edge between the obstacle and the ground
    claimed = (contact_row >= 0) & (lookup.top <= edge) & (edge < lookup.bottom)
    value[claimed] = OCCUPIED
    grid[seen] = value
    return grid.reshape(lookup.grid.height, lookup.grid.width)


def fuse_grids(grids: Sequence[np.ndarray]) -> np.ndarray:
    """100 where any grid has an obstacle contact, else 0 where any has drivable ground, else -1."""
    if not grids:
        msg = 'fuse_grids needs at least one grid'
        raise GeometryError(msg)
    stack = np.stack(grids)
    fused = np.full(stack.shape[1:], UNKNOWN, np.int8)
    fused[(stack == FREE).any(axis=0)] = FREE
    fused[(stack == OCCUPIED).any(axis=0)] = OCCUPIED
    return fused


# Picture colours: drivable, obstacle contact, unknown (RGB).
GRID_COLOURS = {FREE: (200, 200, 200), OCCUPIED: (220, 30, 30), UNKNOWN: (60, 60, 60)}


def grid_picture(cells: np.ndarray, cell_px: int = 2) -> np.ndarray:
    """An RGB picture of a grid as seen from above: x (forward) up, y (left) to the left."""
    picture = np.empty((*cells.shape, 3), np.uint8)
    for value, colour in GRID_COLOURS.items():
        picture[cells == value] = colour
    # Grid rows run along +y and columns along +x: turn so forward is up and left is left.
    picture = np.ascontiguousarray(picture.transpose(1, 0, 2)[::-1, ::-1])
    return np.repeat(np.repeat(picture, cell_px, 0), cell_px, 1)
