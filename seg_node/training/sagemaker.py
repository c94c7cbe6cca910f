"""SageMaker's definitions where they differ from ours: the all-classes mIoU and the probabilities answer.

``validation:mIOU`` in seg_node averages the IoU over the classes present in the labels or the
predictions (as Cityscapes' scripts and mmseg do). SageMaker's algorithm is built on GluonCV, whose
``SegmentationMetric`` divides each class's intersection by (eps + union) and averages over all
``num_classes``: a class absent from both labels and predictions counts as IoU 0. Both come from
the same confusion matrix (ignored pixels excluded), so both are logged side by side.

A SageMaker endpoint asked for ``application/x-recordio-protobuf`` answers with one RecordIO
record holding a protobuf ``Record`` (``aialgs.data``, SageMaker's ``record.proto``) whose
feature ``shape`` (int32) is ``[1, C, H, W]`` and ``target`` (float32) the probabilities in C
order. ``encode_probabilities`` writes the same bytes without protobuf or MXNet.
"""

from __future__ import annotations

import struct

import numpy as np

from seg_node.runtime.metrics import ConfusionMatrix

__all__ = ['MIOU_ALL', 'MIOU_PRESENT', 'all_classes_iou', 'encode_probabilities', 'validation_scores']

MIOU_PRESENT = 'validation:mIOU_present_classes'  # ours: classes present in labels or predictions
MIOU_ALL = 'validation:mIOU_all_classes'  # SageMaker / GluonCV: every class, absent ones count 0
_RECORDIO_MAGIC = 0xCED7230A
_RECORDIO_MAX = (1 << 29) - 1  # the length field keeps its top 3 bits for continuation flags


def all_classes_iou(matrix: ConfusionMatrix) -> tuple[float, tuple[float, ...]]:
    """GluonCV's mIoU and per-class IoU: intersection / (eps + union), averaged over every class."""
    mat = matrix.mat.astype(np.float64)
    tp = np.diag(mat)
    union = mat.sum(0) + mat.sum(1) - tp
    iou = tp / (np.spacing(1) + union)
    return float(iou.mean()), tuple(float(v) for v in iou)


def validation_scores(matrix: ConfusionMatrix, miou_classes: str = 'present') -> dict[str, float]:
    """Both mIoU definitions, pixel accuracy, and ``validation:mIOU`` as the one ``miou_classes`` picks."""
    scores = matrix.compute()
    all_classes, _ = all_classes_iou(matrix)
    chosen = all_classes if miou_classes == 'all' else scores.mean_iou
    return {'validation:mIOU': chosen, 'validation:pixel_accuracy': scores.pixel_accuracy,
            MIOU_PRESENT: scores.mean_iou, MIOU_ALL: all_classes}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(name: str, value: bytes) -> bytes:
    # map<string, Value> entries are messages {1: key, 2: value} in repeated field 1 of Record.
    return _field(1, _field(1, name.encode()) + _field(2, value))


def encode_probabilities(probabilities: np.ndarray) -> bytes:
    """SageMaker's ``application/x-recordio-protobuf`` answer for one image's [C, H, W] probabilities."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3:
        msg = f'probabilities must be [C, H, W], got shape {probabilities.shape}'
        raise ValueError(msg)
    shape = (1, *probabilities.shape)
    dims = b''.join(_varint(d) for d in shape)
    # Float32Tensor: values (1, packed float), shape (3, packed uint64); Int32Tensor: values (1, packed).
    target = _field(1, probabilities.astype('<f4').tobytes()) + _field(3, dims)
    record = _feature('shape', _field(7, _field(1, dims))) + _feature('target', _field(2, target))
    if len(record) > _RECORDIO_MAX:
        msg = f'{len(record)} bytes do not fit one RecordIO record (at most {_RECORDIO_MAX})'
        raise ValueError(msg)
    padding = b'\0' * (-len(record) % 4)
    return struct.pack('<II', _RECORDIO_MAGIC, len(record)) + record + padding
