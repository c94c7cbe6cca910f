"""Datasets in SageMaker's layout (with label maps), Cityscapes and CamVid (SegNet's 11 classes).

Labels are single-channel 8-bit PNGs, grayscale or indexed (palette): an indexed PNG's class id
is its palette index. SageMaker label maps are read as AWS documents them: ``{"scale": "3"}``
divides (rounding down), ``{"map": {"0": 5}}`` says class 0 is encoded as pixel value 5.

Every file problem raises ``DatasetError`` naming the file: a missing label, an unreadable
image, a label of the wrong size or with more than one channel, or a label value that is
neither a class id nor 255 (ignore).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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
from seg_node.training.png import read_label_image

__all__ = ['FORMATS', 'MAP_KEYS', 'ClassTable', 'DatasetError', 'LabelMap', 'SegmentationFiles', 'class_table',
           'get_dataset', 'read_label_map']

FORMATS = ('sagemaker', 'cityscapes', 'camvid')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
# Split names per layout: (training split, validation split).
SPLITS = {'sagemaker': ('train', 'validation'), 'cityscapes': ('train', 'val'), 'camvid': ('train', 'val')}
_INVALID = -1  # label-map entry for raw values that are an error
# How a {"map": ...} label map is read: key = class id (AWS, the default) or key = pixel value.
MAP_KEYS = ('class', 'pixel_value')


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


def _integer(value: object) -> int | None:
    """An int, or a string of digits (label maps write numbers both ways); None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


@dataclass(frozen=True)
class LabelMap:
    """Raw label value -> class id (255 ignore, -1 an error), and what a valid raw value is."""

    table: np.ndarray
    allowed: str  # completes "values ... that are neither {allowed} nor 255 (ignore)"
    note: str = ''  # how the file was read, for the training log


def _class_keyed_map(path: Path, entries: dict, num_classes: int) -> LabelMap:
    """AWS's reading: key = class id, value = the pixel value that encodes it; other values are errors."""
    table = np.full(256, _INVALID, np.int16)
    table[IGNORE_INDEX] = IGNORE_INDEX
    owner: dict[int, int] = {}
    for key, value in entries.items():
        cls, pixel = _integer(key), _integer(value)
        if cls is None or not 0 <= cls < num_classes:
            msg = (f'label map {path}: key {key!r} is not a class id 0..{num_classes - 1} (map keys are '
                   'class ids and values their pixel values, as in AWS\'s example)')
            raise DatasetError(msg)
        if pixel is None or not 0 <= pixel < IGNORE_INDEX:
            msg = (f'label map {path}: class {cls} has value {value!r}, which is not a pixel value 0..254 '
                   '(255 is ignore)')
            raise DatasetError(msg)
        if pixel in owner:
            msg = f'label map {path}: pixel value {pixel} is given to both class {owner[pixel]} and class {cls}'
            raise DatasetError(msg)
        owner[pixel] = cls
        table[pixel] = cls
    return LabelMap(table, f'a pixel value listed in label map {path}',
                    f'label map {path}: {len(owner)} classes, keys read as class ids and values as pixel values '
                    '(AWS\'s reading)')


def _value_keyed_map(path: Path, entries: dict, num_classes: int) -> LabelMap:
    """seg_train's reading before #19 (``"keys": "pixel_value"``): key = pixel value; unlisted values ignored."""
    table = np.full(256, IGNORE_INDEX, np.int16)
    for key, value in entries.items():
        raw, cls = _integer(key), _integer(value)
        if raw is None or not 0 <= raw <= 255 or cls is None or not (0 <= cls < num_classes or cls == IGNORE_INDEX):
            msg = (f'label map {path}: entry {key!r}: {value!r} is not value 0..255 -> '
                   f'class 0..{num_classes - 1}')
            raise DatasetError(msg)
        table[raw] = cls
    return LabelMap(table, f'a class id (0..{num_classes - 1})',
                    f'label map {path}: keys read as pixel values and values as class ids ("keys": "pixel_value"); '
                    'pixel values it does not list are ignored')


