"""Label tables of the supported datasets (no torch: the synthetic generator uses them too).

Cityscapes ids and train ids follow cityscapesScripts' ``helpers/labels.py``; CamVid uses
SegNet's 11-class convention, where annotation value 11 is "void".
"""

from __future__ import annotations

import numpy as np

from seg_node.model.classes import CAMVID_CLASSES, CAMVID_PALETTE, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

__all__ = [
    'CAMVID_CLASSES', 'CAMVID_PALETTE', 'CAMVID_VOID', 'CITYSCAPES_CLASSES', 'CITYSCAPES_ID_TO_TRAIN_ID',
    'CITYSCAPES_PALETTE', 'IGNORE_INDEX', 'TRAIN_ID_TO_CAMVID', 'TRAIN_ID_TO_CITYSCAPES_ID', 'lookup_table',
]

IGNORE_INDEX = 255

# (id, name, train id); every label whose train id is 255 is ignored in training and evaluation.
CITYSCAPES_LABELS: tuple[tuple[int, str, int], ...] = (
    (0, 'unlabeled', 255), (1, 'ego vehicle', 255), (2, 'rectification border', 255),
    (3, 'out of roi', 255), (4, 'static', 255), (5, 'dynamic', 255), (6, 'ground', 255),
    (7, 'road', 0), (8, 'sidewalk', 1), (9, 'parking', 255), (10, 'rail track', 255),
    (11, 'building', 2), (12, 'wall', 3), (13, 'fence', 4), (14, 'guard rail', 255),
    (15, 'bridge', 255), (16, 'tunnel', 255), (17, 'pole', 5), (18, 'polegroup', 255),
    (19, 'traffic light', 6), (20, 'traffic sign', 7), (21, 'vegetation', 8), (22, 'terrain', 9),
    (23, 'sky', 10), (24, 'person', 11), (25, 'rider', 12), (26, 'car', 13), (27, 'truck', 14),
    (28, 'bus', 15), (29, 'caravan', 255), (30, 'trailer', 255), (31, 'train', 16),
    (32, 'motorcycle', 17), (33, 'bicycle', 18),
)
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {i: t for i, _, t in CITYSCAPES_LABELS}
# Inverse for writing gtFine files; ignored pixels become "unlabeled" (0).
TRAIN_ID_TO_CITYSCAPES_ID: dict[int, int] = {
    t: i for i, _, t in CITYSCAPES_LABELS if t != IGNORE_INDEX} | {IGNORE_INDEX: 0}

CAMVID_VOID = 11
# Cityscapes train id -> CamVid 11-class id, for writing synthetic scenes as CamVid. Traffic
# lights go to "sign symbol" and trucks/buses to "car", as SegNet's 11-class merge does.
TRAIN_ID_TO_CAMVID: dict[int, int] = {
    0: 3, 1: 4, 2: 1, 3: 1, 4: 7, 5: 2, 6: 6, 7: 6, 8: 5, 9: 5, 10: 0, 11: 9, 12: 10,
    13: 8, 14: 8, 15: 8, 16: 8, 17: 10, 18: 10, IGNORE_INDEX: CAMVID_VOID,
}


def lookup_table(mapping: dict[int, int], default: int = IGNORE_INDEX) -> np.ndarray:
    """A 256-entry uint8 table for ``table[label]`` remapping; unmapped values get ``default``."""
    table = np.full(256, default, dtype=np.uint8)
    for src, dst in mapping.items():
        if 0 <= src <= 255:
            table[src] = dst
    return table
