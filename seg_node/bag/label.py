"""``seg_bag label``: segment every camera image of a bag offline and write the outputs to a new bag.

No DDS: frames go through the engine in batches and through ``render_outputs``, the node's own
rendering, so an offline label equals what the live node publishes for the same frame. With
``--probabilities DIR`` each frame's per-pixel class probabilities (float32 [C,h,w] at the model's
output size, as SageMaker's probabilities answer) are also written as ``DIR/<topic>/<log time ns>.npy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from seg_node.bag import ground, messages
from seg_node.bag.bagio import (
    IMAGE_TYPES,
    BagError,
    BagWriter,
    camera_image_topics,
    connections_for,
    open_bag,
)
from seg_node.model.classes import ClassTable
from seg_node.msg import topics
from seg_node.msg.image import ImageConversionError, message_to_rgb
from seg_node.msg.labels import labels_json
from seg_node.runtime.config import DEFAULT_PROVIDERS, EngineConfig, EngineError
from seg_node.runtime.engine import SegmentationEngine
from seg_node.runtime.loader import LOAD_ERRORS, ModelRequest, load_model
from seg_node.runtime.render import palette_lut, render_outputs

DEFAULT_OUTPUTS = ('mask', 'color_mask', 'overlay')


@dataclass(frozen=True)
class LabelOptions:
    """Which cameras, which outputs, and how the engine runs."""

    topics: tuple[str, ...] = ()  # camera image topics; empty: every camera image topic
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    overlay_alpha: float = 0.5  # the node's default
    batch: int = 8
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    model_sha256: str = ''  # expected SHA-256 of the model file; empty: not checked
    force: bool = False
    storage: str = 'sqlite3'
    probabilities_dir: Path | None = None  # also write per-pixel class probabilities (.npy) here
    ground_grid: bool = False  # also write <ns>/segmentation/ground_grid (poses from /tf_static)


@dataclass
class _Pending:
    topic: str
    header: Any
    timestamp: int
    rgb: Any


@dataclass
class LabelResult:
    """Frames labelled per camera topic, and the provider that ran."""

    frames: dict[str, int] = field(default_factory=dict)
    provider: str = ''


def _engine(model: str | Path, providers: Sequence[str], sha256: str) -> SegmentationEngine:
    try:
        return load_model(ModelRequest(str(model), sha256, EngineConfig(providers=tuple(providers)))).engine
    except LOAD_ERRORS as err:
        raise BagError(str(err)) from None


def label_bag(in_bag: str | Path, out_bag: str | Path, model: str | Path,
              options: LabelOptions) -> LabelResult:
    """Copy ``in_bag`` to ``out_bag`` with segmentation outputs for every camera frame."""
    unknown = sorted(set(options.outputs) - set(topics.OUTPUTS))
    if unknown or options.batch < 1:
        msg = (f'unknown output {unknown[0]!r}; choose from {", ".join(topics.OUTPUTS)}' if unknown
               else f'--batch must be at least 1, got {options.batch}')
        raise BagError(msg)
    with open_bag(in_bag) as reader:
        cameras = list(options.topics) or camera_image_topics(reader)
        for topic in cameras:
            connections_for(reader, topic, IMAGE_TYPES)
        if not cameras:
            msg = f'bag {str(in_bag)!r} has no sensor_msgs/Image or CompressedImage topic to label'
            raise BagError(msg)
        engine = _engine(model, options.providers, options.model_sha256)
        if options.probabilities_dir is not None:
            _prepare_probabilities(engine, Path(options.probabilities_dir), force=options.force)
        produced = {topics.segmentation_topic(c, name) for c in cameras for name in options.outputs}
        labeller = _Labeller(engine, set(options.outputs), options.overlay_alpha,
                             probabilities_dir=options.probabilities_dir)
        if options.ground_grid:
            labeller.grids = ground.BagGrids(reader, cameras, tuple(engine.spec.classes))
            produced |= {topics.segmentation_topic(c, ground.GRID_TOPIC) for c in cameras}
        result = LabelResult(dict.fromkeys(cameras, 0), engine.provider)
        with BagWriter(out_bag, force=options.force, storage=options.storage) as out:
            write_labels(out, ClassTable(engine.spec.classes, engine.spec.palette), str(model), cameras,
                         reader.start_time)
            batch: list[_Pending] = []
            total = sum(c.msgcount for c in reader.connections)
            for conn, timestamp, raw in tqdm(reader.messages(), total=total, desc='label', unit='msg',
                                             disable=None):
                if conn.topic in produced or topics.output_name(conn.topic) == topics.LABELS:
                    continue  # replaced by this run's outputs
                out.write_raw(conn.topic, conn.msgtype, raw, timestamp, typestore=reader.typestore)
                if conn.topic not in result.frames:
                    continue
                msg, rgb = frame_rgb(reader, conn, timestamp, raw)
                batch.append(_Pending(conn.topic, msg.header, timestamp, rgb))
                if len(batch) >= options.batch:
                    labeller.write(batch, out, result)
                    batch = []
            labeller.write(batch, out, result)
        return result


def _prepare_probabilities(engine: SegmentationEngine, folder: Path, *, force: bool) -> None:
    """Check the probabilities folder and build the engine's probabilities session before any labelling."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not force)):
        msg = (f'probabilities folder {str(folder)!r} exists and is not empty (use --force to write into it)'
               if folder.is_dir() else f'probabilities folder {str(folder)!r} exists and is not a folder')
        raise BagError(msg)
    try:
        engine.probability_session()
    except EngineError as err:
        msg = f'--probabilities: {err}'
        raise BagError(msg) from None


