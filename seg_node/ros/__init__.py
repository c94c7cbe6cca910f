"""The ROS 2 wiring: the node and its managed twin, camera endpoints, worker, diagnostics, parameters.

The only subpackage (with the bag player/recorder) that imports rclpy.
"""
