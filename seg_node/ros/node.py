"""The seg_node ROS 2 node: camera images in, class masks, colour masks and overlays out.

Concurrency: subscription callbacks only park the newest message of their camera in a
``LatestFrameSlots``; one worker thread takes every waiting camera's frame, runs them through
the engine as one batch and publishes. The executor thread never blocks on inference, and a
slow engine drops stale frames instead of queueing them. The wiring lives in ``core.py`` and
is shared with the managed (lifecycle) node in ``managed.py``.
"""

from __future__ import annotations

import sys
from typing import Any

from seg_node.ros.node_base import SegmentationCore, StartupError, spin

__all__ = ['SegmentationNode', 'StartupError', 'main']


class SegmentationNode(SegmentationCore):
    """Segments every configured camera stream with one shared engine, from construction on."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('seg_node', **kwargs)
        self._declare_parameters()
        self._configure()
        self._activate()


def main(args: list[str] | None = None) -> int:
    """Console entry point: ``seg_node --ros-args ...``; exits 1 with one sentence on bad setup."""
    return spin(SegmentationNode, args)


if __name__ == '__main__':
    sys.exit(main())
