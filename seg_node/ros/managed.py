"""seg_node as a managed (lifecycle) node: ``python -m seg_node.ros.managed --ros-args ...``.

The engine is built in ``configure`` (a TensorRT build can take minutes), images are taken only
while ``active``, so a system launcher can bring the node up in order. The wiring is the plain
node's (``core.py``); only the moments differ.
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from seg_node.ros.node_base import SegmentationCore, StartupError, spin


class ManagedSegmentationNode(SegmentationCore, LifecycleNode):
    """The segmentation node, driven by lifecycle transitions."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('seg_node', **kwargs)
        self._declare_parameters()
        self.get_logger().info('unconfigured: waiting for the configure transition')

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Build the model, publishers and worker.

        SUCCESS goes to "inactive"; FAILURE (bad parameters or model, reason logged) stays in
        "unconfigured" with nothing left allocated.
        """
        try:
            self._configure()
        except StartupError as err:
            self.get_logger().error(f'configure failed: {err}')
            self._cleanup()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the cameras; SUCCESS goes to "active"."""
        self._activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe from the cameras; SUCCESS goes to "inactive"."""
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model, publishers and worker; SUCCESS goes to "unconfigured"."""
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything from any state; SUCCESS goes to "finalized"."""
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: free everything; SUCCESS goes to "unconfigured"."""
        self.get_logger().error(f'transition from {state.label} raised; cleaning up')
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS


def main(args: list[str] | None = None) -> int:
    """Console entry point of the managed node; exits 1 with one sentence on bad parameters."""
    return spin(ManagedSegmentationNode, args)


if __name__ == '__main__':
    sys.exit(main())
