"""Real-time semantic segmentation for ROS 2 camera streams."""

from seg_node.privacy import disable_telemetry

__version__ = '0.1.0'

# Before any module of the package imports onnxruntime (or ray): their telemetry stays off unless
# the user opts in with SEG_NODE_TELEMETRY=1 (see seg_node/privacy.py and the README, "Privacy").
disable_telemetry()
