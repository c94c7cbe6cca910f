"""``seg_bag eval``: compare a bag's mask topics with ground truth, and measure output latency.

Masks and ground truth are matched by header (stamp, frame_id). Latency is the time from the
receipt of an input frame to the receipt of its mask, both as logged by the same recorder;
where a bag holds no input frames it falls back to the mask's header stamp (meaningful only
for a live camera, whose stamps are capture times). Offline-labelled bags log outputs at their
input's time, so they show 0 ms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seg_node.bag import messages
from seg_node.bag.bagio import (
    IMAGE,
    BagError,
    camera_image_topics,
    frame_key,
    open_bag,
    read,
)
from seg_node.bag.ground import score_grids
from seg_node.ground.score import GridScores
from seg_node.model.classes import CITYSCAPES, ClassTable
from seg_node.model.labels import IGNORE_INDEX
from seg_node.msg import topics
from seg_node.msg.labels import parse_labels_json
from seg_node.runtime.metrics import ConfusionMatrix, SegmentationMetrics
from seg_node.runtime.render import resize_nearest
from seg_node.runtime.stats import percentile

MASK = 'mask'


@dataclass
class CameraEval:
    """One camera's frame accounting and latency."""

    namespace: str
    truth_frames: int = 0
    mask_frames: int = 0
    matched: int = 0
    missing: list[int] = field(default_factory=list)  # truth stamps without a mask
    extra: list[int] = field(default_factory=list)  # mask stamps without ground truth
    duplicates: int = 0  # masks for a frame that already had one
    latency_ms: list[float] = field(default_factory=list)
    latency_from: str = ''  # 'input receipt' or 'header stamp'


@dataclass
class EvalReport:
    """Scores over every matched frame, and per-camera accounting."""

    metrics: SegmentationMetrics
    classes: tuple[str, ...]
    cameras: dict[str, CameraEval]
    confusion: ConfusionMatrix
    ground: GridScores | None = None  # ground grids against their truth, where the bag has both

    def latency(self) -> list[float]:
        """Every camera's latencies together (ms)."""
        return [v for cam in self.cameras.values() for v in cam.latency_ms]


def class_table(reader: Any) -> ClassTable:
    """The first JSON labels message in the bag (the node's format), else Cityscapes."""
    conns = [c for c in reader.connections
             if topics.output_name(c.topic) == topics.LABELS and c.msgtype == 'std_msgs/msg/String']
    for conn, _, raw in read(reader, conns):
        try:
            return parse_labels_json(reader.deserialize(raw, conn.msgtype).data)
        except ValueError:
            continue  # not the node's table: fall back
    return CITYSCAPES


def _outputs_named(reader: Any, name: str) -> list:
    return [c for c in reader.connections if topics.output_name(c.topic) == name and c.msgtype == IMAGE]


def mask_of(topic: str, msg: Any) -> np.ndarray:
    """The class ids of a mask message, or BagError naming the topic when it is not mono8."""
    try:
        return messages.mask_array(msg)
    except ValueError as err:
        text = f'{topic}: {err}'
        raise BagError(text) from None


def table_mismatch(truth: np.ndarray, mask: np.ndarray, table_size: int, *, truth_topic: str,
                   mask_topic: str) -> str | None:
    """Why ground truth and masks do not fit a ``table_size``-class table, naming the side at fault; None if they fit.

    Ground-truth ids the table lacks mean the two use different class sets (the masks are not to
    blame); mask ids the table lacks mean the masks and the labels topic come from different models.
    """
    labels = truth[truth != IGNORE_INDEX]
    if labels.size and int(labels.max()) >= table_size:
        return (f'the ground truth on {truth_topic} has class ids up to {int(labels.max())}, which the '
                f"model's {table_size}-class table (ids 0..{table_size - 1}) lacks: the two use different class "
                'sets, so map the ground truth onto the model\'s classes with a label map, or evaluate a model '
                'trained on the same class set')
    if mask.size and int(mask.max()) >= table_size:
        return (f'{mask_topic} has class ids up to {int(mask.max())}, which its {table_size}-class table '
                f'(ids 0..{table_size - 1}, from the labels topic) lacks: the masks and the labels topic come '
                'from different models, so label the bag again with one model')
    return None


def _read_truth(reader: Any) -> dict[str, dict[tuple[int, str], np.ndarray]]:
    truth: dict[str, dict[tuple[int, str], np.ndarray]] = {}
    for conn, _, raw in read(reader, _outputs_named(reader, topics.GROUND_TRUTH)):
        msg = reader.deserialize(raw, conn.msgtype)
        frames = truth.setdefault(topics.namespace_of(conn.topic), {})
        frames[frame_key(msg.header)] = mask_of(conn.topic, msg).copy()
    return truth


