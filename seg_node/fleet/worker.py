"""The fleet worker: one engine per Ray actor, one time-range shard of one bag per call.

Each actor builds its engine (and the reference model's) through ``runtime.loader.load_model``
with the SHA-256 the driver computed, exactly as the node loads a model. A call reads its shard
straight from the bag with rosbags (``AnyReader.messages(start=, stop=)``), runs the frames
through the engine in batches and the node's renderer, and writes everything into a folder of
its own on shared storage: a partial bag with the same topics and bytes ``seg_bag label`` writes,
per-frame results as Parquet, the shard's confusion matrices and its worst frames as thumbnails.
Only a small status row goes back through Ray.

Nothing here imports ROS (Ray workers never touch DDS), and importing this module imports the
``seg_node`` package first, which turns off ONNX Runtime's telemetry before onnxruntime loads.
"""

from __future__ import annotations

import heapq
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from seg_node.bag import messages
from seg_node.bag.bagio import (
    IMAGE,
    IMAGE_TYPES,
    BagError,
    BagWriter,
    camera_image_topics,
    connections_for,
    frame_key,
    open_bag,
)
from seg_node.bag.evaluate import mask_of, table_mismatch
from seg_node.bag.label import frame_rgb, write_labels
from seg_node.errors import one_line
from seg_node.fleet.plan import Shard, write_json_atomic
from seg_node.model.classes import ClassTable
from seg_node.msg import topics
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.engine import SegmentationEngine
from seg_node.runtime.loader import LOAD_ERRORS, ModelRequest, load_model
from seg_node.runtime.metrics import ConfusionMatrix
from seg_node.runtime.render import colorize, palette_lut, render_outputs, resize_nearest

