"""The inference worker: waiting frames -> RGB -> engine (one batch) -> rendered outputs -> publish.

Runs on its own thread, never on the executor. Every frame it takes ends counted exactly once:
processed, rejected (bad input), failed (engine error) or skipped (no subscriber).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seg_node.msg import topics
from seg_node.msg.cdr import CdrError
from seg_node.msg.image import ImageConversionError, message_to_rgb
from seg_node.ros.camera import CameraIO
from seg_node.ros.ground import GROUND_GRID, GroundOutputs
from seg_node.ros.parameters import NodeSettings
from seg_node.ros.transport import take_frame
from seg_node.runtime.frame_slots import LatestFrameSlots, PendingFrame
from seg_node.runtime.render import render_outputs
from seg_node.runtime.supervisor import EngineSupervisor, InferenceError
from seg_node.viewer.live import LiveView

STAGES = ('convert', 'preprocess', 'inference', 'render', 'publish')
# Every frame's mask (and confidence) is published before any colour mask or overlay: planning
# reads the mask, whose latency then does not include rendering and sending the pictures.
# The ground grid is made from the same mask, in the first pass.
OUTPUT_PASSES = (frozenset({'mask', 'confidence', GROUND_GRID}), topics.VISUALIZATION_OUTPUTS)
VIEW_PICTURES = topics.VISUALIZATION_OUTPUTS


@dataclass
class Job:
    """One converted frame on its way through the engine."""

    camera: CameraIO
    frame: PendingFrame
    header: Any  # the input's std_msgs/Header, or its CdrHeader on the serialized path
    rgb: np.ndarray
    outputs: set[str]
    pictures: dict[str, np.ndarray] = field(default_factory=dict)  # rendered colour mask / overlay
    render_ms: float = 0.0
    publish_ms: float = 0.0


class FramePipeline:
    """Turns a set of waiting frames into published outputs (no thread of its own)."""

    def __init__(self, cameras: Mapping[str, CameraIO], supervisor: EngineSupervisor,
                 settings: Callable[[], NodeSettings], logger: Any, *,
                 running: Callable[[], bool] = lambda: True, view: LiveView | None = None) -> None:
        self.cameras = cameras
        self.view = view  # the Foxglove live view, or None
        self.supervisor = supervisor
        self.unexpected_errors = 0  # exceptions no rule foresaw; each cost one frame
        self._settings = settings  # read once per batch: runtime changes apply between batches
        self._logger = logger
        self._running = running  # False once ROS shuts down: a failed publish then is expected
        self.stage_ms = {stage: deque(maxlen=600) for stage in STAGES}
        self.ground: GroundOutputs | None = None  # set by the node when the ground grid is on

    @property
    def running(self) -> bool:
        """False once ROS is shutting down."""
        return self._running()

    def process(self, frames: list[PendingFrame]) -> None:
        """Convert, segment (in batches of at most ``max_batch``) and publish ``frames``."""
        settings = self._settings()
        jobs = [job for frame in frames if (job := self._prepare(frame, settings)) is not None]
        limit = settings.max_batch or max(1, len(jobs))
        for start in range(0, len(jobs), limit):
            self._segment_and_publish(jobs[start:start + limit], settings)

    def _prepare(self, frame: PendingFrame, settings: NodeSettings) -> Job | None:
        camera = self.cameras[frame.camera]
        period_s = 1.0 / settings.visualization_max_rate_hz if settings.visualization_max_rate_hz else 0.0
        wanted = camera.wanted(settings.outputs)
        if self.view is not None:  # the live view shows the enabled outputs somebody watches there
            wanted |= self.view.wanted(frame.camera) & settings.outputs
        outputs = camera.due(wanted, period_s)
        if self.ground is not None and self.ground.wanted(frame.camera):
            outputs.add(GROUND_GRID)
        if not outputs:
            camera.stats.count('skipped')
            return None
        t0 = time.perf_counter()
        try:
            message, deserialized = take_frame(frame.message, camera.compressed)
            if deserialized:
                camera.stats.count('deserialized')  # bytes the CDR reader could not read
            rgb = message_to_rgb(message)
        except (ImageConversionError, CdrError) as err:
            self._reject(camera, str(err), settings)
            return None
        except Exception as err:  # noqa: BLE001 - a converter bug costs this frame, not the batch
            self.unexpected('converting a frame')
            self._reject(camera, f'conversion failed ({type(err).__name__}: {err})', settings)
            return None
        self.stage_ms['convert'].append((time.perf_counter() - t0) * 1e3)
        return Job(camera, frame, message.header, rgb, outputs)

    def _reject(self, camera: CameraIO, reason: str, settings: NodeSettings) -> None:
        camera.stats.reject(reason)
        if camera.should_warn('reject', settings.warn_throttle_s):
            self._logger.warning(f'{camera.topic}: frame rejected: {reason}')

    def _segment_and_publish(self, jobs: list[Job], settings: NodeSettings) -> None:
        want_confidence = any('confidence' in job.outputs for job in jobs)
        try:
            results, model = self.supervisor.segment([job.rgb for job in jobs],
                                                     want_confidence=want_confidence)
        except InferenceError as err:
            for job in jobs:
                self._fail(job, f'inference failed, frame dropped ({err})', settings)
            return
        timing = model.engine.last_timing
        self.stage_ms['preprocess'].append(timing.preprocess_ms / len(jobs))
        self.stage_ms['inference'].append(timing.inference_ms / len(jobs))
        pending = list(zip(jobs, results, strict=True))
        for outputs in OUTPUT_PASSES:
            still = []
            for job, result in pending:
                try:
                    self._render_and_publish(job, result, job.outputs & outputs, model.lut, settings)
                except Exception as err:  # noqa: BLE001 - one frame's failure must not lose the others
                    if not self.running:
                        return  # ROS is shutting down under us: nothing left to publish to
                    self.unexpected('rendering or publishing a frame')
                    self._fail(job, f'output failed, frame dropped ({type(err).__name__}: {err})', settings)
                else:
                    still.append((job, result))
            pending = still
        for job, _ in pending:
            if self.view is not None and job.pictures:
                self._offer_to_view(job)
            self.stage_ms['render'].append(job.render_ms)
            self.stage_ms['publish'].append(job.publish_ms)
            job.camera.stats.count('processed')
            job.camera.stats.record_latency((time.monotonic() - job.frame.receive_time) * 1e3)

    def _render_and_publish(self, job: Job, result: Any, outputs: set[str], lut: np.ndarray,
                            settings: NodeSettings) -> None:
        if not outputs:
            return
        t0 = time.perf_counter()
        rendered = render_outputs(job.rgb, result, lut, outputs=outputs,
                                  overlay_alpha=settings.overlay_alpha,
                                  mask_resolution=settings.mask_resolution,
                                  visualization_scale=settings.visualization_scale,
                                  buffer=job.camera.buffers(job.header))
        t1 = time.perf_counter()
        job.camera.publish(rendered, job.header)
        if GROUND_GRID in outputs and self.ground is not None:
            # From the model's own mask: an input-size mask is its nearest upsampling (same grid).
            self.ground.publish(job.camera.topic, result.class_mask, job.rgb.shape[:2], job.header)
        job.render_ms += (t1 - t0) * 1e3
        job.publish_ms += (time.perf_counter() - t1) * 1e3
        if self.view is not None:
            job.pictures.update((name, array) for name, array in rendered.items() if name in VIEW_PICTURES)

    def _offer_to_view(self, job: Job) -> None:
        """Hand the published pictures (and the camera's) to the live view, which encodes them on its own thread."""
        header = job.header
        try:
            self.view.offer_frame(job.camera.topic, (header.stamp.sec, header.stamp.nanosec), header.frame_id,
                                  {'image': job.rgb, **job.pictures})
        except Exception:  # noqa: BLE001 - the ROS outputs are out already; the view must not cost them
            self.unexpected('offering a frame to the live view')

    def _fail(self, job: Job, reason: str, settings: NodeSettings) -> None:
        job.camera.stats.count('failed')
        if job.camera.should_warn('engine', settings.warn_throttle_s):
            self._logger.error(f'{job.camera.topic}: {reason}')

    def unexpected(self, what: str) -> None:
        """Count and log (with its traceback) an exception no rule foresaw."""
        self.unexpected_errors += 1
        self._logger.error(f'unexpected error while {what}:\n{traceback.format_exc()}',
                           throttle_duration_sec=5.0)


class InferenceWorker:
    """The thread that feeds the pipeline from the latest-frame slots."""

    def __init__(self, slots: LatestFrameSlots, pipeline: FramePipeline) -> None:
        self.slots = slots
        self.pipeline = pipeline
        self._thread = threading.Thread(target=self._work, name='seg_node_inference', daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop taking frames and wait up to ``timeout`` s for the batch in flight (idempotent)."""
        self.slots.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _work(self) -> None:
        while not self.slots.closed:
            frames = self.slots.take_all(timeout=0.2)
            if not frames:
                continue
            try:
                self.pipeline.process(frames)
            except Exception:  # noqa: BLE001 - the worker must outlive any one bad batch
                if self.slots.closed or not self.pipeline.running:
                    return  # raced with shutdown: nothing to report
                self.pipeline.unexpected(f'processing {len(frames)} frame(s); they are dropped')
