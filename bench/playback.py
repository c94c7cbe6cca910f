"""Publish pre-loaded 1080p frames on N cameras at a fixed rate, stamped at send time."""

from __future__ import annotations

import argparse
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from bench.common import camera_topic, emit, frames, image_message, now_stamp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--cameras', type=int, default=1)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--seconds', type=float, default=5.0)
    parser.add_argument('--compressed', action='store_true')
    args = parser.parse_args()
    rclpy.init()
    node = Node('bench_playback')
    # Like a camera driver with default QoS: reliable, depth 10. It matches both the node's
    # best-effort subscription and the baseline's reliable one.
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    msg_type = CompressedImage if args.compressed else Image
    pubs, messages = [], []
    for cam in range(args.cameras):
        pubs.append(node.create_publisher(msg_type, camera_topic(cam, args.compressed), qos))
        messages.append([image_message(rgb, f'cam{cam}', args.compressed) for rgb in frames(4, cam)])
    deadline = time.monotonic() + 30
    while any(p.get_subscription_count() == 0 for p in pubs) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the subscriber side finish matching too
    period = 1.0 / args.rate
    sent = 0
    start = time.monotonic()
    tick = start
    while tick - start < args.seconds:
        for cam, pub in enumerate(pubs):
            msg = messages[cam][sent % len(messages[cam])]
            msg.header.stamp.sec, msg.header.stamp.nanosec = now_stamp()
            pub.publish(msg)
        sent += 1
        tick += period
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    emit({'sent_per_camera': sent, 'send_seconds': time.monotonic() - start})
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == '__main__':
    main()
