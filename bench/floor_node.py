"""The floor: what the middleware alone costs. Takes each frame, publishes outputs of seg_node's sizes.

No model, no conversion, no rendering: for every input it restamps three outputs kept from
the first frame (a mono8 mask, an rgb8 colour mask and an rgb8 overlay at the input's size)
and publishes them, with seg_node's default QoS (best-effort input of depth 1, reliable
outputs of depth 1), the same middleware settings and the same data path (``data_path``:
serialized take and publish where rcl allows it, as seg_node). Whatever seg_node adds to this
node's latency is the part it can win.
"""

from __future__ import annotations

import contextlib

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from seg_node.msg import topics
from seg_node.ros.camera import qos
from seg_node.ros.transport import ImageOutput, prefer_asynchronous_publication, take_frame

FLOOR_OUTPUTS = ('mask', 'color_mask', 'overlay')


class FloorNode(Node):
    """Publishes output-sized messages for every input frame, doing nothing else."""

    def __init__(self) -> None:
        super().__init__('seg_node')
        image_topics = self.declare_parameter('image_topics', ['/camera/image_raw']).value
        serialized = self.declare_parameter('data_path', 'auto').value == 'auto'
        self.outputs: dict[str, dict[str, ImageOutput]] = {}
        for topic in image_topics:
            self.outputs[topic] = {
                name: ImageOutput(self.create_publisher(Image, topics.segmentation_topic(topic, name),
                                                        qos('reliable', 1)),
                                  topics.OUTPUT_ENCODINGS[name], serialized=serialized)
                for name in FLOOR_OUTPUTS}
            compressed = topics.is_compressed(topic)
            self.create_subscription(CompressedImage if compressed else Image, topic,
                                     lambda msg, t=topic, c=compressed: self.callback(msg, t, c),
                                     qos('best_effort', 1), raw=serialized)

    def callback(self, payload: object, topic: str, compressed: bool) -> None:
        """Publish the three outputs of this frame's size with its header."""
        msg, _ = take_frame(payload, compressed)
        size = (msg.height, msg.width) if hasattr(msg, 'height') else (1080, 1920)
        for name, output in self.outputs[topic].items():
            channels = 1 if topics.OUTPUT_ENCODINGS[name] == 'mono8' else 3
            shape = size if channels == 1 else (*size, 3)
            output.publish(output.buffer(msg.header, shape))  # pixels left as they were


def main() -> None:
    """Run the floor node until interrupted."""
    prefer_asynchronous_publication()  # as seg_node's spin() does
    rclpy.init()
    node = FloorNode()
    node.get_logger().info('segmenting')  # what the benchmark waits for
    with contextlib.suppress(KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        rclpy.spin(node)


if __name__ == '__main__':
    main()
