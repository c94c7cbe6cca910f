"""Build /diagnostics statuses from the node's counters."""

from __future__ import annotations

import math
from collections.abc import Mapping

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from seg_node.stats import CameraStats, percentile


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, float):
        value = 'nan' if math.isnan(value) else f'{value:.2f}'
    return KeyValue(key=key, value=str(value))


def camera_status(name: str, topic: str, stats: CameraStats, now: float) -> DiagnosticStatus:
    """One camera's status: rates, counters, latency; WARN on rejected frames."""
    p50, p99 = stats.latency_percentiles()
    status = DiagnosticStatus(name=f'seg_node: {name}', hardware_id=topic)
    status.values = [
        _kv('input_rate_hz', stats.rate_hz('received', now)),
        _kv('output_rate_hz', stats.rate_hz('processed', now)),
        _kv('frames_received', stats.received),
        _kv('frames_processed', stats.processed),
        _kv('frames_dropped', stats.dropped),
        _kv('frames_rejected', stats.rejected),
        _kv('frames_failed', stats.failed),
        _kv('frames_skipped', stats.skipped),
        _kv('latency_p50_ms', p50),
        _kv('latency_p99_ms', p99),
        _kv('last_reject_reason', stats.last_reject_reason),
    ]
    rejected_now = stats.rate_hz('rejected', now)
    if stats.failed and stats.rate_hz('failed', now) > 0:
        status.level, status.message = DiagnosticStatus.ERROR, 'engine failing on this camera'
    elif rejected_now > 0:
        status.level = DiagnosticStatus.WARN
        status.message = f'rejecting frames: {stats.last_reject_reason}'
    else:
        status.level, status.message = DiagnosticStatus.OK, 'ok'
    return status


def engine_status(provider: str, model: str, num_classes: int,
                  stage_ms: Mapping[str, list[float]]) -> DiagnosticStatus:
    """The engine's status: provider in use and per-stage median times."""
    status = DiagnosticStatus(name='seg_node: engine', hardware_id=provider,
                              level=DiagnosticStatus.OK, message=f'running on {provider}')
    status.values = [_kv('provider', provider), _kv('model', model), _kv('classes', num_classes)]
    status.values += [_kv(f'{stage}_ms_p50', percentile(samples, 50))
                      for stage, samples in stage_ms.items()]
    return status
