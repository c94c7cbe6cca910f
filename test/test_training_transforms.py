"""Training augmentation keeps image and label aligned; evaluation resizes like the engine."""

import numpy as np
import pytest
import torch

from seg_node.runtime.render import resize_image
from seg_node.training.transforms import SegmentationPresetEval, SegmentationPresetTrain, to_normalized_tensor

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


def _striped(h=40, w=80):
    label = (np.arange(w)[None, :].repeat(h, 0) * 3 // w).astype(np.uint8)  # three vertical bands
    return COLOURS[label], label


@pytest.mark.parametrize('seed', range(4))
def test_train_preset_keeps_image_and_label_aligned(seed):
    torch.manual_seed(seed)
    image, label = _striped()
    preset = SegmentationPresetTrain(base_size=80, crop_size=48, mean=(0, 0, 0), std=(1, 1, 1))
    x, y = preset(image, label)
    assert x.shape == (3, 48, 48)
    assert y.shape == (48, 48)
    assert y.dtype == torch.int64
    valid = y != 255
    # Away from band edges, each pixel's colour still names its label.
    colour_class = x.argmax(0)
    inner = valid & (x.max(0).values > 0.9)
    assert (colour_class[inner] == y[inner]).float().mean() > 0.99
    # Padding (scale < 1 can make the image smaller than the crop) is ignore, and black.
    assert torch.all(x[:, ~valid] == 0)


def test_train_preset_pads_with_ignore_when_image_is_small():
    torch.manual_seed(0)
    image, label = _striped(8, 16)
    preset = SegmentationPresetTrain(base_size=16, crop_size=64, min_scale=1.0, max_scale=1.0)
    _, y = preset(image, label)
    assert (y == 255).sum() == 64 * 64 - 8 * 16


def test_wide_crop_keeps_a_whole_wide_frame():
    # At scale 1 a 2:1 frame fits a crop_height x crop_size crop exactly: nothing cut, nothing padded.
    image, label = _striped(40, 80)
    preset = SegmentationPresetTrain(base_size=80, crop_size=80, crop_height=40, min_scale=1.0, max_scale=1.0,
                                     mean=(0, 0, 0), std=(1, 1, 1))
    x, y = preset(image, label)
    assert x.shape == (3, 40, 80)
    unflipped, flipped = torch.from_numpy(label).long(), torch.from_numpy(label[:, ::-1].copy()).long()
    assert torch.equal(y, unflipped) or torch.equal(y, flipped)


def test_eval_preset_matches_engine_preprocessing():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    label = rng.integers(0, 3, (50, 70)).astype(np.uint8)
    x, y = SegmentationPresetEval(size=(24, 32))(image, label)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (resize_image(image, (24, 32)).astype(np.float32) / 255 - mean) / std
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    assert y is label


def test_normalization_is_the_contract_formula():
    image = np.full((1, 1, 3), 255, np.uint8)
    x = to_normalized_tensor(image, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert x.flatten().tolist() == pytest.approx([2.0, 1.0, 0.5])
