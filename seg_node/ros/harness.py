"""Running ROS 2 processes from a program: DDS kept on this machine, a node as a child process.

The tests, the demo and the benchmarks all start ``seg_node`` (and their helper processes)
through ``ChildProcess``/``NodeProcess`` and isolate DDS with ``isolate_dds``; the shell
equivalent for commands typed by hand is ``scripts/isolated.sh``. Imports no rclpy, so it can
run before anything else touches ROS.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from seg_node.ros.dds_profile import SHIPPED_PROFILE, share_profile

# ROS_DOMAIN_IDs picked for isolated runs; scripts/isolated.sh picks from the same range.
DOMAIN_RANGE = (10, 99)


def isolate_dds(repo: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """Keep DDS on this machine: localhost discovery, the project's Fast DDS profile, a domain of our own.

    Updates ``env`` (default: ``os.environ``) in place and returns it. Values already set (by
    ``scripts/isolated.sh`` or the user) are kept, except that discovery is always localhost-only.
    The profile goes under both Fast DDS 2.x's and 3.x's variable (``dds_profile``).
    """
    env = os.environ if env is None else env
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    share_profile(env, repo / SHIPPED_PROFILE)
    env.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(*DOMAIN_RANGE)))
    return env


def wait_for(condition: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """Poll ``condition`` on a steady clock until it holds or ``timeout`` s pass; return whether it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period)
    return condition()


class ChildProcess:
    """A child process whose output lines are collected in the background (and mirrored to ``log``)."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 log: Path | None = None) -> None:
        env = dict(os.environ if env is None else env, PYTHONUNBUFFERED='1')
        self.proc = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, cwd=cwd)
        self.lines: list[str] = []
        self._log = log.open('w') if log else None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if self._log:
                self._log.write(line)
                self._log.flush()

    @property
    def output(self) -> str:
        """Everything the process printed so far."""
        return '\n'.join(self.lines)

    @property
    def name(self) -> str:
        """A short name for messages: the module or program it runs."""
        args = list(self.proc.args)
        return args[args.index('-m') + 1] if '-m' in args else Path(args[0]).name

    def wait_for_line(self, needle: str, timeout: float) -> None:
        """Wait until a printed line contains ``needle``; raise RuntimeError with the output if it exits first."""
        wait_for(lambda: needle in self.output or self.proc.poll() is not None, timeout, period=0.05)
        if needle in self.output:
            return
        if self.proc.poll() is not None:
            msg = f'{self.name} exited with {self.proc.returncode} before printing {needle!r}:\n{self.output}'
        else:
            msg = f'{self.name} did not print {needle!r} within {timeout:g} s:\n{self.output}'
        raise RuntimeError(msg)

    def result(self, timeout: float) -> dict:
        """The JSON of the process's ``RESULT {...}`` line, once it exited (the benchmarks' protocol)."""
        self.proc.wait(timeout)
        self._reader.join(2)
        for line in self.lines:
            if line.startswith('RESULT '):
                return json.loads(line[len('RESULT '):])
        msg = f'no RESULT line from {self.name}:\n' + '\n'.join(self.lines[-20:])
        raise RuntimeError(msg)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """Send ``sig`` (SIGKILL after ``timeout`` s) and return the exit code (idempotent)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=2)
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode


def parameter_text(value: object) -> str:
    """A parameter value as ``--ros-args -p name:=value`` takes it (YAML flow syntax)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(parameter_text(v) for v in value) + ']'
    return str(value)


def node_command(params: Mapping[str, object], *, module: str = 'seg_node.ros.node',
                 extra_args: Sequence[str] = ()) -> list[str]:
    """``python -m <module> --ros-args -p name:=value ...`` for a node run as a user would."""
    args = [sys.executable, '-m', module, '--ros-args']
    for name, value in params.items():
        args += ['-p', f'{name}:={parameter_text(value)}']
    return [*args, *extra_args]


class NodeProcess(ChildProcess):
    """``seg_node`` (or its managed twin) as its own process, as a user runs it."""

    def __init__(self, params: Mapping[str, object], *, module: str = 'seg_node.ros.node',
                 extra_args: Sequence[str] = (), cwd: Path | None = None, log: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__(node_command(params, module=module, extra_args=extra_args), env=env, cwd=cwd, log=log)

    def wait_ready(self, timeout: float = 30.0, marker: str = 'segmenting') -> None:
        """Wait until the node logs ``marker`` (by default: that it is segmenting); raise with its output if not."""
        self.wait_for_line(marker, timeout)
