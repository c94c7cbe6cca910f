"""Which Fast DDS profile file reaches the middleware, on every distro.

Fast DDS 2.x (Humble 2.6, Jazzy 2.14) reads only ``FASTRTPS_DEFAULT_PROFILES_FILE``; Fast DDS 3.x
(Kilted) reads only ``FASTDDS_DEFAULT_PROFILES_FILE``. A profile set under the other distro's name
silently does nothing, and without the shipped profile's large shared-memory segment most raw
frames over 512 KB from a best-effort camera are lost. So the node, the launch file and the
process harness put a profile set under either name (or the shipped one, for the harness) under
the name the installed Fast DDS reads, and the node warns once at start-up when a best-effort raw
camera meets Fast DDS without any profile. Imports no rclpy: the harness uses it before anything
touches ROS.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
from collections.abc import MutableMapping, Sequence
from pathlib import Path

try:  # ROS's package index (any ROS install, and the PyPI wheels); a pip-only checkout may lack it
    from ament_index_python.packages import get_package_share_directory
except ImportError:  # pragma: no cover - depends on the install
    get_package_share_directory = None

# Fast DDS 3.x's name first: when both are set and differ, that is the value reported in effect.
PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
FASTDDS_2_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'
FASTDDS_3_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'
SHIPPED_PROFILE = Path('config') / 'fastdds_localhost.xml'
# The distros whose binaries ship Fast DDS 2.x; later ones (Kilted, Rolling) ship 3.x.
FASTDDS_2_DISTROS = ('humble', 'iron', 'jazzy')


def profile_in_effect(env: MutableMapping[str, str] | None = None) -> str | None:
    """The profile file the environment names under either variable, or None."""
    env = os.environ if env is None else env
    return next((env[name] for name in PROFILE_VARIABLES if env.get(name)), None)


def share_profile(env: MutableMapping[str, str] | None = None, default: str | Path | None = None) -> dict[str, str]:
    """Put the profile (whichever variable names it, else ``default``) where the installed Fast DDS reads it.

    Sets the variable of the installed Fast DDS major version (both when it is unknown) and returns
    what it set; a value already set is never replaced. Kilted's rmw also reads Fast DDS 2.x's name
    but warns that it is deprecated on every start, so there a copy equal to the 3.x value is dropped.
    """
    env = os.environ if env is None else env
    value = profile_in_effect(env) or (str(default) if default is not None else None)
    if value is None:
        return {}
    major = fastdds_major_version(env)
    added = {name: value for name in profile_variables(major) if not env.get(name)}
    env.update(added)
    if major == 3 and env.get(FASTDDS_2_VARIABLE) == env.get(FASTDDS_3_VARIABLE):
        del env[FASTDDS_2_VARIABLE]
    return added


def fastdds_major_version(env: MutableMapping[str, str] | None = None) -> int | None:
    """2 or 3: the Fast DDS this ROS install ships (``ROS_DISTRO``, else the PyPI wheels), or None if unknown."""
    env = os.environ if env is None else env
    distro = env.get('ROS_DISTRO', '').strip().lower()
    if distro:
        return 2 if distro in FASTDDS_2_DISTROS else 3
    for distribution in ('ros-fastdds', 'ros-fastrtps'):  # the ROS 2 wheels on PyPI: 3.x, then 2.x names
        try:
            return int(importlib.metadata.version(distribution).split('.')[0])
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
    return None


def profile_variables(major: int | None) -> tuple[str, ...]:
    """The variable Fast DDS ``major`` reads; both names when the version is unknown."""
    if major is None:
        return (FASTDDS_2_VARIABLE, FASTDDS_3_VARIABLE)
    return (FASTDDS_2_VARIABLE,) if major < 3 else (FASTDDS_3_VARIABLE,)


def shipped_profile_path() -> Path:
    """The installed copy of the shipped profile (the package's share directory), else the source checkout's."""
    candidates = [Path(__file__).resolve().parents[2] / SHIPPED_PROFILE]
    if get_package_share_directory is not None:
        # Not installed in an ament prefix (a pip install), or no ROS environment sourced.
        with contextlib.suppress(LookupError, OSError):
            candidates.insert(0, Path(get_package_share_directory('seg_node')) / SHIPPED_PROFILE)
    return next((path for path in candidates if path.is_file()), candidates[0])


def missing_profile_warning(rmw_identifier: str, raw_best_effort_topics: Sequence[str],
                            env: MutableMapping[str, str] | None = None) -> str | None:
    """One warning line when raw best-effort cameras meet Fast DDS without a profile; None when all is well."""
    env = os.environ if env is None else env
    if not rmw_identifier.startswith('rmw_fastrtps') or not raw_best_effort_topics or profile_in_effect(env):
        return None
    names = profile_variables(fastdds_major_version(env))
    unset = f'{names[0]} is not set' if len(names) == 1 else f'neither {" nor ".join(names)} is set'
    assignment = ' and '.join(f'{name}={shipped_profile_path()}' for name in names)
    return (f'Fast DDS runs without a profile ({unset}): raw frames over 512 KB on the best-effort camera '
            f'topics {", ".join(raw_best_effort_topics)} fall back to UDP and most are lost; set {assignment} '
            '(README: "Large frames over DDS")')
