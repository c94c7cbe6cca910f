"""Colour lookup, nearest resizing, overlay blending and the shared output renderer."""

import numpy as np
import pytest

from seg_node.model.classes import CITYSCAPES_PALETTE
from seg_node.runtime.engine import Segmentation
from seg_node.runtime.render import blend, colorize, palette_lut, render_outputs, resize_image, resize_nearest

RNG = np.random.default_rng(3)
PALETTE = np.asarray(CITYSCAPES_PALETTE, np.uint8)


def test_colorize_is_palette_indexing_and_unknown_ids_are_black():
    mask = RNG.integers(0, 19, (33, 47), dtype=np.uint8)
    mask[0, :5] = 255
    colour = colorize(mask, palette_lut(CITYSCAPES_PALETTE))
    np.testing.assert_array_equal(colour[1:], PALETTE[mask[1:]])
    assert not colour[0, :5].any()


@pytest.mark.parametrize('size', [(10, 13), (64, 91), (200, 150)])
def test_nearest_resize_never_invents_classes(size):
    mask = RNG.integers(0, 5, (37, 29), dtype=np.uint8) * 40  # ids 0, 40, ..., 160
    out = resize_nearest(mask, size)
    assert out.shape == size
    assert set(np.unique(out)) <= set(np.unique(mask))


@pytest.mark.parametrize('factor', [2, 4])
def test_shrinking_an_image_averages_each_block(factor):
    # The overlay expectations below (and in the node tests) use resize_image itself; this pins it to
    # an independent answer: an exact shrink by k is the mean of each k x k block (to rounding).
    image = RNG.integers(0, 256, (12 * factor, 16 * factor, 3), dtype=np.uint8)
    means = image.reshape(12, factor, 16, factor, 3).mean(axis=(1, 3))
    for out in (resize_image(image, (12, 16)), resize_image(image, (12, 16), dst=np.empty((12, 16, 3), np.uint8))):
        assert out.shape == (12, 16, 3) and out.dtype == np.uint8
        assert np.abs(out - means).max() <= 0.5


def test_blend_weights_image_and_colour():
    image = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    colour = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    expected = 0.3 * colour + 0.7 * image
    assert np.abs(blend(image, colour, 0.3).astype(float) - expected).max() <= 0.5 + 1e-6


@pytest.mark.parametrize('resolution', ['input', 'model'])
def test_render_outputs_at_either_mask_resolution(resolution):
    image = RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    small = RNG.integers(0, 19, (15, 20), dtype=np.uint8)
    confidence = RNG.integers(0, 256, (15, 20), dtype=np.uint8)
    out = render_outputs(image, Segmentation(small, confidence), palette_lut(CITYSCAPES_PALETTE),
                         outputs={'mask', 'color_mask', 'overlay', 'confidence'},
                         overlay_alpha=0.5, mask_resolution=resolution)
    full = resize_nearest(small, (60, 80))
    expected_mask = full if resolution == 'input' else small
    np.testing.assert_array_equal(out.class_mask, expected_mask)
    # Colouring before or after the nearest upsample gives the same image; the visualizations
    # follow visualization_scale (1.0 by default), not the mask's resolution.
    np.testing.assert_array_equal(out.color_mask, PALETTE[full])
    assert out.overlay.shape == image.shape
    np.testing.assert_array_equal(out.overlay, blend(image, PALETTE[full], 0.5))
    assert out.confidence.shape == expected_mask.shape


def recording_buffer(fill: int | None = None) -> tuple[dict, object]:
    """A render buffer factory that keeps every buffer it hands out, by output name."""
    given = {}

    def buffer(name, shape):
        given[name] = np.empty(shape, np.uint8) if fill is None else np.full(shape, fill, np.uint8)
        return given[name]
    return given, buffer


@pytest.mark.parametrize('mask_resolution', ['input', 'model'])
def test_visualizations_at_the_models_size(mask_resolution):
    image = RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    small = RNG.integers(0, 19, (15, 20), dtype=np.uint8)
    given, buffer = recording_buffer()
    out = render_outputs(image, Segmentation(small, None), palette_lut(CITYSCAPES_PALETTE),
                         outputs={'mask', 'color_mask', 'overlay'}, overlay_alpha=0.25,
                         mask_resolution=mask_resolution, visualization_scale=0.25, buffer=buffer)
    np.testing.assert_array_equal(out.color_mask, PALETTE[small])
    # The camera image is shrunk (area averaging) to the model's size and blended there.
    np.testing.assert_array_equal(out.overlay, blend(resize_image(image, (15, 20)), PALETTE[small], 0.25))
    expected_mask = resize_nearest(small, (60, 80)) if mask_resolution == 'input' else small
    np.testing.assert_array_equal(out.class_mask, expected_mask)
    # Every output is rendered into its own buffer, none through a temporary of its size.
    assert all(getattr(out, attr) is given[name] for attr, name in
               (('class_mask', 'mask'), ('color_mask', 'color_mask'), ('overlay', 'overlay')))


@pytest.mark.parametrize(('scale', 'size'), [(0.5, (30, 40)), (0.1, (6, 8)), (0.01, (1, 1))])
def test_visualizations_at_a_scale_between_model_and_input(scale, size):
    image = RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    small = RNG.integers(0, 19, (15, 20), dtype=np.uint8)
    out = render_outputs(image, Segmentation(small, None), palette_lut(CITYSCAPES_PALETTE),
                         outputs={'color_mask', 'overlay'}, visualization_scale=scale)
    colours = PALETTE[resize_nearest(small, size)]
    np.testing.assert_array_equal(out.color_mask, colours)
    np.testing.assert_array_equal(out.overlay, blend(resize_image(image, size), colours, 0.5))


def test_overlay_alone_at_input_resolution_needs_no_colour_buffer():
    image = RNG.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    small = RNG.integers(0, 19, (15, 20), dtype=np.uint8)
    given, buffer = recording_buffer()
    out = render_outputs(image, Segmentation(small, None), palette_lut(CITYSCAPES_PALETTE),
                         outputs={'overlay'}, buffer=buffer)
    assert set(given) == {'overlay'} and out.overlay is given['overlay']
    np.testing.assert_array_equal(out.overlay, blend(image, PALETTE[resize_nearest(small, (60, 80))], 0.5))


def test_only_requested_outputs_are_rendered_into_given_buffers():
    image = np.zeros((20, 30, 3), np.uint8)
    given, buffer = recording_buffer(fill=7)
    out = render_outputs(image, Segmentation(np.ones((20, 30), np.uint8), None),
                         palette_lut(CITYSCAPES_PALETTE), outputs={'mask'}, buffer=buffer)
    assert out.color_mask is None and out.overlay is None and out.confidence is None
    assert set(given) == {'mask'}
    assert out.class_mask is given['mask'] and (given['mask'] == 1).all()