# Ground truth is matched to a frame by header; it may be logged a little before or after the
# image, so a shard reads it over a slightly wider time range than its images.
TRUTH_MARGIN_NS = 2_000_000_000
THUMB_WIDTH = 192
MODES = ('label', 'eval')


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker needs, the same for all shards of a run."""

    model: str
    model_sha256: str
    mode: str = 'label'  # label: write labelled bags; eval: score only
    reference: str = ''
    reference_sha256: str = ''
    outputs: tuple[str, ...] = ('mask', 'color_mask', 'overlay')
    overlay_alpha: float = 0.5
    batch: int = 8
    providers: tuple[str, ...] = ('tensorrt', 'cuda', 'cpu')
    cpu_threads: int = 1  # the actor's CPUs: ONNX Runtime ignores the OMP_NUM_THREADS Ray sets
    storage: str = 'sqlite3'
    topics: tuple[str, ...] = ()
    worst: int = 8  # worst frames kept per shard (thumbnails)
    crash_once: str = ''  # testing only: the first attempt of this bag's first shard kills its process


@dataclass
class _Frame:
    topic: str
    header: Any
    timestamp: int
    rgb: np.ndarray
    decode_ms: float


@dataclass
class _ShardState:
    """One shard in progress: where it writes, what it compares with, and what it accumulates."""

    shard: Shard
    folder: Path  # this attempt's own folder
    num_classes: int
    lut: np.ndarray
    outputs: set[str]  # rendered (the class mask always: the statistics need it)
    writer: BagWriter | None = None  # the partial bag (fleet label)
    truth: dict = field(default_factory=dict)  # ground truth by namespace and frame key
    frames: dict[str, int] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    confusion: ConfusionMatrix | None = None  # model vs ground truth
    reference_confusion: ConfusionMatrix | None = None  # reference vs ground truth
    agreement: ConfusionMatrix | None = None  # rows: reference, columns: model
    worst: list = field(default_factory=list)  # min-heap of (badness, seq, entry): the mildest is dropped first
    seen: set = field(default_factory=set)
    seq: int = 0


def part_bag(folder: Path, shard: Shard) -> Path:
    """Where a shard attempt writes its partial bag."""
    return folder / 'bag' / shard.name


def engine_request(path: str, sha256: str, config: WorkerConfig) -> ModelRequest:
    """The load request of a model on a worker: the driver's hash, the actor's CPU count."""
    return ModelRequest(path, sha256, EngineConfig(providers=tuple(config.providers), cpu_threads=config.cpu_threads))


class ShardWorker:
    """The Ray Data actor (``map_batches`` callable class): builds the engines once, then labels shards."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.worker_id = f'{socket.gethostname()}:{os.getpid()}'
        self.load_error = ''
        self.engine: SegmentationEngine | None = None
        self.reference: SegmentationEngine | None = None
        try:
            self.engine = load_model(engine_request(config.model, config.model_sha256, config)).engine
            if config.reference:
                self.reference = load_model(engine_request(config.reference, config.reference_sha256, config)).engine
        except LOAD_ERRORS as err:
            # Every shard of this worker reports it: the driver shows it as the bags' reason.
            self.load_error = str(err)
        except Exception as err:  # noqa: BLE001 - a failed actor constructor would stop the whole Ray run
            self.load_error = f'the worker could not build its engine ({type(err).__name__}: {one_line(err)})'

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Label the shards in ``batch`` (one per call with ``batch_size=1``); one status row each."""
        rows = [self.run(Shard.from_json(str(item))) for item in batch['shard']]
        return {key: np.array([row[key] for row in rows]) for key in rows[0]}

    def run(self, shard: Shard) -> dict[str, Any]:
        """Label one shard; a bad bag or frame is a failed row with its reason, never an exception."""
        token = uuid.uuid4().hex[:12]
        part = Path(shard.part_dir)
        part.mkdir(parents=True, exist_ok=True)
        # One marker per attempt: a worker process that dies is restarted by Ray and the shard
        # retried, and the driver counts the markers to report those retries.
        (part / f'attempt-{token}').touch()
        attempts = len(list(part.glob('attempt-*')))
        if self.config.crash_once and shard.name == self.config.crash_once and shard.index == 0 and attempts == 1:
            os._exit(17)  # testing: die the way a segfault or the OOM killer would
        status = {'bag': shard.name, 'shard': shard.index, 'ok': False, 'error': '', 'frames': 0,
                  'seconds': 0.0, 'worker': self.worker_id, 'token': token}
        started = time.perf_counter()
        try:
            if self.load_error:
                raise BagError(self.load_error)
            frames = self._label(shard, part / token, token)
            status.update(ok=True, frames=frames)
        except BagError as err:
            status['error'] = str(err)
        except Exception as err:  # noqa: BLE001 - one shard's surprise must not stop the fleet
            status['error'] = f'{type(err).__name__} while labelling shard {shard.index}: {one_line(err)}'
        status['seconds'] = time.perf_counter() - started
        status['info'] = json.dumps(self.process_info())
        return status

    # --- one shard ------------------------------------------------------------------------

    def _label(self, shard: Shard, folder: Path, token: str) -> int:
        engine = self.engine
        assert engine is not None  # load_error is set otherwise
        config = self.config
        folder.mkdir(parents=True)
        table = ClassTable(engine.spec.classes, engine.spec.palette)
        writing = config.mode == 'label'
        # The class mask is always rendered (the statistics need it); only asked-for outputs are written.
        state = _ShardState(shard, folder, len(table.names), palette_lut(engine.spec.palette),
                            ({'mask'} | set(config.outputs)) if writing else {'mask'})
        with open_bag(shard.bag) as reader:
            cameras = list(config.topics) or camera_image_topics(reader)
            camera_conns = [c for topic in cameras for c in connections_for(reader, topic, IMAGE_TYPES)]
            state.frames = dict.fromkeys(cameras, 0)
            state.truth, has_truth = _read_truth(reader, shard)
            if has_truth:
                state.confusion = ConfusionMatrix(state.num_classes)
                state.reference_confusion = ConfusionMatrix(state.num_classes) if self.reference else None
            if self.reference is not None:
                state.agreement = ConfusionMatrix(state.num_classes)
            produced = {topics.segmentation_topic(c, name) for c in cameras for name in config.outputs}
            # Named after the output bag (rosbags names the storage file after its folder), so a bag
            # of one shard moves into place as it is.
            writer = state.writer = (BagWriter(part_bag(folder, shard), storage=config.storage) if writing
                                     else None)
            try:
                if writer is not None and shard.index == 0:
                    # As seg_bag label: the class table once per camera, at the bag's start.
                    write_labels(writer, table, config.model, cameras, reader.start_time)
                conns = list(reader.connections) if writing else camera_conns
                pending: list[_Frame] = []
                for conn, timestamp, raw in reader.messages(connections=conns, start=shard.start, stop=shard.stop):
                    if writer is not None:
                        if conn.topic in produced or topics.output_name(conn.topic) == topics.LABELS:
                            continue  # replaced by this run's outputs
                        writer.write_raw(conn.topic, conn.msgtype, raw, timestamp, typestore=reader.typestore)
                    if conn.topic not in state.frames:
                        continue
                    t0 = time.perf_counter()
                    msg, rgb = frame_rgb(reader, conn, timestamp, raw)
                    pending.append(_Frame(conn.topic, msg.header, timestamp, rgb, (time.perf_counter() - t0) * 1e3))
                    if len(pending) >= config.batch:
                        self._flush(state, pending)
                        pending = []
                self._flush(state, pending)
            finally:
                if writer is not None:
                    writer.close()
        self._save(state, token)
        return sum(state.frames.values())

    def _flush(self, state: _ShardState, batch: list[_Frame]) -> None:
        if not batch:
            return
        engine, reference, config = self.engine, self.reference, self.config
        t0 = time.perf_counter()
        # As seg_bag label: the confidence graph only when confidence is asked for (it is a second
        # session, and the masks then come from the very session seg_bag label uses).
        results = engine.segment([f.rgb for f in batch], want_confidence='confidence' in config.outputs)
        engine_ms = (time.perf_counter() - t0) * 1e3 / len(batch)
        references = reference.segment([f.rgb for f in batch]) if reference is not None else [None] * len(batch)
        for frame, result, ref in zip(batch, results, references, strict=True):
            t1 = time.perf_counter()
            rendered = render_outputs(frame.rgb, result, state.lut, outputs=state.outputs,
                                      overlay_alpha=config.overlay_alpha)
            if state.writer is not None:
                for name, array in rendered.items():
                    if name not in config.outputs:
                        continue
                    state.writer.write(topics.segmentation_topic(frame.topic, name),
                                 messages.image(frame.header, array, topics.OUTPUT_ENCODINGS[name]), frame.timestamp)
            mask = rendered.class_mask
            state.frames[frame.topic] += 1
            row = _frame_row(state, frame, mask, result.confidence, engine_ms=engine_ms)
            badness, others = self._score(state, frame, mask, ref, row)
            row['latency_ms'] = frame.decode_ms + engine_ms + (time.perf_counter() - t1) * 1e3
            state.rows.append(row)
            if badness is None and row['confidence_mean'] == row['confidence_mean']:
                badness = 1.0 - row['confidence_mean']  # nothing to compare with: the least confident frames
            if badness is not None:
                self._keep_worst(state, frame, mask, others, row, badness=badness)

    @staticmethod
    def _score(state: _ShardState, frame: _Frame, mask: np.ndarray, ref: Any,
               row: dict) -> tuple[float | None, list[np.ndarray]]:
        """Add the frame to the shard's matrices; its badness (higher: worse) and the masks it is compared with.

        With a reference model the worst frames are those where the two disagree most, else those
        with the lowest mIoU against the ground truth.
        """
        badness, others = None, []
        n = state.num_classes
        if ref is not None:
            ref_mask = resize_nearest(ref.class_mask, mask.shape[:2])
            frame_agreement = ConfusionMatrix(n)
            frame_agreement.update(ref_mask, mask)
            state.agreement.merge(frame_agreement.mat)
            row['agreement'] = float((ref_mask == mask).mean())
            badness, others = 1.0 - row['agreement'], [ref_mask]
        namespace = topics.namespace_of(frame.topic)
        key = frame_key(frame.header)
        label = state.truth.get(namespace, {}).get(key)
        if label is None or state.confusion is None or (namespace, key) in state.seen:
            return badness, others
        state.seen.add((namespace, key))  # as seg_bag eval: one mask per frame counts
        # Exactly what seg_bag eval does with the labelled bag's mask: resized to the truth's size.
        scored = resize_nearest(mask, label.shape[:2])
        truth_topic = topics.output_topic(namespace, topics.GROUND_TRUTH)
        mismatch = table_mismatch(label, scored, n, truth_topic=truth_topic,
                                  mask_topic=topics.segmentation_topic(frame.topic, 'mask'))
        if mismatch:
            raise BagError(mismatch)
        frame_confusion = ConfusionMatrix(n)
        frame_confusion.update(label, scored)
        state.confusion.merge(frame_confusion.mat)
        metrics = frame_confusion.compute()
        row['miou'], row['pixel_accuracy'] = metrics.mean_iou, metrics.pixel_accuracy
        if ref is not None and state.reference_confusion is not None:
            state.reference_confusion.update(label, resize_nearest(ref.class_mask, label.shape[:2]))
        if badness is None:
            badness = 1.0 - (metrics.mean_iou if metrics.mean_iou == metrics.mean_iou else 1.0)
        return badness, [*others, resize_nearest(label, mask.shape[:2])]

    def _keep_worst(self, state: _ShardState, frame: _Frame, mask: np.ndarray, others: list[np.ndarray],
                    row: dict, *, badness: float) -> None:
        if self.config.worst <= 0:
            return
        state.seq += 1
        if len(state.worst) >= self.config.worst and badness <= state.worst[0][0]:
            return  # better than every frame kept: no thumbnail needed
        name = f'thumb-{state.seq:06d}.png'
        image = thumbnail(frame.rgb, [mask, *others], state.lut)
        cv2.imwrite(str(state.folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        entry = {'topic': frame.topic, 'stamp_ns': row['stamp_ns'], 'log_time_ns': frame.timestamp,
                 'badness': badness, 'thumb': name, 'miou': row.get('miou'), 'agreement': row.get('agreement'),
                 'confidence_mean': row['confidence_mean']}
        item = (badness, state.seq, entry)
        if len(state.worst) < self.config.worst:
            heapq.heappush(state.worst, item)
        else:
            dropped = heapq.heappushpop(state.worst, item)
            (state.folder / dropped[2]['thumb']).unlink(missing_ok=True)

    def _save(self, state: _ShardState, token: str) -> None:
        write_frames(state.rows, state.folder / 'frames.parquet', state.num_classes)
        writer = state.writer
        summary = {
            'token': token, 'bag': state.shard.name, 'shard': state.shard.index, 'frames': state.frames,
            'messages': sum(writer.counts.values()) if writer is not None else 0,
            'confusion': _matrix(state.confusion), 'reference_confusion': _matrix(state.reference_confusion),
            'agreement': _matrix(state.agreement),
            'worst': [entry for _, _, entry in sorted(state.worst, reverse=True)],
            'worker': self.worker_id, 'provider': self.engine.provider,
        }
        write_json_atomic(state.folder / 'shard.json', summary)

    def process_info(self) -> dict[str, Any]:
        """What the summary reports about this worker process: telemetry off, no ROS loaded, engine threads."""
        return {
            'environment': {name: os.environ.get(name, '') for name in
                            ('ORT_DISABLE_TELEMETRY', 'RAY_USAGE_STATS_ENABLED', 'OMP_NUM_THREADS',
                             'CUDA_VISIBLE_DEVICES')},
            'rclpy_loaded': 'rclpy' in sys.modules,
            'seg_node_before_onnxruntime': _imported_before('seg_node', 'onnxruntime'),
            'cpu_threads': self.config.cpu_threads,
            'provider': self.engine.provider if self.engine is not None else '',
        }


def _imported_before(first: str, second: str) -> bool:
    """True when module ``first`` was imported before ``second`` in this process (sys.modules keeps the order)."""
    names = list(sys.modules)
    return first in names and second in names and names.index(first) < names.index(second)


def _matrix(confusion: ConfusionMatrix | None) -> list | None:
    return confusion.mat.tolist() if confusion is not None else None


def _read_truth(reader: Any, shard: Shard) -> tuple[dict[str, dict[tuple[int, str], np.ndarray]], bool]:
    """Ground-truth masks by namespace and frame key over the shard's range plus a margin; has the bag any."""
    conns = [c for c in reader.connections if topics.output_name(c.topic) == topics.GROUND_TRUTH and c.msgtype == IMAGE]
    if not conns:
        return {}, False
    start = None if shard.start is None else shard.start - TRUTH_MARGIN_NS
    stop = None if shard.stop is None else shard.stop + TRUTH_MARGIN_NS
    truth: dict[str, dict[tuple[int, str], np.ndarray]] = {}
    for conn, _, raw in reader.messages(connections=conns, start=start, stop=stop):
        msg = reader.deserialize(raw, conn.msgtype)
        truth.setdefault(topics.namespace_of(conn.topic), {})[frame_key(msg.header)] = mask_of(conn.topic, msg).copy()
    return truth, True


