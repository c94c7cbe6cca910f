"""Rendering shared by the node, the bag tools and evaluation: colour masks, overlays, resizing.

Functions write into a destination array when one is given, so the node can render straight
into the buffers of its outgoing messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from seg_node.runtime.resize import resize_image, resize_nearest
from seg_node.runtime.results import Segmentation

__all__ = [
    'MASK_AT_INPUT', 'MASK_AT_MODEL', 'RenderedOutputs', 'blend', 'colorize', 'palette_lut',
    'render_outputs', 'resize_image', 'resize_nearest', 'scaled_size',
]

MASK_AT_INPUT = 'input'
MASK_AT_MODEL = 'model'

# Gives the array an output is rendered into: (output name, shape) -> uint8 array.
BufferFactory = Callable[[str, tuple[int, ...]], np.ndarray]


def _alloc(_name: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.empty(shape, np.uint8)


def palette_lut(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """A 256-entry RGB lookup table; ids without a colour (e.g. 255) map to black."""
    lut = np.zeros((256, 1, 3), np.uint8)
    lut[:len(palette), 0, :] = np.asarray(palette, np.uint8).reshape(-1, 3)
    return lut


def colorize(mask: np.ndarray, lut: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    """RGB colour image of a class mask, through a ``palette_lut``."""
    # cv2.LUT maps channel-wise, so the ids are first replicated to 3 channels.
    return cv2.LUT(cv2.merge((mask, mask, mask)), lut, dst=dst)


def blend(image: np.ndarray, color: np.ndarray, alpha: float, dst: np.ndarray | None = None) -> np.ndarray:
    """``(1 - alpha) * image + alpha * color``, rounded, as uint8 RGB."""
    return cv2.addWeighted(image, 1.0 - alpha, color, alpha, 0.0, dst=dst)


@dataclass
class RenderedOutputs:
    """Per-frame outputs; an output that was not asked for is None."""

    class_mask: np.ndarray | None = None
    color_mask: np.ndarray | None = None
    overlay: np.ndarray | None = None
    confidence: np.ndarray | None = None

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """(output name, array) of every rendered output, in the order of ``msg.topics.OUTPUTS``."""
        for name, array in (('mask', self.class_mask), ('color_mask', self.color_mask),
                            ('overlay', self.overlay), ('confidence', self.confidence)):
            if array is not None:
                yield name, array


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(H, W) of ``size`` times ``scale``, rounded, at least one pixel each."""
    if scale == 1.0:
        return size
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def render_outputs(image: np.ndarray, result: Segmentation, lut: np.ndarray, *,
                   outputs: set[str], overlay_alpha: float = 0.5,
                   mask_resolution: str = MASK_AT_INPUT,
                   visualization_scale: float = 1.0,
                   buffer: BufferFactory = _alloc) -> RenderedOutputs:
    """Render the requested ``outputs`` (mask, color_mask, overlay, confidence) of one frame.

    The mask and confidence are at the input's size (``mask_resolution='input'``) or the
    model's; the colour mask and overlay at ``visualization_scale`` times the input's size.
    """
    image_size = (image.shape[0], image.shape[1])
    model_mask = result.class_mask
    model_size = model_mask.shape[:2]
    mask_size = image_size if mask_resolution == MASK_AT_INPUT else model_size
    view_size = scaled_size(image_size, visualization_scale)
    rendered = RenderedOutputs()
    if 'mask' in outputs:
        rendered.class_mask = resize_nearest(model_mask, mask_size, dst=buffer('mask', mask_size))
    if 'color_mask' in outputs or 'overlay' in outputs:
        # Colour at model resolution, then upsample: nearest resizing commutes with the lookup,
        # and the lookup touches (input / model)^2 times fewer pixels.
        color_dst = buffer('color_mask', (*view_size, 3)) if 'color_mask' in outputs else None
        at_model = view_size == model_size
        small = colorize(model_mask, lut, dst=color_dst if at_model else None)
        colored = small if at_model else None
        if color_dst is not None:
            rendered.color_mask = colored = small if at_model else resize_nearest(small, view_size, dst=color_dst)
        if 'overlay' in outputs:
            overlay = buffer('overlay', (*view_size, 3))
            if colored is None:
                # Upsample straight into the overlay buffer and blend in place: no temporary.
                colored = resize_nearest(small, view_size, dst=overlay)
            camera = image if view_size == image_size else resize_image(image, view_size)
            rendered.overlay = blend(camera, colored, overlay_alpha, dst=overlay)
    if 'confidence' in outputs and result.confidence is not None:
        rendered.confidence = cv2.resize(result.confidence, (mask_size[1], mask_size[0]),
                                         dst=buffer('confidence', mask_size),
                                         interpolation=cv2.INTER_LINEAR)
    return rendered