def frame_rgb(reader: Any, conn: Any, timestamp: int, raw: bytes) -> tuple[Any, np.ndarray]:
    """A camera message of a bag and its RGB pixels; BagError naming the topic and time if it has none."""
    msg = reader.deserialize(raw, conn.msgtype)
    try:
        return msg, message_to_rgb(msg)
    except ImageConversionError as err:
        text = f'{conn.topic} at {timestamp} ns cannot be labelled: {err}'
        raise BagError(text) from None


def write_labels(out: BagWriter, table: ClassTable, model: str, cameras: Sequence[str], timestamp: int) -> None:
    """The node's JSON class table on each camera's labels topic (what `seg_bag eval` and `video` read)."""
    message = messages.String(data=labels_json(table, model))
    for camera in cameras:
        out.write(topics.segmentation_topic(camera, topics.LABELS), message, timestamp)


class _Labeller:
    """Runs batches through the engine and writes the rendered outputs."""

    def __init__(self, engine: SegmentationEngine, outputs: set[str], alpha: float, *,
                 probabilities_dir: Path | None = None) -> None:
        self.engine, self.outputs, self.alpha = engine, outputs, alpha
        self.lut = palette_lut(engine.spec.palette)
        self.probabilities_dir = Path(probabilities_dir) if probabilities_dir is not None else None
        self.grids: ground.BagGrids | None = None

    def write(self, batch: list[_Pending], out: BagWriter, result: LabelResult) -> None:
        """Segment ``batch`` and write each frame's outputs with its input's header and log time."""
        if not batch:
            return
        want_confidence = 'confidence' in self.outputs
        segmentations = self.engine.segment([p.rgb for p in batch], want_confidence=want_confidence)
        for pending, segmentation in zip(batch, segmentations, strict=True):
            rendered = render_outputs(pending.rgb, segmentation, self.lut, outputs=self.outputs,
                                      overlay_alpha=self.alpha)
            for name, array in rendered.items():
                out.write(topics.segmentation_topic(pending.topic, name),
                          messages.image(pending.header, array, topics.OUTPUT_ENCODINGS[name]), pending.timestamp)
            if self.grids is not None:  # from the model's own mask, as the node does
                cells = self.grids.cells(pending.topic, pending.header, segmentation.class_mask)
                out.write(topics.segmentation_topic(pending.topic, ground.GRID_TOPIC),
                          ground.occupancy_grid(pending.header, cells), pending.timestamp)
            result.frames[pending.topic] += 1
        if self.probabilities_dir is not None:
            self._write_probabilities(batch)

    def _write_probabilities(self, batch: list[_Pending]) -> None:
        for pending, scores in zip(batch, self.engine.probabilities([p.rgb for p in batch]), strict=True):
            folder = self.probabilities_dir / pending.topic.strip('/').replace('/', '_')
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f'{pending.timestamp}.npy', scores.astype(np.float32, copy=False))
