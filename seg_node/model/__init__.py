"""The model contract: what an ONNX model must look like, its class table, and how it is wrapped.

ROS-free and torch-free: imported by the runtime, the ROS node, the bag tools and training.
"""
