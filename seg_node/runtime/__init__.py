"""Running a model: the ONNX Runtime engine, the one model loader, rendering, metrics, counters.

ROS-free and torch-free: the node, the offline bag tools and evaluation share every piece.
"""
