"""Receive seg_node outputs without deserializing them and record stamp -> receipt latency."""

from __future__ import annotations

import argparse
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from bench.common import emit, output_topic, stamp_of

OUTPUTS = ('mask', 'color_mask', 'overlay')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--cameras', type=int, default=1)
    parser.add_argument('--seconds', type=float, default=8.0)
    parser.add_argument('--outputs', default=','.join(OUTPUTS),
                        help='comma-separated outputs to subscribe to (the node computes only these)')
    args = parser.parse_args()
    rclpy.init()
    node = Node('bench_monitor')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    received: dict[str, dict[float, float]] = {}
    stages: dict[str, float] = {}
    cameras: dict[str, dict[str, str]] = {}

    def on_output(topic: str, raw: bytes) -> None:
        received.setdefault(topic, {})[stamp_of(raw)] = time.time()

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith('seg_node: /bench_cam'):
                cameras[status.name] = {kv.key: kv.value for kv in status.values if kv.key.startswith('frames_')}
            if status.name == 'seg_node: engine':
                stages.update({kv.key: float(kv.value) for kv in status.values if kv.key.endswith('_ms_p50')
                               and kv.value != 'nan'})

    subs = []
    for cam in range(args.cameras):
        for name in args.outputs.split(','):
            topic = output_topic(cam, name)
            # raw=True: the callback gets the serialized bytes, so a 6 MB image costs no Python copy.
            subs.append(node.create_subscription(Image, topic, lambda raw, t=topic: on_output(t, raw), qos, raw=True))
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
    # Playback starts when this prints: every output must already be matched to the node, or the
    # node (rightly) skips frames nobody listens to and the run counts them as lost.
    deadline = time.monotonic() + 30
    while any(sub.get_publisher_count() == 0 for sub in subs) and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print('MONITOR READY', flush=True)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    emit({'received': {t: {f'{s:.9f}': r for s, r in v.items()} for t, v in received.items()},
          'stages_ms': stages, 'node_counters': cameras})
    node.destroy_node()
    rclpy.shutdown()


if __name__ == '__main__':
    main()
