"""Runs the active model for the worker: counts engine failures and falls back to the CPU if asked.

No ROS imports. The worker calls ``segment``; the node swaps in a new model with ``switch_to``
and reads ``health`` for /diagnostics. A failed engine call raises ``InferenceError`` so the
caller drops only that batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from seg_node.errors import one_line
from seg_node.runtime.loader import LOAD_ERRORS, ActiveModel, ModelRequest, cpu_request, load_model
from seg_node.runtime.results import Segmentation


class Logger(Protocol):
    """The logging calls the supervisor makes (rclpy's and Python's loggers both fit)."""

    def error(self, message: str) -> object:
        """Log an error."""

    def warning(self, message: str) -> object:
        """Log a warning."""


class InferenceError(RuntimeError):
    """The engine raised on a batch; the batch is dropped and the failure counted."""


@dataclass(frozen=True)
class EngineHealth:
    """What /diagnostics reports about the engine."""

    provider: str
    model: str
    model_sha256: str
    num_classes: int
    failures: int  # engine calls that raised since start
    period_failures: int  # ... since the previous ``health`` call
    consecutive_failures: int
    last_error: str
    fallback: str  # why the model now runs on the CPU fallback; '' when it does not
    switch: str  # outcome of the last runtime model switch; '' when there was none
    switch_failed: bool


class EngineSupervisor:
    """Owns the running model; thread-safe between the worker and the executor thread."""

    def __init__(self, model: ActiveModel, log: Logger, *, fallback_after: int = 0,
                 build: Callable[[ModelRequest], ActiveModel] = load_model) -> None:
        self.fallback_after = fallback_after  # 0: never fall back
        self._model = model
        self._log = log
        self._build = build
        self._lock = threading.Lock()
        self._failures = self._reported_failures = self._consecutive = 0
        self._last_error = self._fallback = self._switch = ''
        self._switch_failed = False
        self._fallback_tried: ActiveModel | None = None

    @property
    def model(self) -> ActiveModel:
        """The model the next batch runs on."""
        return self._model

    def segment(self, images: Sequence[np.ndarray], *,
                want_confidence: bool) -> tuple[list[Segmentation], ActiveModel]:
        """Segment ``images`` on the current model; return the results and the model used."""
        model = self._model
        try:
            results = model.engine.segment(images, want_confidence=want_confidence)
        except Exception as err:  # a CUDA or runtime error must not kill the worker: re-raised typed
            reason = one_line(err)
            self._record_failure(model, reason)
            raise InferenceError(reason) from err
        with self._lock:
            self._consecutive = 0
        return results, model

    def _record_failure(self, model: ActiveModel, reason: str) -> None:
        with self._lock:
            self._failures += 1
            self._consecutive += 1
            self._last_error = reason
            due = (self.fallback_after > 0 and self._consecutive >= self.fallback_after
                   and model.engine.provider != 'cpu' and model is self._model
                   and model is not self._fallback_tried)
            if due:
                self._fallback_tried = model
            count = self._consecutive
        if due:
            self._fall_back(model, count, reason)

    def _fall_back(self, model: ActiveModel, count: int, reason: str) -> None:
        provider = model.engine.provider
        self._log.error(f'the engine on {provider} failed {count} times in a row ({reason}); '
                        'rebuilding the model on the CPU provider')
        try:
            cpu = self._build(cpu_request(model))
        except LOAD_ERRORS as err:
            self._log.error(f'CPU fallback failed, staying on {provider}: {err}')
            return
        with self._lock:
            if self._model is not model:  # a runtime model switch won meanwhile
                return
            self._model = cpu
            self._consecutive = 0
            self._fallback = f'{provider} failed {count} times in a row ({reason})'
        self._log.warning(f'now running on the CPU provider: {self._fallback}')

    def switch_to(self, model: ActiveModel) -> None:
        """Run ``model`` from the next batch on (the old one is released when no batch uses it)."""
        with self._lock:
            self._model = model
            self._consecutive = 0
            self._fallback = ''
            self._fallback_tried = None

    def note_switch(self, text: str, *, failed: bool = False) -> None:
        """Remember the state of a runtime model switch for diagnostics."""
        with self._lock:
            self._switch, self._switch_failed = text, failed

    def health(self) -> EngineHealth:
        """A consistent snapshot; ``period_failures`` counts since the previous call."""
        with self._lock:
            model = self._model
            period = self._failures - self._reported_failures
            self._reported_failures = self._failures
            return EngineHealth(
                provider=model.engine.provider, model=model.path, model_sha256=model.engine.model_sha256,
                num_classes=model.engine.spec.num_classes, failures=self._failures,
                period_failures=period, consecutive_failures=self._consecutive,
                last_error=self._last_error, fallback=self._fallback, switch=self._switch,
                switch_failed=self._switch_failed)

