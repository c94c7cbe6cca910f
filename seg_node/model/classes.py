"""Class tables: names and colours in class-id order, and the tables of the public datasets."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

# The 19 Cityscapes training classes in train-id order, with their official colours
# (cityscapesscripts/helpers/labels.py).
CITYSCAPES_CLASSES: tuple[str, ...] = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
    'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck',
    'bus', 'train', 'motorcycle', 'bicycle',
)
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# CamVid's 11 classes as used by SegNet, with the colours of the CamVid label files.
CAMVID_CLASSES: tuple[str, ...] = (
    'sky', 'building', 'pole', 'road', 'sidewalk', 'tree', 'sign symbol', 'fence', 'car',
    'pedestrian', 'bicyclist',
)
CAMVID_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)

# Pascal VOC's 20 object classes and background, in the VOC label-id order that torchvision's
# COCO-with-VOC-labels models predict; colours from VOC's own colour map (label id bits spread
# over R, G and B from the high bit down).
VOC_CLASSES: tuple[str, ...] = (
    'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
    'cow', 'dining table', 'dog', 'horse', 'motorbike', 'person', 'potted plant', 'sheep', 'sofa',
    'train', 'tv monitor',
)
VOC_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
    (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128),
    (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128),
)


def generated_classes(num_classes: int) -> list[str]:
    """Names for a model that ships none: ``class_0`` .. ``class_{C-1}``."""
    return [f'class_{i}' for i in range(num_classes)]


def distinct_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Return ``num_classes`` visually distinct, deterministic RGB colours.

    Hues step by the golden ratio so neighbouring ids never look alike; brightness
    cycles so that more than a dozen classes stay tellable apart.
    """
    colours = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895) % 1.0
        value = (1.0, 0.75, 0.55)[i % 3]
        saturation = (0.9, 0.6)[(i // 3) % 2]
        r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


@dataclass(frozen=True)
class ClassTable:
    """Class names and their colours, in class-id order."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if len(self.palette) < len(self.names):
            msg = f'a class table needs a colour per class: {len(self.names)} names, {len(self.palette)} colours'
            raise ValueError(msg)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.names)


CITYSCAPES = ClassTable(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)
CAMVID = ClassTable(CAMVID_CLASSES, CAMVID_PALETTE)
VOC = ClassTable(VOC_CLASSES, VOC_PALETTE)


def default_class_table(num_classes: int) -> ClassTable:
    """The table used when a model or dataset names no classes: Cityscapes for 19, else generated."""
    if num_classes == len(CITYSCAPES_CLASSES):
        return CITYSCAPES
    return ClassTable(tuple(generated_classes(num_classes)), tuple(distinct_palette(num_classes)))
