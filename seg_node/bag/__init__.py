"""rosbag2 tooling on the ``rosbags`` library: synthesize, play, label, evaluate, render.

Everything here reads and writes bags without a ROS install; only ``play`` talks to the live
graph (rclpy). The console script is ``seg_bag`` (``seg_node.bag.cli``).
"""
