"""The ground grid's cost per frame and camera: 1080p mask, 200 x 200 cells (0.1 m, x 0..20, y -10..10).

Times ``seg_node.ground.grid.camera_grid`` (the per-frame work: one role lookup over the rows
the grid reads, one column reduction, one gather) on a street-like mask, and the lookup rebuild
that only a pose or CameraInfo change costs. Standalone: ``python -m bench.ground_grid``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from seg_node.ground.geometry import GridSpec, pose_from_mount
from seg_node.ground.grid import camera_grid, resolve_roles
from seg_node.ground.mapper import GroundConfig, GroundGridMapper
from seg_node.model.classes import CITYSCAPES_CLASSES

SIZE = (1080, 1920)
K_1080P = np.array([[1000.0, 0.0, 959.5], [0.0, 1000.0, 539.5], [0.0, 0.0, 1.0]])


def street_mask() -> np.ndarray:
    """Sky, buildings, road and three cars: a mask with contacts in many columns."""
    names = {n: i for i, n in enumerate(CITYSCAPES_CLASSES)}
    mask = np.full(SIZE, names['road'], np.uint8)
    mask[:450] = names['sky']
    mask[300:620, :500] = names['building']
    mask[300:620, 1420:] = names['building']
    for left, top, bottom in ((600, 560, 700), (1000, 580, 760), (1300, 540, 640)):
        mask[top:bottom, left:left + 260] = names['car']
    return mask


def measure(mask_scale: int = 1, repeats: int = 300) -> dict[str, float]:
    """Median and p90 ms of one camera's grid per frame, and the ms of one lookup rebuild.

    ``mask_scale`` 2: the mask at half size, as a model of output stride 2 gives it at
    mask_resolution 'model' (the node always reads the model's own mask).
    """
    grid = GridSpec.from_extent(0.1, 0.0, 20.0, -10.0, 10.0)
    # pitch_sigma 0: the widest honest range (12.2 m), i.e. the most cells to fill.
    mapper = GroundGridMapper(GroundConfig(grid, resolve_roles(CITYSCAPES_CLASSES), 20.0, 0.0))
    pose = pose_from_mount((0.0, 0.0, 1.5, 0.0, math.radians(5.0), 0.0))
    t0 = time.perf_counter()
    mask = street_mask()[::mask_scale, ::mask_scale].copy()
    lookup = mapper.lookup('front', pose, K_1080P, SIZE, mask_size=mask.shape)
    rebuild_ms = (time.perf_counter() - t0) * 1e3
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        camera_grid(mask, lookup, mapper.config.roles)
        times.append((time.perf_counter() - t0) * 1e3)
    return {'grid_p50_ms': float(np.percentile(times, 50)), 'grid_p90_ms': float(np.percentile(times, 90)),
            'lookup_rebuild_ms': rebuild_ms, 'cells_seen': int(lookup.seen.size),
            'cells': grid.width * grid.height, 'max_range_m': lookup.max_range,
            'mask': f'{mask.shape[1]}x{mask.shape[0]}'}


def report(result: dict[str, float]) -> str:
    """One paragraph for BENCHMARKS.md."""
    return (f'Ground grid, one 1080p camera, mask {result["mask"]}, {result["cells"]} cells '
            f'({result["cells_seen"]} within the '
            f'{result["max_range_m"]:.1f} m honest range): {result["grid_p50_ms"]:.2f} ms per frame '
            f'(p90 {result["grid_p90_ms"]:.2f}); a pose or CameraInfo change rebuilds the lookup in '
            f'{result["lookup_rebuild_ms"]:.0f} ms.')


def section(rows: list[dict[str, float]]) -> str:
    """The BENCHMARKS.md section: a heading and one paragraph per mask size."""
    return '## Ground grid per frame (issue 25; CPU, one camera)\n\n' + '\n\n'.join(report(r) for r in rows)


if __name__ == '__main__':
    print(section([measure(scale) for scale in (1, 2)]))
