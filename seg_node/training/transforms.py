"""Paired image/label transforms: SageMaker's default augmentation and the evaluation preset.

Training: the long side is rescaled to ``base_size`` x U(min_scale, max_scale), then a random
square ``crop_size`` crop (or ``crop_height`` x ``crop_size`` for wide frames; padded with the
ignore label), a horizontal flip and optional
photometric jitter. Evaluation resizes the frame exactly as the node's engine does, so mIoU in
training and in ``seg_eval`` is the same measurement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF  # noqa: N812 - torchvision's alias

from seg_node.model.contract import IMAGENET_MEAN, IMAGENET_STD
from seg_node.model.labels import IGNORE_INDEX
from seg_node.runtime.render import resize_image

__all__ = ['SegmentationPresetEval', 'SegmentationPresetTrain', 'to_normalized_tensor']


def to_normalized_tensor(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                         std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 HxWx3 RGB -> float32 3xHxW, ``(pixel / 255 - mean) / std`` (the model contract)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return TF.normalize(x, list(mean), list(std))


class SegmentationPresetTrain:
    """SageMaker's augmentation: random long-side rescale, square crop, flip (+ jitter)."""

    def __init__(self, *, base_size: int, crop_size: int, crop_height: int = 0, min_scale: float = 0.5,
                 max_scale: float = 2.0, color_jitter: float = 0.0, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.base_size, self.min_scale, self.max_scale = base_size, min_scale, max_scale
        self.crop = v2.RandomCrop((crop_height or crop_size, crop_size), pad_if_needed=True,
                                  fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX})
        steps: list[v2.Transform] = [v2.RandomHorizontalFlip()]
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter,
                                        saturation=color_jitter, hue=min(color_jitter / 4, 0.5)))
        steps += [v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
                  v2.Normalize(list(mean), list(std))]
        self.rest = v2.Compose(steps)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one uint8 RGB image and its label map; return (float 3xHxW, int64 HxW)."""
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(label)))
        scale = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(()).item()
        h, w = label.shape
        ratio = self.base_size * scale / max(h, w)
        size = [max(round(h * ratio), 1), max(round(w * ratio), 1)]
        img = TF.resize(img, size, antialias=True)
        mask = TF.resize(mask, size, interpolation=v2.InterpolationMode.NEAREST)
        img, mask = self.crop(img, mask)
        img, mask = self.rest(img, mask)
        return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class SegmentationPresetEval:
    """Resize the frame to the model's input size as the engine does; keep the full-size label."""

    def __init__(self, *, size: Sequence[int] | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.size = (int(size[0]), int(size[1])) if size else None
        self.mean, self.std = mean, std

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Return (normalized float 3xhxw at the input size, uint8 HxW label untouched)."""
        return self.image(image), label

    def image(self, image: np.ndarray) -> torch.Tensor:
        """The model input for one uint8 RGB frame: resized to the input size, normalized."""
        if self.size is not None:
            image = resize_image(image, self.size)
        return to_normalized_tensor(image, self.mean, self.std)
