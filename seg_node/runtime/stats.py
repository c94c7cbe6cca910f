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


@dataclass(frozen=True)
class Period:
    """Counter increments of one camera between two diagnostics reports."""

    seconds: float
    received: int
    processed: int
    dropped: int
    rejected: int
    failed: int

    def rate_hz(self, what: str) -> float:
        """Events per second of counter ``what`` over this period."""
        return getattr(self, what) / self.seconds if self.seconds > 0 else 0.0

    @property
    def drop_fraction(self) -> float:
        """Share of the frames received in this period that a newer frame replaced."""
        return self.dropped / self.received if self.received else 0.0


_PERIOD_COUNTERS = ('received', 'processed', 'dropped', 'rejected', 'failed')


@dataclass
class CameraStats:
    """Counts and timings of one camera since start, with a recent-latency window."""

    received: int = 0
    processed: int = 0
    dropped: int = 0  # replaced by a newer frame before the engine took it
    rejected: int = 0  # bad input: unknown encoding, truncated data, corrupt JPEG, ...
    failed: int = 0  # the engine raised on this frame
    skipped: int = 0  # taken while no output had a subscriber, so not computed
    deserialized: int = 0  # serialized frames the CDR reader could not read, rclpy could (then processed)
    last_reject_reason: str = ''
    last_receive_time: float | None = None  # time.monotonic()
    watch_since: float = field(default_factory=time.monotonic)  # silence is measured from here
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=600))
    _period_mark: tuple = ()
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

    def period(self, now: float | None = None) -> Period:
        """Counter increments since the previous call (the first call covers everything so far)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            values = tuple(getattr(self, name) for name in _PERIOD_COUNTERS)
            start, *before = self._period_mark or (self.watch_since, *(0,) * len(values))
            self._period_mark = (now, *values)
        deltas = (v - b for v, b in zip(values, before, strict=True))
        return Period(max(0.0, now - start), *deltas)

    def silent_for(self, now: float | None = None) -> float:
        """Seconds since the last frame (or since watching began, when none came since)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self.last_receive_time
            since = self.watch_since
        return now - max(since, last) if last is not None else now - since

    def watch(self, now: float | None = None) -> None:
        """Start measuring silence afresh (the camera was just subscribed)."""
        with self._lock:
            self.watch_since = time.monotonic() if now is None else now

    def latency_percentiles(self) -> tuple[float, float]:
        """(p50, p99) of the recent latencies in ms."""
        with self._lock:
            window = list(self.latency_ms)
        return percentile(window, 50), percentile(window, 99)

    def totals(self) -> dict[str, int]:
        """Every counter at once, read consistently."""
        with self._lock:
            return {name: getattr(self, name) for name in (*_PERIOD_COUNTERS, 'skipped', 'deserialized')}
