"""Third-party telemetry off by default: nothing about the vehicle leaves it unless the user asks.

``seg_node/__init__.py`` applies ``disable_telemetry`` when the package is first imported, which is
before any of its modules imports a dependency that collects usage data, so every entry point (the
nodes, ``seg_bag``, training, ``seg_build_engine``, the demo, the benchmarks, the tests) and every
child process they start runs with it. Setting ``SEG_NODE_TELEMETRY=1`` opts in: the
dependencies then behave as they ship. A variable the user already set is never overridden.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# Set to 1 to leave the dependencies' own telemetry settings alone (opt in).
OPT_IN = 'SEG_NODE_TELEMETRY'

# variable -> (value that turns collection off, what the dependency collects by default).
TELEMETRY_OFF = {
    'ORT_DISABLE_TELEMETRY': (
        '1', 'onnxruntime: an event per import and per session (device id, Python path, OS, CPU, memory, '
             'VM detection) queued in ~/.cache/Microsoft/DeveloperTools/.onnxruntime for upload'),
    'RAY_USAGE_STATS_ENABLED': (
        '0', 'ray: cluster usage statistics reported to its vendor (for fleet labelling on Ray)'),
}


def opted_in(env: MutableMapping[str, str] | None = None) -> bool:
    """True when the user asked for the dependencies' telemetry (``SEG_NODE_TELEMETRY=1``)."""
    env = os.environ if env is None else env
    return env.get(OPT_IN, '').strip().lower() in ('1', 'true', 'yes', 'on')


def telemetry_environment(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The variables that turn telemetry off, as a launch file or a child process needs them ({} if opted in)."""
    env = os.environ if env is None else env
    if opted_in(env):
        return {}
    return {name: env.get(name, off) for name, (off, _) in TELEMETRY_OFF.items()}


def disable_telemetry(env: MutableMapping[str, str] | None = None) -> None:
    """Turn every known dependency's telemetry off in ``env`` (default ``os.environ``) unless opted in."""
    env = os.environ if env is None else env
    for name, value in telemetry_environment(env).items():
        env.setdefault(name, value)
