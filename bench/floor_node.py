"""The floor: what the middleware alone costs. Takes each frame, publishes outputs of seg_node's sizes.

No model, no conversion, no rendering: for every input it restamps three messages built once
(a mono8 mask, an rgb8 colour mask and an rgb8 overlay at the input's size) and publishes them,
with seg_node's default QoS (best-effort input of depth 1, reliable outputs of depth 1) and the
same middleware settings. Whatever seg_node adds to this node's latency is the part it can win.
"""

from __future__ import annotations

import array
import contextlib

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from seg_node.msg import topics
from seg_node.ros.camera import qos


def _blank(height: int, width: int, encoding: str) -> Image:
    channels = 1 if encoding == 'mono8' else 3
    msg = Image(check_fields=True)
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, width * channels
    msg.data = array.array('B', bytes(height * width * channels))
    return msg


class FloorNode(Node):
    """Publishes output-sized messages for every input frame, doing nothing else."""

    def __init__(self) -> None:
        super().__init__('seg_node')
        image_topics = self.declare_parameter('image_topics', ['/camera/image_raw']).value
        self.outputs: dict[str, dict[str, Image]] = {}
        self.pubs = {}
        for topic in image_topics:
            self.pubs[topic] = {name: self.create_publisher(Image, topics.segmentation_topic(topic, name),
                                                            qos('reliable', 1))
                                for name in ('mask', 'color_mask', 'overlay')}
            msg_type = CompressedImage if topics.is_compressed(topic) else Image
            self.create_subscription(msg_type, topic, lambda msg, t=topic: self.callback(msg, t),
                                     qos('best_effort', 1))

    def callback(self, msg: Image | CompressedImage, topic: str) -> None:
        """Publish the three outputs of this frame's size with its header."""
        size = (msg.height, msg.width) if hasattr(msg, 'height') else (1080, 1920)
        outputs = self.outputs.get(topic)
        if outputs is None or (outputs['mask'].height, outputs['mask'].width) != size:
            outputs = self.outputs[topic] = {name: _blank(*size, topics.OUTPUT_ENCODINGS[name])
                                             for name in ('mask', 'color_mask', 'overlay')}
        for name, out in outputs.items():
            out.header = msg.header
            self.pubs[topic][name].publish(out)


def main() -> None:
    """Run the floor node until interrupted."""
    rclpy.init()
    node = FloorNode()
    node.get_logger().info('segmenting')  # what the benchmark waits for
    with contextlib.suppress(KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        rclpy.spin(node)


if __name__ == '__main__':
    main()
