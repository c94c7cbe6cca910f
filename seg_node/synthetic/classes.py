"""Cityscapes train ids that the synthetic generator paints (255 = ignored, the ego vehicle's bonnet)."""

from __future__ import annotations

__all__ = [
    'BICYCLE', 'BUILDING', 'BUS', 'CAR', 'CLASSES_PRESENT', 'IGNORE', 'LIGHT', 'PERSON', 'POLE', 'RIDER',
    'ROAD', 'SIDEWALK', 'SIGN', 'SKY', 'TRUCK', 'VEGETATION',
]

ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN, VEGETATION, SKY = 0, 1, 2, 5, 6, 7, 8, 10
PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE, IGNORE = 11, 12, 13, 14, 15, 18, 255
# Train ids the generator draws (the rest of the 19 Cityscapes classes never appear).
CLASSES_PRESENT = (ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN, VEGETATION, SKY, PERSON, RIDER,
                   CAR, TRUCK, BUS, BICYCLE)
