"""The seg_node ROS 2 node: camera images in, class masks, colour masks and overlays out.

Concurrency: subscription callbacks only park the newest message of their camera in a
``LatestFrameSlots``; one worker thread takes every waiting camera's frame, runs them through
the engine as one batch and publishes. The executor thread never blocks on inference, and a
slow engine drops stale frames instead of queueing them.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from seg_node.camera_io import CameraIO, labels_message, qos
from seg_node.conversion import ImageConversionError, message_to_rgb
from seg_node.diagnostics import camera_status, engine_status
from seg_node.engine import EngineError, SegmentationEngine
from seg_node.frame_queue import LatestFrameSlots, PendingFrame
from seg_node.model_file import ModelFileError, read_verified
from seg_node.prepost import palette_lut, render_outputs
from seg_node.settings import (
    OUTPUT_PARAMS,
    PARAMETERS,
    ParamSpec,
    SettingsError,
    check_parameter,
    settings_from_values,
)

_TYPES = {
    'bool': Parameter.Type.BOOL, 'int': Parameter.Type.INTEGER, 'double': Parameter.Type.DOUBLE,
    'string': Parameter.Type.STRING, 'string_array': Parameter.Type.STRING_ARRAY,
    'integer_array': Parameter.Type.INTEGER_ARRAY, 'double_array': Parameter.Type.DOUBLE_ARRAY,
}
_STAGES = ('convert', 'preprocess', 'inference', 'render', 'publish')


class StartupError(RuntimeError):
    """The node cannot start; the message is one sentence for the operator."""


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    description = spec.description
    if spec.choices:
        description += f' One of: {", ".join(spec.choices)}.'
    descriptor = ParameterDescriptor(name=spec.name, type=_TYPES[spec.type].value,
                                     description=description, read_only=spec.read_only)
    if spec.int_range:
        descriptor.integer_range = [IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1])]
    if spec.float_range:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=spec.float_range[0], to_value=spec.float_range[1])]
    return descriptor


class SegmentationNode(Node):
    """Segments every configured camera stream with one shared engine."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('seg_node', **kwargs)
        values = {spec.name: self._declare(spec) for spec in PARAMETERS}
        try:
            self.settings = settings_from_values(values)
        except SettingsError as err:
            raise StartupError(str(err)) from None
        self.engine = self._load_engine()
        spec = self.engine.spec
        self.get_logger().info(
            f'model {self.settings.model_path} ({spec.num_classes} classes, input '
            f'{list(spec.input_size) if spec.input_size else "native size"}) on {self.engine.provider}')
        self._lut = palette_lut(spec.palette)
        self._outputs = self.settings.outputs
        self._overlay_alpha = self.settings.overlay_alpha
        if 'confidence' in self._outputs and not self.engine.has_confidence:
            self.get_logger().warning('publish_confidence is set but the model has no confidence output')
        self._stage_ms = {stage: deque(maxlen=600) for stage in _STAGES}
        self._slots = LatestFrameSlots()
        self._unexpected_errors = 0
        labels = labels_message(spec, self.settings.model_path)
        input_qos = qos(self.settings.input_reliability, self.settings.input_depth)
        output_qos = qos(self.settings.output_reliability, self.settings.output_depth)
        self.cameras = {
            topic: CameraIO(self, topic, on_frame=self._on_frame, input_qos=input_qos,
                            output_qos=output_qos, labels=labels,
                            want_camera_info=self.settings.mask_resolution == 'model')
            for topic in self.settings.image_topics}
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(self.settings.diagnostics_period_s, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._worker = threading.Thread(target=self._work, name='seg_node_inference', daemon=True)
        self._worker.start()
        self.get_logger().info(f'segmenting {", ".join(self.cameras)}')

    def _declare(self, spec: ParamSpec) -> Any:
        default = spec.default if spec.default is not None else _TYPES[spec.type]
        try:
            return self.declare_parameter(spec.name, default, _descriptor(spec)).value
        except Exception as err:  # noqa: BLE001 - rclpy raises several unrelated types here
            bounds = spec.float_range or spec.int_range
            if bounds and 'out of range' in str(err):
                reason = f'must be in [{bounds[0]}, {bounds[1]}]'
            else:
                reason = f'expects a value of type {spec.type} ({type(err).__name__})'
            raise StartupError(f'parameter {spec.name} {reason}') from None

    def _load_engine(self) -> SegmentationEngine:
        try:
            model_bytes = read_verified(self.settings.model_path, self.settings.model_sha256)
            return SegmentationEngine(model_bytes, self.settings.engine, self.settings.overrides)
        except (ModelFileError, EngineError) as err:
            raise StartupError(str(err).replace("'<bytes>'", repr(self.settings.model_path))) from None

    # Callbacks: short, no heavy work on the executor thread.

    def _on_frame(self, topic: str, msg: Any) -> None:
        camera = self.cameras[topic]
        camera.stats.count('received')
        if self._slots.put(PendingFrame(topic, msg, time.monotonic())):
            camera.stats.count('dropped')

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            try:
                check_parameter(param.name, param.value)
            except SettingsError as err:
                return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        for param in params:
            if param.name == 'overlay_alpha':
                self._overlay_alpha = float(param.value)
            output = next((o for o, p in OUTPUT_PARAMS.items() if p == param.name), None)
            if output is not None:
                self._outputs = (self._outputs | {output}) if param.value else (self._outputs - {output})

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [camera_status(cam.namespace or topic, topic, cam.stats, now)
                      for topic, cam in self.cameras.items()]
        msg.status.append(engine_status(self.engine.provider, self.settings.model_path,
                                        self.engine.spec.num_classes,
                                        {k: list(v) for k, v in self._stage_ms.items()}))
        self._diagnostics.publish(msg)

    # The inference worker.

    def _work(self) -> None:
        while not self._slots.closed:
            frames = self._slots.take_all(timeout=0.2)
            if not frames:
                continue
            try:
                self._process(frames)
            except Exception:  # noqa: BLE001 - the worker must outlive any one bad batch
                self._unexpected_errors += 1
                self.get_logger().error(
                    f'unexpected error while processing {len(frames)} frame(s); they are dropped:\n'
                    f'{traceback.format_exc()}', throttle_duration_sec=5.0)

    def _process(self, frames: list[PendingFrame]) -> None:
        batch = []
        for frame in frames:
            camera = self.cameras[frame.camera]
            outputs = camera.wanted(self._outputs)
            if not outputs:
                camera.stats.count('skipped')
                continue
            t0 = time.perf_counter()
            try:
                rgb = message_to_rgb(frame.message)
            except ImageConversionError as err:
                self._reject(camera, str(err))
                continue
            self._stage_ms['convert'].append((time.perf_counter() - t0) * 1e3)
            batch.append((camera, frame, rgb, outputs))
        limit = self.settings.max_batch or max(1, len(batch))
        for start in range(0, len(batch), limit):
            self._segment_and_publish(batch[start:start + limit])

    def _segment_and_publish(self, batch: list) -> None:
        if not batch:
            return
        want_confidence = any('confidence' in outputs for _, _, _, outputs in batch)
        try:
            results = self.engine.segment([rgb for _, _, rgb, _ in batch], want_confidence=want_confidence)
        except Exception as err:  # noqa: BLE001 - any runtime failure drops this batch only
            for camera, _, _, _ in batch:
                camera.stats.count('failed')
                if camera.should_warn('engine', self.settings.warn_throttle_s):
                    self.get_logger().error(f'{camera.topic}: inference failed, frame dropped ({err})')
            return
        timing = self.engine.last_timing
        self._stage_ms['preprocess'].append(timing.preprocess_ms / len(batch))
        self._stage_ms['inference'].append(timing.inference_ms / len(batch))
        for (camera, frame, rgb, outputs), result in zip(batch, results, strict=True):
            t0 = time.perf_counter()
            rendered = render_outputs(rgb, result, self._lut, outputs=outputs,
                                      overlay_alpha=self._overlay_alpha,
                                      mask_resolution=self.settings.mask_resolution,
                                      buffer=camera.buffer)
            t1 = time.perf_counter()
            camera.publish(rendered, frame.message.header)
            t2 = time.perf_counter()
            self._stage_ms['render'].append((t1 - t0) * 1e3)
            self._stage_ms['publish'].append((t2 - t1) * 1e3)
            camera.stats.count('processed')
            camera.stats.record_latency((time.monotonic() - frame.receive_time) * 1e3)

    def _reject(self, camera: CameraIO, reason: str) -> None:
        camera.stats.reject(reason)
        if camera.should_warn('reject', self.settings.warn_throttle_s):
            self.get_logger().warning(f'{camera.topic}: frame rejected: {reason}')

    def stop(self) -> None:
        """Stop the inference worker (idempotent)."""
        self._slots.close()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=2.0)

    def stage_times_ms(self) -> dict[str, list[float]]:
        """Recent per-frame times of each processing stage (for benchmarks and diagnostics)."""
        return {stage: list(samples) for stage, samples in self._stage_ms.items()}


def main(args: list[str] | None = None) -> int:
    """Console entry point: ``seg_node --ros-args ...``; exits 1 with one sentence on bad setup."""
    node = None
    try:
        with rclpy.init(args=args):
            try:
                node = SegmentationNode()
            except StartupError as err:
                rclpy.logging.get_logger('seg_node').fatal(str(err))
                return 1
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
