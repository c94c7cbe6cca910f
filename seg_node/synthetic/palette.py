"""Colour palettes of the synthetic street and the jittered colour picks drawn from them."""

from __future__ import annotations

import numpy as np

__all__ = ['BUS_COLOURS', 'CAR_COLOURS', 'CLOTHES', 'FACADE_COLOURS', 'FOLIAGE', 'SKIN', 'pick_colour']

Palette = list[tuple[int, int, int]]

CAR_COLOURS: Palette = [(200, 200, 205), (30, 30, 35), (120, 120, 125), (160, 20, 25), (25, 50, 130),
                        (235, 235, 230), (60, 90, 60), (180, 140, 40), (90, 60, 40), (70, 110, 160)]
BUS_COLOURS: Palette = [(215, 180, 20), (200, 40, 30), (30, 90, 170), (235, 235, 235), (40, 140, 80)]
FACADE_COLOURS: Palette = [(185, 160, 130), (150, 90, 70), (200, 195, 185), (120, 115, 110),
                           (170, 140, 110), (225, 210, 170), (95, 85, 80), (160, 170, 180)]
CLOTHES: Palette = [(30, 30, 40), (200, 30, 40), (40, 60, 140), (220, 220, 220), (90, 70, 50),
                    (40, 110, 60), (230, 180, 40), (120, 120, 130), (150, 60, 140)]
SKIN: Palette = [(225, 185, 150), (190, 140, 100), (120, 80, 55), (240, 205, 175)]
FOLIAGE: Palette = [(60, 100, 35), (40, 80, 30), (90, 120, 45), (50, 90, 55), (110, 130, 60)]


def pick_colour(rng: np.random.Generator, palette: Palette, jitter: float = 18) -> np.ndarray:
    """A random palette entry plus Gaussian jitter per channel (float64 RGB, clipped to 0..255)."""
    return np.clip(np.asarray(palette[rng.integers(len(palette))], np.float64)
                   + rng.normal(0, jitter, 3), 0, 255)
