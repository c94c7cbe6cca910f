"""Datasets in SageMaker's layout (with label maps), Cityscapes and CamVid (SegNet's 11 classes).

Every file problem raises ``DatasetError`` naming the file: a missing label, an unreadable
image, a label of the wrong size or with more than one channel, or a label value that is
neither a class id nor 255 (ignore).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from seg_node.model.classes import CAMVID, CITYSCAPES, ClassTable, default_class_table
from seg_node.model.labels import (
    CAMVID_CLASSES,
    CAMVID_VOID,
    CITYSCAPES_ID_TO_TRAIN_ID,
    IGNORE_INDEX,
)

__all__ = ['FORMATS', 'ClassTable', 'DatasetError', 'SegmentationFiles', 'class_table', 'get_dataset']

FORMATS = ('sagemaker', 'cityscapes', 'camvid')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
# Split names per layout: (training split, validation split).
SPLITS = {'sagemaker': ('train', 'validation'), 'cityscapes': ('train', 'val'), 'camvid': ('train', 'val')}
_INVALID = -1  # label-map entry for raw values that are an error


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file."""


def class_table(fmt: str, num_classes: int | None) -> ClassTable:
    """The class table of a layout; SageMaker data uses Cityscapes' for 19 classes, else generated."""
    if fmt == 'cityscapes':
        return CITYSCAPES
    if fmt == 'camvid':
        return CAMVID
    if not num_classes:
        msg = 'num_classes is required for a SageMaker-layout dataset'
        raise DatasetError(msg)
    return default_class_table(num_classes)


def _identity_map(num_classes: int) -> np.ndarray:
    table = np.full(256, _INVALID, np.int16)
    table[:num_classes] = np.arange(num_classes)
    table[IGNORE_INDEX] = IGNORE_INDEX
    return table


def sagemaker_label_map(path: Path, num_classes: int) -> np.ndarray:
    """Raw label value -> class id from ``{"scale": "3"}`` or ``{"map": {"0": 5, ...}}``.

    Raw values a ``map`` does not list are ignored (255); with a scale, a value whose class is
    out of range is an error.
    """
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        msg = f'cannot read label map {path}: {err}'
        raise DatasetError(msg) from None
    table = np.full(256, IGNORE_INDEX, np.int16)
    if isinstance(spec, dict) and 'map' in spec and isinstance(spec['map'], dict):
        for raw, cls in spec['map'].items():
            if not (str(raw).isdigit() and 0 <= int(raw) <= 255 and isinstance(cls, int)
                    and (0 <= cls < num_classes or cls == IGNORE_INDEX)):
                msg = (f'label map {path}: entry {raw!r}: {cls!r} is not value 0..255 -> '
                       f'class 0..{num_classes - 1}')
                raise DatasetError(msg)
            table[int(raw)] = cls
        return table
    if isinstance(spec, dict) and 'scale' in spec:
        try:
            scale = int(spec['scale'])
        except (TypeError, ValueError):
            scale = 0
        if scale < 1:
            msg = f'label map {path}: scale must be a positive integer, got {spec["scale"]!r}'
            raise DatasetError(msg)
        values = np.arange(256) // scale
        table = np.where(values < num_classes, values, _INVALID).astype(np.int16)
        table[IGNORE_INDEX] = IGNORE_INDEX
        return table
    msg = f'label map {path} must hold {{"scale": N}} or {{"map": {{...}}}}'
    raise DatasetError(msg)