def _frame_row(state: _ShardState, frame: _Frame, mask: np.ndarray, confidence: np.ndarray | None, *,
               engine_ms: float) -> dict[str, Any]:
    counts = np.bincount(mask.ravel(), minlength=state.num_classes)[:state.num_classes]
    if confidence is not None and confidence.size:
        values = confidence.astype(np.float32) / 255.0
        conf_mean, conf_p10 = float(values.mean()), float(np.percentile(values, 10))
    else:
        conf_mean = conf_p10 = float('nan')
    stamp, frame_id = frame_key(frame.header)
    return {'bag': state.shard.name, 'topic': frame.topic, 'camera': topics.namespace_of(frame.topic),
            'stamp_ns': stamp, 'frame_id': frame_id, 'log_time_ns': frame.timestamp, 'shard': state.shard.index,
            'height': int(mask.shape[0]), 'width': int(mask.shape[1]), 'class_pixels': counts.tolist(),
            'confidence_mean': conf_mean, 'confidence_p10': conf_p10, 'engine_ms': engine_ms,
            'latency_ms': 0.0, 'miou': None, 'pixel_accuracy': None, 'agreement': None}


FRAME_COLUMNS = {
    'bag': 'string', 'topic': 'string', 'camera': 'string', 'stamp_ns': 'int64', 'frame_id': 'string',
    'log_time_ns': 'int64', 'shard': 'int32', 'height': 'int32', 'width': 'int32',
    'class_pixels': 'list<int64>', 'confidence_mean': 'float64', 'confidence_p10': 'float64',
    'engine_ms': 'float64', 'latency_ms': 'float64', 'miou': 'float64', 'pixel_accuracy': 'float64',
    'agreement': 'float64',
}


