"""Latest-frame slots: one per camera, a newer frame replaces an unprocessed older one."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any


@dataclass
class PendingFrame:
    """A received message waiting for the engine."""

    camera: Hashable
    message: Any
    receive_time: float  # time.monotonic() at the subscription callback


class LatestFrameSlots:
    """Thread-safe single-slot-per-camera buffer between callbacks and the inference worker.

    Keeping only the newest frame bounds latency under overload: the engine always works on
    the most recent image and the frames it could not reach are counted as dropped.
    """

    def __init__(self) -> None:
        self._pending: dict[Hashable, PendingFrame] = {}
        self._ready = threading.Condition()
        self._closed = False

    def put(self, frame: PendingFrame) -> PendingFrame | None:
        """Store ``frame``; return the unprocessed frame it replaced (a drop), if any."""
        with self._ready:
            replaced = self._pending.get(frame.camera)
            self._pending[frame.camera] = frame
            self._ready.notify()
        return replaced

    def take_all(self, timeout: float) -> list[PendingFrame]:
        """Wait up to ``timeout`` s for frames, then take every camera's newest one."""
        with self._ready:
            if not self._pending and not self._closed:
                self._ready.wait(timeout)
            frames = list(self._pending.values())
            self._pending.clear()
        return frames

    def close(self) -> None:
        """Wake a waiting ``take_all`` so its thread can stop."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed
