"""Synthetic datasets written in the layouts of SageMaker, Cityscapes and CamVid (SegNet).

Each split is its own run of ``dataset_frame``: training uses split seed ``2 * seed`` and
validation ``2 * seed + 1``, so the two never share a drive.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from seg_node.model.labels import TRAIN_ID_TO_CAMVID, TRAIN_ID_TO_CITYSCAPES_ID, lookup_table
from seg_node.synthetic.classes import IGNORE
from seg_node.synthetic.drive import dataset_frame

__all__ = ['write_camvid_dataset', 'write_cityscapes_dataset', 'write_sagemaker_dataset']


def _frames(n: int, seed: int, width: int, height: int,
            cameras: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i in range(n):
        yield dataset_frame(seed, i, width=width, height=height, cameras=cameras)


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = image[..., ::-1] if image.ndim == 3 else image
    if not cv2.imwrite(str(path), np.ascontiguousarray(data)):
        msg = f'could not write {path}'
        raise OSError(msg)


def write_sagemaker_dataset(root: str | Path, *, n_train: int, n_val: int, seed: int = 0, width: int = 320,
                            height: int = 160, cameras: int = 3, image_ext: str = 'jpg') -> Path:
    """Write SageMaker's layout: train/, train_annotation/, validation/, validation_annotation/.

    Split seeds: ``2 * seed`` for training and ``2 * seed + 1`` for validation (``dataset_frame``).
    """
    root = Path(root)
    for split, n, s in (('train', n_train, seed * 2), ('validation', n_val, seed * 2 + 1)):
        for i, (rgb, label) in enumerate(_frames(n, s, width, height, cameras)):
            _write(root / split / f'frame_{i:05d}.{image_ext}', rgb)
            _write(root / f'{split}_annotation' / f'frame_{i:05d}.png', label)
    return root


def write_cityscapes_dataset(root: str | Path, *, n_train: int, n_val: int, seed: int = 0, width: int = 320,
                             height: int = 160, cameras: int = 3, city: str = 'synthcity') -> Path:
    """Write Cityscapes' layout: leftImg8bit/{split}/{city}/ and gtFine/ ``*_labelIds.png`` (label ids)."""
    to_ids = lookup_table(TRAIN_ID_TO_CITYSCAPES_ID, default=0)
    to_ids[IGNORE] = 1  # the only ignored thing we draw is the ego vehicle
    root = Path(root)
    for split, n, s in (('train', n_train, seed * 2), ('val', n_val, seed * 2 + 1)):
        for i, (rgb, label) in enumerate(_frames(n, s, width, height, cameras)):
            stem = f'{city}_{i // 30:06d}_{i % 30:06d}'
            _write(root / 'leftImg8bit' / split / city / f'{stem}_leftImg8bit.png', rgb)
            _write(root / 'gtFine' / split / city / f'{stem}_gtFine_labelIds.png', to_ids[label])
    return root


def write_camvid_dataset(root: str | Path, *, n_train: int, n_val: int, seed: int = 0, width: int = 320,
                         height: int = 160, cameras: int = 3) -> Path:
    """Write SegNet's CamVid layout: train/, trainannot/, val/, valannot/ (11 classes, 11 = void)."""
    to_camvid = lookup_table(TRAIN_ID_TO_CAMVID, default=11)
    root = Path(root)
    for split, n, s in (('train', n_train, seed * 2), ('val', n_val, seed * 2 + 1)):
        for i, (rgb, label) in enumerate(_frames(n, s, width, height, cameras)):
            _write(root / split / f'frame_{i:05d}.png', rgb)
            _write(root / f'{split}annot' / f'frame_{i:05d}.png', to_camvid[label])
    return root