def frame_schema() -> Any:
    """The Arrow schema of the per-frame Parquet files (one schema for every shard and bag)."""
    import pyarrow as pa  # noqa: PLC0415 - part of the fleet extra

    types = {'string': pa.string(), 'int64': pa.int64(), 'int32': pa.int32(), 'float64': pa.float64(),
             'list<int64>': pa.list_(pa.int64())}
    return pa.schema([(name, types[kind]) for name, kind in FRAME_COLUMNS.items()])


def write_frames(rows: list[dict], path: Path, num_classes: int) -> None:
    """Write per-frame rows as Parquet (an empty file with the schema when there are none)."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    table = pa.Table.from_pylist(rows, schema=frame_schema())
    table = table.replace_schema_metadata({'seg_node.num_classes': str(num_classes)})
    pq.write_table(table, path)


def thumbnail(rgb: np.ndarray, masks: list[np.ndarray], lut: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """Camera | mask | reference and/or truth, side by side, ``width`` pixels each."""
    height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
    size = (height, width)
    panels = [cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)]
    panels += [colorize(resize_nearest(mask, size), lut) for mask in masks]
    gap = np.full((height, 2, 3), 255, np.uint8)  # a white line between the panels
    return np.hstack([part for panel in panels for part in (panel, gap)][:-1])