class SegmentationFiles:
    """(image, label) file pairs read as uint8 RGB and class-id maps, then ``transform``-ed."""

    def __init__(self, pairs: list[tuple[Path, Path]], label_map: np.ndarray,
                 transform: Callable | None = None) -> None:
        self.pairs, self.label_map, self.transform = pairs, label_map, transform

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Load pair ``index`` as (RGB uint8 HxWx3, class ids uint8 HxW), checked."""
        image_path, label_path = self.pairs[index]
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            msg = f'cannot read image {image_path} (missing, unreadable or not an image)'
            raise DatasetError(msg)
        raw = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            msg = f'cannot read label {label_path} (missing, unreadable or not an image)'
            raise DatasetError(msg)
        if raw.ndim != 2 or raw.dtype != np.uint8:
            msg = (f'label {label_path} must be a single-channel 8-bit PNG, got shape {raw.shape} '
                   f'{raw.dtype}')
            raise DatasetError(msg)
        if raw.shape != image.shape[:2]:
            msg = f'label {label_path} is {raw.shape[1]}x{raw.shape[0]} but image {image_path} is ' \
                  f'{image.shape[1]}x{image.shape[0]}'
            raise DatasetError(msg)
        label = self.label_map[raw]
        if (label == _INVALID).any():
            bad = np.unique(raw[label == _INVALID])
            valid = int((self.label_map[:255] >= 0).sum())
            msg = (f'label {label_path} has values {bad[:10].tolist()} that are neither a class id '
                   f'(0..{valid - 1}) nor {IGNORE_INDEX} (ignore)')
            raise DatasetError(msg)
        return np.ascontiguousarray(image[..., ::-1]), label.astype(np.uint8)

    def class_frequencies(self, num_classes: int) -> np.ndarray:
        """Per class: its pixels / pixels of the images it appears in (SegNet's frequency)."""
        pixels, image_pixels = np.zeros(num_classes), np.zeros(num_classes)
        for index in range(len(self)):
            _, label = self.read(index)
            counts = np.bincount(label[label != IGNORE_INDEX], minlength=num_classes)[:num_classes]
            pixels += counts
            image_pixels += (counts > 0) * label.size
        return np.divide(pixels, image_pixels, out=np.zeros(num_classes), where=image_pixels > 0)

    def __getitem__(self, index: int) -> tuple[object, object]:
        image, label = self.read(index)
        return self.transform(image, label) if self.transform else (image, label)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        msg = f'dataset folder {folder} does not exist'
        raise DatasetError(msg)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        msg = f'dataset folder {folder} holds no images ({", ".join(IMAGE_EXTENSIONS)})'
        raise DatasetError(msg)
    return files


def _paired(images: list[Path], label_for: Callable[[Path], Path]) -> list[tuple[Path, Path]]:
    pairs = []
    for image in images:
        label = label_for(image)
        if not label.is_file():
            msg = f'image {image} has no label: expected {label}'
            raise DatasetError(msg)
        pairs.append((image, label))
    return pairs


def sagemaker_files(root: Path, split: str, num_classes: int) -> tuple[list[tuple[Path, Path]], np.ndarray]:
    """Pairs and label map of channel ``split`` ('train' or 'validation')."""
    annotations = root / f'{split}_annotation'
    pairs = _paired(_images(root / split), lambda p: annotations / f'{p.stem}.png')
    map_file = root / 'label_map' / f'{split}_label_map.json'
    table = sagemaker_label_map(map_file, num_classes) if map_file.is_file() else _identity_map(num_classes)
    return pairs, table


def cityscapes_files(root: Path, split: str) -> tuple[list[tuple[Path, Path]], np.ndarray]:
    """``leftImg8bit/{split}/*/*_leftImg8bit.png`` with their ``gtFine`` label ids."""
    image_root = root / 'leftImg8bit' / split
    images = sorted(image_root.glob('*/*_leftImg8bit.png'))
    if not images:
        msg = f'no Cityscapes images under {image_root}/*/*_leftImg8bit.png'
        raise DatasetError(msg)

    def label_for(p: Path) -> Path:
        stem = p.name[:-len('_leftImg8bit.png')]
        return root / 'gtFine' / split / p.parent.name / f'{stem}_gtFine_labelIds.png'

    table = np.full(256, _INVALID, np.int16)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return _paired(images, label_for), table


def camvid_files(root: Path, split: str) -> tuple[list[tuple[Path, Path]], np.ndarray]:
    """SegNet's CamVid: ``{split}/`` images and ``{split}annot/`` labels, 11 = void."""
    table = _identity_map(len(CAMVID_CLASSES))
    table[CAMVID_VOID] = IGNORE_INDEX
    return _paired(_images(root / split), lambda p: root / f'{split}annot' / f'{p.stem}.png'), table


def get_dataset(root: str | Path, *, fmt: str = 'sagemaker', split: str = 'train',
                num_classes: int | None = None, transform: Callable | None = None) -> SegmentationFiles:
    """Dataset of one split; ``split`` is 'train' or 'validation' in every layout."""
    root = Path(root)
    if fmt not in FORMATS:
        msg = f'format must be one of {FORMATS}, got {fmt!r}'
        raise DatasetError(msg)
    name = SPLITS[fmt][0 if split == 'train' else 1]
    if fmt == 'cityscapes':
        pairs, table = cityscapes_files(root, name)
    elif fmt == 'camvid':
        pairs, table = camvid_files(root, name)
    else:
        pairs, table = sagemaker_files(root, name, len(class_table(fmt, num_classes).names))
    return SegmentationFiles(pairs, table, transform)
