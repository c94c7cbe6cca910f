"""Confusion-matrix metrics: mIoU, pixel accuracy and per-class IoU (ignore label excluded).

numpy only, so evaluating an ONNX model needs no torch. The matrix is accumulated over the
whole dataset (not averaged per image), as Cityscapes, mmseg and SageMaker report it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seg_node.model.labels import IGNORE_INDEX

__all__ = ['ConfusionMatrix', 'SegmentationMetrics']


@dataclass(frozen=True)
class SegmentationMetrics:
    """Scores from one confusion matrix; IoU is NaN for a class absent from labels and predictions."""

    mean_iou: float
    pixel_accuracy: float
    iou: tuple[float, ...]
    pixels: int

    def as_dict(self, prefix: str = 'validation') -> dict[str, float]:
        """SageMaker's metric names (``validation:mIOU``, ``validation:pixel_accuracy``)."""
        return {f'{prefix}:mIOU': self.mean_iou, f'{prefix}:pixel_accuracy': self.pixel_accuracy}


class ConfusionMatrix:
    """``mat[true, predicted]`` pixel counts, filled with one bincount per update."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = np.zeros((num_classes, num_classes), np.int64)

    def update(self, target: np.ndarray, prediction: np.ndarray) -> None:
        """Add a batch of label maps and predicted class maps of the same shape."""
        target, prediction = np.asarray(target), np.asarray(prediction)
        if target.shape != prediction.shape:
            msg = f'labels {target.shape} and predictions {prediction.shape} differ in shape'
            raise ValueError(msg)
        keep = target != self.ignore_index
        t = target[keep].astype(np.int64)
        p = prediction[keep].astype(np.int64)
        n = self.num_classes
        if t.size and (t.min() < 0 or t.max() >= n):
            msg = f'label values must be 0..{n - 1} or {self.ignore_index}, found {t.min()}..{t.max()}'
            raise ValueError(msg)
        if p.size and (p.min() < 0 or p.max() >= n):
            msg = f'predicted class ids must be 0..{n - 1}, found {p.min()}..{p.max()}'
            raise ValueError(msg)
        self.mat += np.bincount(n * t + p, minlength=n * n).reshape(n, n)

    def merge(self, other: np.ndarray) -> None:
        """Add counts from another matrix (e.g. another process)."""
        self.mat += other

    def compute(self) -> SegmentationMetrics:
        """Mean IoU (over classes seen in labels or predictions), pixel accuracy, per-class IoU."""
        mat = self.mat.astype(np.float64)
        tp = np.diag(mat)
        union = mat.sum(0) + mat.sum(1) - tp
        with np.errstate(invalid='ignore', divide='ignore'):
            iou = np.where(union > 0, tp / union, np.nan)
        total = mat.sum()
        seen = ~np.isnan(iou)
        mean_iou = float(iou[seen].mean()) if seen.any() else float('nan')
        accuracy = float(tp.sum() / total) if total else float('nan')
        return SegmentationMetrics(mean_iou, accuracy, tuple(float(v) for v in iou), int(total))

    def table(self, classes: tuple[str, ...] | list[str]) -> str:
        """Per-class IoU table (one line per class), classes never seen shown as '-'."""
        metrics = self.compute()
        width = max(len(c) for c in classes)
        lines = [f'{"class":<{width}}  IoU     pixels']
        for name, iou, count in zip(classes, metrics.iou, self.mat.sum(1), strict=True):
            shown = '-' if np.isnan(iou) else f'{iou:.4f}'
            lines.append(f'{name:<{width}}  {shown:<6}  {count}')
        return '\n'.join(lines)
