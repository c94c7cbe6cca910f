"""Helpers for tests that talk to a seg_node process over real DDS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

REPO = Path(__file__).resolve().parents[1]


def wait_for(condition: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """Poll ``condition`` on a steady clock until it holds or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period)
    return condition()


class NodeProcess:
    """``seg_node`` as its own process, as a user runs it."""

    def __init__(self, params: dict[str, object], *, extra_args: list[str] | None = None,
                 module: str = 'seg_node.ros.node') -> None:
        args = [sys.executable, '-m', module, '--ros-args']
        for name, value in params.items():
            args += ['-p', f'{name}:={_param_text(value)}']
        args += extra_args or []
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=REPO)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def output(self) -> str:
        """Everything the process printed so far."""
        return '\n'.join(self.lines)

    def wait_ready(self, timeout: float = 30.0, marker: str = 'segmenting') -> None:
        """Wait until the node logs ``marker`` (by default: that it is segmenting), or fail with its output."""
        if not wait_for(lambda: marker in self.output or self.proc.poll() is not None, timeout):
            raise AssertionError(f'seg_node did not start:\n{self.output}')
        if self.proc.poll() is not None:
            raise AssertionError(f'seg_node exited with {self.proc.returncode}:\n{self.output}')

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """Send ``sig`` and return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=2)
        return self.proc.returncode


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_param_text(v) for v in value) + ']'
    return str(value)


class SpinningNode:
    """A test-side rclpy node spun by a background executor."""

    def __init__(self, name: str) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutdown races end the loop
                break

    def close(self) -> None:
        """Stop spinning and shut the context down."""
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(timeout=2)
