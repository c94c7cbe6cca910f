"""Per-camera counters and latency percentiles for diagnostics (no ROS)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np


def percentile(samples: list[float] | deque, q: float) -> float:
    """The q-th percentile of ``samples`` (NaN when empty)."""
    if not samples:
        return float('nan')
    return float(np.percentile(np.fromiter(samples, float, len(samples)), q))


@dataclass
class CameraStats:
    """Counts and timings of one camera since start, with a recent-latency window."""

    received: int = 0
    processed: int = 0
    dropped: int = 0  # replaced by a newer frame before the engine took it
    rejected: int = 0  # bad input: unknown encoding, truncated data, corrupt JPEG, ...
    failed: int = 0  # the engine raised on this frame
    skipped: int = 0  # taken while no output had a subscriber, so not computed
    last_reject_reason: str = ''
    last_receive_time: float | None = None  # time.monotonic()
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=600))
    _rate_marks: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``what`` (thread-safe)."""
        with self._lock:
            setattr(self, what, getattr(self, what) + n)
            if what == 'received':
                self.last_receive_time = time.monotonic()

    def reject(self, reason: str) -> None:
        """Count a rejected frame and remember why."""
        with self._lock:
            self.rejected += 1
            self.last_reject_reason = reason

    def record_latency(self, latency_ms: float) -> None:
        """Remember one receive -> publish latency."""
        with self._lock:
            self.latency_ms.append(latency_ms)

    def rate_hz(self, what: str, now: float | None = None) -> float:
        """Rate of counter ``what`` since the previous call for the same counter."""
        now = time.monotonic() if now is None else now
        with self._lock:
            value = getattr(self, what)
            last = self._rate_marks.get(what)
            self._rate_marks[what] = (now, value)
        if last is None or now <= last[0]:
            return 0.0
        return (value - last[1]) / (now - last[0])

    def latency_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of the recent latencies in ms."""
        with self._lock:
            window = list(self.latency_ms)
        return percentile(window, 50), percentile(window, 99)
