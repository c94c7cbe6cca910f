"""Switching the model at runtime: load beside the running one, switch between two batches.

A set of a model parameter starts a ``BackgroundLoad`` on a thread of its own; when it finishes,
a guard condition hands it to the executor thread, where the supervisor switches to the new
engine (the worker picks it up with its next batch) or, when loading failed, keeps the old one.
"""

from __future__ import annotations

from collections.abc import Callable

from rclpy.node import Node

from seg_node.model.file import ModelFileError, resolve_model_path
from seg_node.ros.parameters import NodeSettings, SettingsError
from seg_node.runtime.loader import ActiveModel, BackgroundLoad, ModelRequest
from seg_node.runtime.supervisor import EngineSupervisor


class ModelSwitch:
    """At most one runtime model load at a time, and what happens when it finishes."""

    def __init__(self, node: Node, supervisor: Callable[[], EngineSupervisor | None], *,
                 switched: Callable[[ActiveModel], None], failed: Callable[[BackgroundLoad], None]) -> None:
        self._node = node
        self._supervisor = supervisor  # None while the node is unconfigured
        self._switched = switched
        self._failed = failed
        self._loading: BackgroundLoad | None = None
        self._loaded = node.create_guard_condition(self._on_loaded)

    @property
    def loading(self) -> ModelRequest | None:
        """The request being loaded, or None."""
        return self._loading.request if self._loading is not None else None

    def check(self, settings: NodeSettings, running_key: tuple) -> None:
        """Raise SettingsError if ``settings`` ask for a new model that cannot be loaded now."""
        if settings.model_key() == running_key:
            return
        if self._loading is not None:
            msg = f'model {self._loading.request.path!r} is still loading; set again once it finished'
            raise SettingsError(msg)
        try:
            resolve_model_path(settings.model_path)
        except ModelFileError as err:
            raise SettingsError(str(err)) from None

    def start(self, request: ModelRequest) -> None:
        """Load ``request`` on its own thread beside the running model."""
        supervisor = self._supervisor()
        self._node.get_logger().info(f'loading model {request.path} beside the running {supervisor.model.path}')
        supervisor.note_switch(f'loading {request.path}')
        self._loading = BackgroundLoad(request, done=self._notify)
        self._loading.start()

    def forget(self) -> None:
        """Drop a load in flight (the node is cleaning up): it finishes unseen."""
        self._loading = None

    def _notify(self) -> None:
        """Hand a finished load to the executor thread (runs on the loading thread)."""
        try:
            self._loaded.trigger()
        except Exception:  # noqa: BLE001 - the node shut down while the model loaded: nobody waits
            return

    def _on_loaded(self) -> None:
        load, supervisor = self._loading, self._supervisor()
        if load is None or not load.finished or supervisor is None:
            return
        self._loading = None
        if load.model is None:
            running = supervisor.model.path
            text = f'switch to {load.request.path} failed: {load.error}; still running {running}'
            supervisor.note_switch(text, failed=True)
            self._node.get_logger().error(f'model {text}')
            self._failed(load)
            return
        supervisor.switch_to(load.model)
        supervisor.note_switch(f'switched to {load.model.path}')
        self._switched(load.model)
