"""Camera messages as data: Image/CompressedImage <-> numpy, topic naming, the class-table payload.

Works on any object with the messages' fields (rclpy or rosbags); imports neither rclpy nor torch.
"""
