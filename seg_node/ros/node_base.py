"""The node's ROS wiring, shared by the plain node (``node.py``) and the managed one (``managed.py``).

Stages, in order: ``_declare_parameters`` (construction), ``_configure`` (model, publishers,
worker, diagnostics), ``_activate`` (image subscriptions), ``_deactivate``, ``_cleanup``. The
plain node runs the first three in its constructor; the managed node runs them on lifecycle
transitions.

Threads: subscription, timer, parameter and guard-condition callbacks all run on the executor
thread and stay short; inference runs on the worker (``pipeline.py``); a model requested at
runtime loads on a thread of its own (``model_loader.py``) and is handed back to the executor
thread through a guard condition, which switches to it between two batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from seg_node.errors import one_line
from seg_node.ground.geometry import GeometryError
from seg_node.model.classes import ClassTable
from seg_node.msg.labels import labels_json
from seg_node.msg.topics import is_compressed
from seg_node.ros.camera import CameraIO, labels_message, qos
from seg_node.ros.dds_profile import missing_profile_warning, share_profile
from seg_node.ros.diagnostics import Limits, camera_status, engine_status, live_view_status, status_dict
from seg_node.ros.ground import NAV_MSGS_MISSING, GroundOutputs, OccupancyGrid
from seg_node.ros.model_switch import ModelSwitch
from seg_node.ros.parameters import (
    MODEL_PARAMS,
    PARAMETERS,
    NodeSettings,
    ParamSpec,
    SettingsError,
    check_parameter,
    settings_from_values,
)
from seg_node.ros.transport import prefer_asynchronous_publication
from seg_node.ros.worker import FramePipeline, InferenceWorker
from seg_node.runtime.frame_slots import LatestFrameSlots, PendingFrame
from seg_node.runtime.loader import LOAD_ERRORS, ActiveModel, BackgroundLoad, ModelRequest, load_model
from seg_node.runtime.memory import keep_large_buffers
from seg_node.runtime.render import MASK_AT_MODEL
from seg_node.runtime.supervisor import EngineSupervisor
from seg_node.viewer.live import FoxgloveMissingError, LiveView, LiveViewError, diagnostics_json

_TYPES = {
    'bool': Parameter.Type.BOOL, 'int': Parameter.Type.INTEGER, 'double': Parameter.Type.DOUBLE,
    'string': Parameter.Type.STRING, 'string_array': Parameter.Type.STRING_ARRAY,
    'integer_array': Parameter.Type.INTEGER_ARRAY, 'double_array': Parameter.Type.DOUBLE_ARRAY,
}
_SPECS = {spec.name: spec for spec in PARAMETERS}
MODEL_PARAMS_SET = frozenset(MODEL_PARAMS)
# How long shutting down waits for the batch in flight: the issue allows 2 s for all of it.
STOP_TIMEOUT_S = 1.0


class StartupError(RuntimeError):
    """The node cannot start; the message is one sentence for the operator."""


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    description = spec.description
    if spec.choices:
        description += f' One of: {", ".join(spec.choices)}.'
    if spec.reloads_model:
        description += ' A change loads the model anew and switches once it loaded.'
    descriptor = ParameterDescriptor(name=spec.name, type=_TYPES[spec.type].value,
                                     description=description, read_only=spec.read_only)
    if spec.int_range:
        descriptor.integer_range = [IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1])]
    if spec.float_range:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=spec.float_range[0], to_value=spec.float_range[1])]
    return descriptor


def model_request(settings: NodeSettings) -> ModelRequest:
    """What ``settings`` ask the engine to run."""
    return ModelRequest(settings.model_path, settings.model_sha256, settings.engine, settings.overrides,
                        settings.model_key())


class SegmentationCore(Node):
    """Parameters, model, cameras, worker and diagnostics of a Node or (mixed in first) a LifecycleNode.

    Holds no ``__init__`` of its own: subclasses construct their rclpy base, then call the stages.
    """

    # rclpy before Iron (Humble) has no post-set parameter callback; see _declare_parameters.
    _HAS_POST_SET = hasattr(Node, 'add_post_set_parameters_callback')
    # The Fast DDS profile warning is for start-up, not for every lifecycle activation.
    _dds_profile_checked = False

    # -- construction -------------------------------------------------------------------------

    def _declare_parameters(self) -> None:
        """Declare every parameter (raise StartupError on a bad value) and the callbacks."""
        self._values = {spec.name: self._declare(spec) for spec in PARAMETERS}
        self._model_values: dict[str, Any] = {}  # model parameters of the running model
        self.settings: NodeSettings | None = None  # None while unconfigured
        self.supervisor: EngineSupervisor | None = None
        self.cameras: dict[str, CameraIO] = {}
        self.ground: GroundOutputs | None = None
        self.pipeline: FramePipeline | None = None
        self._worker: InferenceWorker | None = None
        self._diagnostics = self._diagnostics_timer = None
        self.live_view: LiveView | None = None
        self.add_on_set_parameters_callback(self._validate_parameters)
        self._accepted_sets: list[list[Parameter]] = []
        if self._HAS_POST_SET:
            self.add_post_set_parameters_callback(self._apply_parameters)
        else:
            self._apply_accepted = self.create_guard_condition(self._apply_accepted_sets)
        self._model_switch = ModelSwitch(self, lambda: self.supervisor, switched=self._model_switched,
                                         failed=self._model_switch_failed)

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

    # -- lifecycle stages ---------------------------------------------------------------------

    def _configure(self) -> None:
        """Validate the parameters, build the model, create publishers, start the worker."""
        try:
            settings = settings_from_values(self._values)
            model = load_model(model_request(settings))
        except (SettingsError, *LOAD_ERRORS) as err:
            raise StartupError(str(err)) from None
        self.settings = settings
        self.supervisor = EngineSupervisor(model, self.get_logger(),
                                           fallback_after=settings.cpu_fallback_after)
        self._model_values = {name: self._values[name] for name in MODEL_PARAMS}
        self._log_model(model)
        self._create_cameras(settings, labels_message(model.engine.spec, model.path))
        self._start_live_view(settings, model)
        self._start_worker()
        self.ground = self._create_ground(settings, tuple(model.engine.spec.classes))
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diagnostics_timer = self.create_timer(settings.diagnostics_period_s, self._publish_diagnostics)

    def _create_cameras(self, settings: NodeSettings, labels: Any) -> None:
        output_qos = qos(settings.output_reliability, settings.output_depth)
        serialized = settings.data_path == 'auto'
        self.cameras = {topic: CameraIO(self, topic, output_qos=output_qos, labels=labels, serialized=serialized)
                        for topic in settings.image_topics}
        for camera in self.cameras.values():
            camera.want_camera_info(settings.mask_resolution == MASK_AT_MODEL)
        fast = all(output.serialized for camera in self.cameras.values() for output in camera.outputs.values())
        taken = 'serialized CDR' if serialized else 'rclpy messages'
        sent = 'serialized CDR (rcl_publish_serialized_message, GIL released)' if fast else 'rclpy messages'
        self.get_logger().info(f'data path: {taken} in, {sent} out')

    def _create_ground(self, settings: NodeSettings, classes: tuple[str, ...]) -> GroundOutputs | None:
        """The ground grid outputs when ``ground_grid`` is set (and nav_msgs installed)."""
        if settings.ground is None:
            return None
        if OccupancyGrid is None:
            self.get_logger().warning(NAV_MSGS_MISSING)
            return None
        try:
            ground = GroundOutputs(self, settings.ground, classes, settings.image_topics,
                                   qos(settings.output_reliability, settings.output_depth))
        except GeometryError as err:
            self.stop()
            raise StartupError(str(err)) from None
        self.pipeline.ground = ground
        if self.live_view is not None:
            ground.show_on(self.live_view)
        return ground

    def _start_live_view(self, settings: NodeSettings, model: ActiveModel) -> None:
        """Start the Foxglove live view if ``foxglove_port`` asks for one (StartupError if it cannot listen)."""
        if settings.foxglove_port < 0:
            return
        try:
            self.live_view = LiveView(settings.foxglove_host, settings.foxglove_port, list(self.cameras),
                                      options=lambda: self.settings.foxglove_view, logger=self.get_logger())
        except FoxgloveMissingError as err:  # the rest of the node runs without it
            self.get_logger().error(f'{err}; the live view is off')
            return
        except LiveViewError as err:
            raise StartupError(str(err)) from None
        self._offer_labels(model)
        self.get_logger().info(f'Foxglove live view on {self.live_view.url} (no authentication; '
                               'README, "Foxglove")')

    def _offer_labels(self, model: ActiveModel) -> None:
        if self.live_view is not None:
            spec = model.engine.spec
            text = labels_json(ClassTable(spec.classes, spec.palette), model.path)
            for topic in self.cameras:
                self.live_view.set_labels(topic, text)

    def _start_worker(self) -> None:
        slots = LatestFrameSlots()
        # The worker reads ``self.settings`` once per batch, so runtime changes apply between batches.
        self.pipeline = FramePipeline(self.cameras, self.supervisor, lambda: self.settings, self.get_logger(),
                                      running=lambda: self.context.ok() and not slots.closed,
                                      view=self.live_view)
        self._worker = InferenceWorker(slots, self.pipeline)
        self._worker.start()

    def _activate(self) -> None:
        """Subscribe to every camera."""
        input_qos = qos(self.settings.input_reliability, self.settings.input_depth)
        for camera in self.cameras.values():
            camera.subscribe(self._on_frame, input_qos)
        self.get_logger().info(f'segmenting {", ".join(self.cameras)}')
        self._warn_without_dds_profile()

    def _warn_without_dds_profile(self) -> None:
        """Once per process: say so when large best-effort frames will be lost for want of a Fast DDS profile."""
        if SegmentationCore._dds_profile_checked:
            return
        SegmentationCore._dds_profile_checked = True
        best_effort = self.settings.input_reliability == 'best_effort'
        raw_topics = [topic for topic in self.cameras if best_effort and not is_compressed(topic)]
        warning = missing_profile_warning(rclpy.get_rmw_implementation_identifier(), raw_topics)
        if warning:
            self.get_logger().warning(warning)

    def _deactivate(self) -> None:
        """Unsubscribe from every camera; frames already taken still finish."""
        for camera in self.cameras.values():
            camera.unsubscribe()
        self.get_logger().info('inactive: not subscribed to any camera')

    def _cleanup(self) -> None:
        """Free what ``_configure`` created (idempotent; also after a partial configure)."""
        self.stop()
        for camera in self.cameras.values():
            camera.destroy()
        self.cameras = {}
        if self.ground is not None:
            self.ground.destroy()
            self.ground = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        if self._diagnostics is not None:
            self.destroy_publisher(self._diagnostics)
        self._diagnostics = self._diagnostics_timer = None
        self._model_switch.forget()
        self.settings = self.supervisor = self.pipeline = self._worker = None

    def stop(self) -> None:
        """Stop the inference worker, waiting briefly for the batch in flight, and the live view (idempotent)."""
        if self._worker is not None:
            self._worker.stop(STOP_TIMEOUT_S)
        if self.live_view is not None:
            self.live_view.close()
            self.live_view = None

    def _log_model(self, model: ActiveModel) -> None:
        spec = model.engine.spec
        size = list(spec.input_size) if spec.input_size else 'native size'
        self.get_logger().info(
            f'model {model.path} ({spec.num_classes} classes, input {size}) on {model.engine.provider}')

    # -- callbacks: short, on the executor thread ---------------------------------------------

    def _on_frame(self, topic: str, msg: Any) -> None:
        camera = self.cameras[topic]
        camera.stats.count('received')
        if self._worker.slots.put(PendingFrame(topic, msg, time.monotonic())) is not None:
            camera.stats.count('dropped')

    def _publish_diagnostics(self) -> None:
        array = self.diagnostic_array()
        self._diagnostics.publish(array)
        if self.live_view is not None:
            stamp = array.header.stamp
            self.live_view.log_statistics(diagnostics_json([status_dict(s) for s in array.status],
                                                           stamp.sec * 1_000_000_000 + stamp.nanosec))

    def diagnostic_array(self) -> DiagnosticArray:
        """The /diagnostics message for now (each call starts a new rate period)."""
        now = time.monotonic()
        limits = Limits(self.settings.silence_timeout_s, self.settings.drop_warn_fraction)
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [camera_status(camera.namespace or topic, topic, camera.stats, now, limits,
                                    active=camera.active)
                      for topic, camera in self.cameras.items()]
        stage_ms = {stage: list(samples) for stage, samples in self.pipeline.stage_ms.items()}
        msg.status.append(engine_status(self.supervisor.health(), stage_ms))
        if self.ground is not None:
            msg.status.append(self.ground.status({t: c.namespace or t for t, c in self.cameras.items()}))
        if self.live_view is not None:
            msg.status.append(live_view_status(self.live_view.url, self.live_view.counts))
        return msg

    # -- runtime parameters -------------------------------------------------------------------

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        ours = {p.name: p.value for p in params if p.name in _SPECS}
        try:
            for name, value in ours.items():
                check_parameter(name, value)
            if self.settings is not None:  # configured: the whole set must stay valid together
                settings = settings_from_values(self._values | ours)
                if MODEL_PARAMS_SET & ours.keys():
                    self._model_switch.check(settings, self.supervisor.model.request.key)
        except SettingsError as err:
            return SetParametersResult(successful=False, reason=str(err))
        if not self._HAS_POST_SET:
            # Humble: apply once the executor runs next, when rclpy has stored the values.
            self._accepted_sets.append(params)
            self._apply_accepted.trigger()
        return SetParametersResult(successful=True)

    def _apply_accepted_sets(self) -> None:
        while self._accepted_sets:
            self._apply_parameters(self._accepted_sets.pop(0))

    def _apply_parameters(self, params: list[Parameter]) -> None:
        ours = {p.name: p.value for p in params if p.name in _SPECS}
        self._values.update(ours)
        if self.settings is None or not ours:
            return  # unconfigured: configure reads the values
        previous, self.settings = self.settings, settings_from_values(self._values)
        self._apply_settings(previous, self.settings)
        # Only a set that names a model parameter loads: after a switch failed on a value that
        # could not be reverted (an override back to unset), other sets must not retry it.
        wants_model = self.settings.model_key() != self.supervisor.model.request.key
        if wants_model and MODEL_PARAMS_SET & ours.keys():
            self._model_switch.start(model_request(self.settings))

    def _apply_settings(self, previous: NodeSettings, settings: NodeSettings) -> None:
        """Carry runtime changes to what does not read ``self.settings`` on every frame."""
        if settings.diagnostics_period_s != previous.diagnostics_period_s:
            self._diagnostics_timer.timer_period_ns = int(settings.diagnostics_period_s * 1e9)
        if settings.mask_resolution != previous.mask_resolution:
            for camera in self.cameras.values():
                camera.want_camera_info(settings.mask_resolution == MASK_AT_MODEL)
        self.supervisor.fallback_after = settings.cpu_fallback_after
        if self.ground is not None and settings.ground is not None:
            self.ground.apply(settings.ground)

    # -- switching the model at runtime -------------------------------------------------------

    def _model_switched(self, model: ActiveModel) -> None:
        """The supervisor runs ``model`` now: remember its parameters, republish the labels."""
        self._model_values = {name: self._values[name] for name in MODEL_PARAMS}
        labels = labels_message(model.engine.spec, model.path)
        for camera in self.cameras.values():
            camera.publish_labels(labels)
        self._offer_labels(model)
        self._log_model(model)

    def _model_switch_failed(self, load: BackgroundLoad) -> None:
        """Put the model parameters back to those of the running model."""
        # Put the parameters back so that they name the model that really runs. Unset values
        # (None) cannot be set again; they only ever stay unset.
        revert = [Parameter(name, value=value) for name, value in self._model_values.items()
                  if value is not None and self._values[name] != value]
        if revert:  # atomically: one at a time, the first would ask for yet another model
            self.set_parameters_atomically(revert)


def spin(make_node: Callable[[], Node], args: list[str] | None) -> int:
    """Run a node until SIGINT/SIGTERM; 1 with one sentence if it cannot start, else 0."""
    keep_large_buffers()  # before the first frame buffer is allocated
    prefer_asynchronous_publication()  # before rclpy.init: Fast DDS reads it when it starts
    share_profile()  # a profile set for either Fast DDS major version reaches the one installed
    # Not ``with rclpy.init()``: only Kilted's init returns a context manager (Jazzy's returns None).
    rclpy.init(args=args)
    try:
        try:
            node = make_node()
        except StartupError as err:
            rclpy.logging.get_logger('seg_node').fatal(str(err))
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        finally:
            node.stop()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as err:
        if rclpy.ok():
            raise
        # A signal shut the context down while the executor or the worker was still using it;
        # the stop is what was asked for, so it ends cleanly (one log line, no traceback).
        rclpy.logging.get_logger('seg_node').info(f'stopped while shutting down ({one_line(err)})')
    finally:
        rclpy.try_shutdown()
    return 0
