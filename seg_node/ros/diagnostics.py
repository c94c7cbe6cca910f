"""Build /diagnostics statuses from the node's counters, each level with the reason for it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from seg_node.runtime.stats import CameraStats, Period, percentile
from seg_node.runtime.supervisor import EngineHealth

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
Problem = tuple[bytes, str]  # (level, reason)


@dataclass(frozen=True)
class Limits:
    """Thresholds from the parameters of the same names."""

    silence_timeout_s: float  # 0: never report silence
    drop_warn_fraction: float


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, float):
        value = 'nan' if math.isnan(value) else f'{value:.2f}'
    return KeyValue(key=key, value=str(value))


def _summarize(status: DiagnosticStatus, problems: list[Problem], healthy: str) -> None:
    """Set the worst level of ``problems`` and every reason, or OK with ``healthy``."""
    if not problems:
        status.level, status.message = OK, healthy
        return
    status.level = max(level for level, _ in problems)
    status.message = '; '.join(reason for _, reason in problems)


def camera_problems(stats: CameraStats, period: Period, now: float, limits: Limits) -> list[Problem]:
    """(level, reason) for each thing wrong with one active camera in the last period."""
    problems = []
    if period.failed:
        problems.append((ERROR, f'{period.failed} frame(s) failed in the engine or on output'))
    silent = stats.silent_for(now)
    if limits.silence_timeout_s > 0 and silent > limits.silence_timeout_s:
        problems.append((ERROR, f'no frames for {silent:.1f} s'))
    if period.received and period.drop_fraction > limits.drop_warn_fraction:
        problems.append((WARN, f'{period.drop_fraction:.0%} of frames dropped for newer ones '
                               '(engine slower than the input)'))
    if period.rejected:
        problems.append((WARN, f'rejecting frames: {stats.last_reject_reason}'))
    return problems


def camera_status(name: str, topic: str, stats: CameraStats, now: float, limits: Limits, *,
                  active: bool = True) -> DiagnosticStatus:
    """One camera's status: rates, counters, latency, and the level with its reasons."""
    period = stats.period(now)
    totals = stats.totals()
    p50, p99 = stats.latency_percentiles()
    status = DiagnosticStatus(name=f'seg_node: {name}', hardware_id=topic)
    status.values = [
        _kv('input_rate_hz', period.rate_hz('received')),
        _kv('output_rate_hz', period.rate_hz('processed')),
        *(_kv(f'frames_{what}', count) for what, count in totals.items()),
        _kv('dropped_fraction', period.drop_fraction),
        _kv('seconds_since_last_frame', stats.silent_for(now)),
        _kv('latency_p50_ms', p50),
        _kv('latency_p99_ms', p99),
        _kv('last_reject_reason', stats.last_reject_reason),
    ]
    if not active:
        status.level, status.message = OK, 'inactive (not subscribed)'
        return status
    _summarize(status, camera_problems(stats, period, now, limits), 'ok')
    return status


def engine_problems(health: EngineHealth) -> list[Problem]:
    """(level, reason) for each thing wrong with the engine."""
    problems = []
    if health.consecutive_failures or health.period_failures:
        problems.append((ERROR, f'inference failing ({health.consecutive_failures} in a row, '
                                f'{health.period_failures} since the last report): {health.last_error}'))
    if health.fallback:
        problems.append((WARN, f'fell back to the CPU provider: {health.fallback}'))
    if health.switch_failed:
        problems.append((WARN, health.switch))
    return problems


def engine_status(health: EngineHealth, stage_ms: Mapping[str, list[float]]) -> DiagnosticStatus:
    """The engine's status: provider, model, failures, fallback, switch and per-stage medians."""
    status = DiagnosticStatus(name='seg_node: engine', hardware_id=health.provider)
    status.values = [
        _kv('provider', health.provider), _kv('model', health.model),
        _kv('model_sha256', health.model_sha256), _kv('classes', health.num_classes),
        _kv('engine_failures', health.failures),
        _kv('consecutive_failures', health.consecutive_failures),
        _kv('last_engine_error', health.last_error), _kv('cpu_fallback', health.fallback),
        _kv('model_switch', health.switch),
    ]
    status.values += [_kv(f'{stage}_ms_p50', percentile(samples, 50))
                      for stage, samples in stage_ms.items()]
    _summarize(status, engine_problems(health), f'running on {health.provider}')
    return status


def live_view_status(url: str, counts: Mapping[str, int]) -> DiagnosticStatus:
    """The Foxglove live view's status: where it listens and what it encoded or skipped."""
    status = DiagnosticStatus(name='seg_node: foxglove', hardware_id=url)
    status.values = [_kv('url', url), *(_kv(f'pictures_{what}' if what != 'bytes' else 'bytes_sent', count)
                                          for what, count in counts.items())]
    problems = [(WARN, f'{counts["failed"]} picture(s) could not be sent')] if counts.get('failed') else []
    _summarize(status, problems, f'listening on {url}')
    return status


def status_dict(status: DiagnosticStatus) -> dict:
    """A DiagnosticStatus as JSON-ready data with the message's field names."""
    return {'level': int.from_bytes(status.level, 'little') if isinstance(status.level, bytes) else int(status.level),
            'name': status.name, 'message': status.message, 'hardware_id': status.hardware_id,
            'values': [{'key': kv.key, 'value': kv.value} for kv in status.values]}
