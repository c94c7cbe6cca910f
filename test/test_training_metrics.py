"""Confusion-matrix metrics against hand-computed answers and an independent implementation."""

import math

import numpy as np
import pytest

from seg_node.runtime.metrics import ConfusionMatrix


def test_hand_computed_case():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    m = ConfusionMatrix(3)
    m.update(target, pred)
    assert m.mat.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    result = m.compute()
    # class 0: tp 1, union 2; class 1: tp 2, union 3; class 2: tp 1, union 1
    assert result.iou == pytest.approx((1 / 2, 2 / 3, 1.0))
    assert result.mean_iou == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert result.pixel_accuracy == pytest.approx(4 / 5)  # the 255 pixel is not counted
    assert result.pixels == 5
    assert result.as_dict() == {'validation:mIOU': result.mean_iou, 'validation:pixel_accuracy': 0.8}


def test_class_absent_everywhere_is_nan_and_skipped():
    m = ConfusionMatrix(4)
    m.update(np.array([0, 0, 1]), np.array([0, 1, 1]))
    result = m.compute()
    assert math.isnan(result.iou[2])
    assert math.isnan(result.iou[3])
    assert result.mean_iou == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_predicted_but_absent_class_counts_as_zero():
    m = ConfusionMatrix(3)
    m.update(np.array([0, 0]), np.array([0, 2]))
    assert m.compute().iou == pytest.approx((0.5, math.nan, 0.0), nan_ok=True)


def test_accumulates_over_batches_not_per_image_mean():
    m = ConfusionMatrix(2)
    m.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0]))  # image IoU for 0 = 1
    m.update(np.array([0, 1]), np.array([1, 1]))
    # dataset-level: class 0 tp 4, union 5; class 1 tp 1, union 2
    assert m.compute().iou == pytest.approx((4 / 5, 1 / 2))


def _reference_iou(target, pred, n):
    """Independent implementation: boolean masks per class."""
    valid = target != 255
    ious = []
    for c in range(n):
        t, p = (target == c) & valid, (pred == c) & valid
        union = (t | p).sum()
        ious.append((t & p).sum() / union if union else np.nan)
    return np.array(ious), (target == pred)[valid].mean()


@pytest.mark.parametrize('seed', range(5))
def test_matches_independent_implementation(seed):
    rng = np.random.default_rng(seed)
    n = 7
    target = rng.integers(0, n, (3, 40, 50))
    target[rng.random(target.shape) < 0.1] = 255
    noise = rng.integers(0, n, target.shape)
    pred = np.where(rng.random(target.shape) < 0.6, np.where(target == 255, 0, target), noise)
    m = ConfusionMatrix(n)
    for t, p in zip(target, pred, strict=True):
        m.update(t.astype(np.uint8), p.astype(np.uint8))
    ious, acc = _reference_iou(target, pred, n)
    result = m.compute()
    np.testing.assert_allclose(result.iou, ious)
    assert result.mean_iou == pytest.approx(np.nanmean(ious))
    assert result.pixel_accuracy == pytest.approx(acc)


def test_rejects_bad_values_and_shapes():
    m = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r'label values must be 0\.\.2 or 255'):
        m.update(np.array([0, 7]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r'predicted class ids must be 0\.\.2'):
        m.update(np.array([0, 1]), np.array([0, 3]))
    with pytest.raises(ValueError, match='differ in shape'):
        m.update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_table_lists_every_class():
    m = ConfusionMatrix(3)
    m.update(np.array([0, 1]), np.array([0, 1]))
    lines = m.table(['road', 'car', 'sky']).splitlines()
    assert lines[1].split() == ['road', '1.0000', '1']
    assert lines[3].split() == ['sky', '-', '0']