def evaluate_bag(bag: str | Path, *, truth_bag: str | Path | None = None) -> EvalReport:
    """Score the masks of ``bag`` against the ground truth in ``truth_bag`` (default: ``bag``)."""
    with open_bag(truth_bag or bag) as reader:
        truth = _read_truth(reader)
    if not truth:
        expected = topics.output_topic('<camera>', topics.GROUND_TRUTH)
        msg = f'bag {str(truth_bag or bag)!r} has no ground-truth topic ({expected})'
        raise BagError(msg)
    with open_bag(bag) as reader:
        masks = _outputs_named(reader, MASK)
        if not masks:
            expected = topics.output_topic('<camera>', MASK)
            msg = f'bag {str(bag)!r} has no mask topic ({expected}); record or label one first'
            raise BagError(msg)
        table = class_table(reader)
        inputs = {topics.namespace_of(t): t for t in camera_image_topics(reader)}
        received = _input_receipts(reader, inputs.values())
        confusion = ConfusionMatrix(len(table.names))
        cameras = {ns: CameraEval(ns, truth_frames=len(frames)) for ns, frames in truth.items()}
        seen: set[tuple[str, tuple[int, str]]] = set()
        for conn, logged, raw in read(reader, masks):
            ns = topics.namespace_of(conn.topic)
            camera = cameras.setdefault(ns, CameraEval(ns))
            msg = reader.deserialize(raw, conn.msgtype)
            key = frame_key(msg.header)
            camera.mask_frames += 1
            if (ns, key) in seen:
                camera.duplicates += 1
                continue
            seen.add((ns, key))
            _add_latency(camera, received.get((inputs.get(ns), key)), logged, key[0])
            label = truth.get(ns, {}).get(key)
            if label is None:
                camera.extra.append(key[0])
                continue
            camera.matched += 1
            mask = resize_nearest(mask_of(conn.topic, msg), label.shape[:2])
            mismatch = table_mismatch(label, mask, len(table.names), mask_topic=conn.topic,
                                      truth_topic=topics.output_topic(ns, topics.GROUND_TRUTH))
            if mismatch:
                raise BagError(mismatch)
            try:
                confusion.update(label, mask)
            except ValueError as err:
                text = f'{conn.topic} does not fit the {len(table.names)}-class table: {err}'
                raise BagError(text) from None
    for ns, frames in truth.items():
        cameras[ns].missing = sorted(stamp for stamp, frame in frames if (ns, (stamp, frame)) not in seen)
    with open_bag(bag) as reader, open_bag(truth_bag or bag) as truth_reader:
        grid_scores = score_grids(reader, truth_reader)
    return EvalReport(confusion.compute(), table.names, cameras, confusion, grid_scores)


def _input_receipts(reader: Any, image_topics: Iterable[str]) -> dict[tuple[str, tuple[int, str]], int]:
    conns = [c for c in reader.connections if c.topic in set(image_topics)]
    receipts = {}
    for conn, logged, raw in read(reader, conns):
        receipts[conn.topic, frame_key(reader.deserialize(raw, conn.msgtype).header)] = logged
    return receipts


def _add_latency(camera: CameraEval, input_logged: int | None, mask_logged: int, stamp: int) -> None:
    if input_logged is not None:
        camera.latency_from = 'input receipt'
        camera.latency_ms.append((mask_logged - input_logged) / 1e6)
    elif camera.latency_from != 'input receipt':
        camera.latency_from = 'header stamp'
        camera.latency_ms.append((mask_logged - stamp) / 1e6)


def last_diagnostics(bag: str | Path) -> dict[str, dict[str, str]]:
    """The last recorded value of every /diagnostics status, by status name (empty if none)."""
    latest: dict[str, dict[str, str]] = {}
    with open_bag(bag) as reader:
        conns = [c for c in reader.connections if c.msgtype == 'diagnostic_msgs/msg/DiagnosticArray']
        for conn, _, raw in read(reader, conns):
            for status in reader.deserialize(raw, conn.msgtype).status:
                latest[status.name] = {kv.key: kv.value for kv in status.values}
    return latest


def format_report(report: EvalReport) -> str:
    """The report as text: scores, per-class IoU, per-camera frames and latency."""
    m = report.metrics
    lines = [f'mIoU {m.mean_iou:.4f}   pixel accuracy {m.pixel_accuracy:.4f}   ({m.pixels} pixels)', '',
             report.confusion.table(list(report.classes)), '']
    for cam in report.cameras.values():
        line = (f'{cam.namespace}: {cam.truth_frames} ground-truth frames, {cam.mask_frames} masks, '
                f'{cam.matched} matched, {len(cam.missing)} missing, {len(cam.extra)} extra')
        if cam.duplicates:
            line += f', {cam.duplicates} duplicate'
        if cam.latency_ms:
            line += (f'; latency p50 {percentile(cam.latency_ms, 50):.1f} ms, '
                     f'p99 {percentile(cam.latency_ms, 99):.1f} ms (from {cam.latency_from})')
        lines.append(line)
    if report.ground is not None:
        lines.append(report.ground.text())
    return '\n'.join(lines)
