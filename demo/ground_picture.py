"""A picture of the ground grid beside the camera view, from a frame of the synthetic drive.

The drive knows its cameras' poses and intrinsics exactly; the grid here is made from the frame's
ground-truth mask through the node's own geometry (``seg_node.ground``). Writes a PNG:
``python -m demo.ground_picture [--output out/ground_grid.png]``
(README's picture: ``--small --output docs/ground_grid.png``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from seg_node.ground.geometry import GridSpec, pose_from_mount
from seg_node.ground.grid import grid_picture, resolve_roles
from seg_node.ground.mapper import GroundConfig, GroundGridMapper
from seg_node.model.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from seg_node.runtime.render import blend, colorize, palette_lut
from seg_node.synthetic.drive import Drive


def picture(seed: int = 3, t: int = 40, width: int = 640, height: int = 320) -> np.ndarray:
    """Overlay of the front camera (left) and its grid, 0.2 m cells, x 0..20 m, y -10..10 m (right).

    The drive's pose is exact, so no pitch uncertainty limits the range (pitch_sigma 0).
    """
    drive = Drive(seed, width=width, height=height)
    rgb, label = drive.frame(t, 0)
    f, cx, cy = drive.intrinsics(0)
    grid = GridSpec.from_extent(0.2, 0.0, 20.0, -10.0, 10.0)
    mapper = GroundGridMapper(GroundConfig(grid, resolve_roles(CITYSCAPES_CLASSES), 20.0, 0.0))
    k = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])  # the canvas has pixel centres at integers
    lookup = mapper.lookup('front', pose_from_mount(drive.mount(0)), k, label.shape, mask_size=label.shape)
    cells = mapper.camera_grid('front', label, lookup, 0).cells
    overlay = blend(rgb, colorize(label, palette_lut(CITYSCAPES_PALETTE)), 0.5)
    top = grid_picture(cells, cell_px=max(1, height // grid.width))[:height]
    side = np.full((height, top.shape[1], 3), 255, np.uint8)
    side[:top.shape[0]] = top
    text = f'range {lookup.max_range:.1f} m'
    cv2.putText(side, text, (4, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([overlay, np.full((height, 8, 3), 255, np.uint8), side], axis=1)


def main() -> None:
    """Write the picture."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--output', type=Path, default=Path('out/ground_grid.png'))
    parser.add_argument('--seed', type=int, default=3)
    parser.add_argument('--t', type=int, default=40)
    parser.add_argument('--small', action='store_true',
                        help='480x240 and 16 levels per channel (docs/ground_grid.png, under 200 KB)')
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    image = picture(args.seed, args.t, *((480, 240) if args.small else (640, 320)))
    if args.small:
        image = (image // 16) * 16 + 8  # the drive's sensor noise is most of a PNG's bytes
    cv2.imwrite(str(args.output), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
