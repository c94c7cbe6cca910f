"""Resizing frames and class masks the one way every part of seg_node does it."""

from __future__ import annotations

import cv2
import numpy as np


def resize_image(image: np.ndarray, size: tuple[int, int], dst: np.ndarray | None = None) -> np.ndarray:
    """Resize an RGB frame to (H, W): area averaging when shrinking, bilinear when growing."""
    h, w = size
    if image.shape[0] == h and image.shape[1] == w:
        if dst is None:
            return image
        dst[...] = image
        return dst
    shrinking = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), dst=dst,
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_nearest(mask: np.ndarray, size: tuple[int, int], dst: np.ndarray | None = None) -> np.ndarray:
    """Resize a class mask to (H, W) with nearest neighbour, which never invents classes."""
    h, w = size
    if mask.shape[0] == h and mask.shape[1] == w:
        if dst is None:
            return mask
        dst[...] = mask
        return dst
    if dst is not None and h == w == 1:
        # OpenCV 4.5 (Humble) refuses a 1x1 multi-channel dst (_step >= minstep); nearest takes pixel (0, 0).
        dst[...] = mask[:1, :1]
        return dst
    return cv2.resize(mask, (w, h), dst=dst, interpolation=cv2.INTER_NEAREST)