def read_label_map(path: Path, num_classes: int) -> LabelMap:
    """Read a SageMaker label map: ``{"scale": "3"}`` or ``{"map": {"0": 5, ...}}`` (key = class id).

    ``"keys": "pixel_value"`` beside ``map`` selects the opposite reading (seg_train's before #19).
    """
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f'cannot read label map {path}: {err}'
        raise DatasetError(msg) from None
    if not isinstance(spec, dict) or ('map' in spec) == ('scale' in spec):
        msg = f'label map {path} must hold {{"scale": N}} or {{"map": {{...}}}}'
        raise DatasetError(msg)
    unknown = sorted(set(spec) - ({'map', 'keys'} if 'map' in spec else {'scale'}))
    if unknown:
        msg = f'label map {path} has unknown keys {unknown}: it holds "scale", or "map" (and optionally "keys")'
        raise DatasetError(msg)
    if 'map' in spec:
        entries, keys = spec['map'], spec.get('keys', 'class')
        if not isinstance(entries, dict) or not entries:
            msg = f'label map {path}: "map" must be a non-empty object of class id -> pixel value'
            raise DatasetError(msg)
        if keys not in MAP_KEYS:
            msg = f'label map {path}: "keys" must be one of {MAP_KEYS}, got {keys!r}'
            raise DatasetError(msg)
        reader = _class_keyed_map if keys == 'class' else _value_keyed_map
        return reader(path, entries, num_classes)
    scale = _integer(spec['scale'])
    if scale is None or scale < 1:
        msg = f'label map {path}: scale must be a positive integer, got {spec["scale"]!r}'
        raise DatasetError(msg)
    # AWS: divide and round down; 255 stays "ignore" whatever the scale.
    values = np.arange(256) // scale
    table = np.where(values < num_classes, values, _INVALID).astype(np.int16)
    table[IGNORE_INDEX] = IGNORE_INDEX
    top = min(num_classes * scale, 255) - 1
    return LabelMap(table, f'a pixel value 0..{top} (class = value // {scale})', f'label map {path}: scale {scale}')


def sagemaker_label_map(path: Path, num_classes: int) -> np.ndarray:
    """Raw label value -> class id table of a label map file (see ``read_label_map``)."""
    return read_label_map(path, num_classes).table


class SegmentationFiles:
    """(image, label) file pairs read as uint8 RGB and class-id maps, then ``transform``-ed."""

    def __init__(self, pairs: list[tuple[Path, Path]], label_map: np.ndarray,
                 transform: Callable | None = None, *, allowed: str | None = None, note: str = '') -> None:
        self.pairs, self.label_map, self.transform = pairs, label_map, transform
        valid = int((label_map[:255] >= 0).sum())
        self.allowed = allowed or f'a class id (0..{valid - 1})'  # what a valid raw label value is
        self.note = note  # how the label map was read, for the training log

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Load pair ``index`` as (RGB uint8 HxWx3, class ids uint8 HxW), checked."""
        image_path, label_path = self.pairs[index]
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            msg = f'cannot read image {image_path} (missing, unreadable or not an image)'
            raise DatasetError(msg)
        # An indexed (palette) PNG reads as its palette indices: they are the class ids, not the colours.
        raw = read_label_image(label_path)
        if raw is None:
            msg = f'cannot read label {label_path} (missing, unreadable or not an image)'
            raise DatasetError(msg)
        if raw.ndim != 2 or raw.dtype != np.uint8:
            msg = (f'label {label_path} must be a single-channel 8-bit PNG (grayscale or indexed), got shape '
                   f'{raw.shape} {raw.dtype}')
            raise DatasetError(msg)
        if raw.shape != image.shape[:2]:
            msg = f'label {label_path} is {raw.shape[1]}x{raw.shape[0]} but image {image_path} is ' \
                  f'{image.shape[1]}x{image.shape[0]}'
            raise DatasetError(msg)
        label = self.label_map[raw]
        if (label == _INVALID).any():
            bad = np.unique(raw[label == _INVALID])
            msg = (f'label {label_path} has values {bad[:10].tolist()} that are neither {self.allowed} '
                   f'nor {IGNORE_INDEX} (ignore)')
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


def sagemaker_files(root: Path, split: str, num_classes: int) -> tuple[list[tuple[Path, Path]], LabelMap]:
    """Pairs and label map of channel ``split`` ('train' or 'validation')."""
    annotations = root / f'{split}_annotation'
    pairs = _paired(_images(root / split), lambda p: annotations / f'{p.stem}.png')
    map_file = root / 'label_map' / f'{split}_label_map.json'
    if map_file.is_file():
        return pairs, read_label_map(map_file, num_classes)
    return pairs, LabelMap(_identity_map(num_classes), f'a class id (0..{num_classes - 1})')


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
        pairs, label_map = sagemaker_files(root, name, len(class_table(fmt, num_classes).names))
        return SegmentationFiles(pairs, label_map.table, transform, allowed=label_map.allowed, note=label_map.note)
    return SegmentationFiles(pairs, table, transform)
