"""A typical first-version segmentation node, the baseline every benchmark figure is compared to.

Deliberately straightforward: synchronous inference in the subscription callback, a depth-10
reliable queue, numpy normalize / softmax / argmax / colorize / blend, and output messages built
field by field from ``bytes``. It runs the same ONNX model and publishes the same topics.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from seg_node.model.classes import CITYSCAPES_PALETTE


class BaselineNode(Node):
    def __init__(self) -> None:
        super().__init__('baseline_seg_node')
        model_path = self.declare_parameter('model_path', '').value
        topics = self.declare_parameter('image_topics', ['/camera/image_raw']).value
        self.alpha = self.declare_parameter('overlay_alpha', 0.5).value
        meta = {p.key: p.value for p in onnx.load(model_path).metadata_props}
        self.mean = np.array(json.loads(meta.get('seg_node.mean', '[0.485, 0.456, 0.406]')))
        self.std = np.array(json.loads(meta.get('seg_node.std', '[0.229, 0.224, 0.225]')))
        self.palette = np.array(json.loads(meta.get('seg_node.palette', json.dumps(CITYSCAPES_PALETTE))),
                                np.uint8)
        self.session = ort.InferenceSession(model_path, providers=['CPUExecutionProvider'])
        self.input_name = self.session.get_inputs()[0].name
        self.size = self.session.get_inputs()[0].shape[2:4]
        self.pubs = {}
        self.inference_ms, self.other_ms = deque(maxlen=300), deque(maxlen=300)
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(1.0, self.report)
        for topic in topics:
            compressed = topic.endswith('/compressed')
            ns = topic.removesuffix('/compressed').rpartition('/')[0]
            self.pubs[topic] = {name: self.create_publisher(Image, f'{ns}/segmentation/{name}', 10)
                                for name in ('mask', 'color_mask', 'overlay')}
            self.create_subscription(CompressedImage if compressed else Image, topic,
                                     lambda msg, t=topic: self.callback(msg, t), 10)

    def callback(self, msg: Image | CompressedImage, topic: str) -> None:
        t_start = time.perf_counter()
        if isinstance(msg, CompressedImage):
            image = cv2.cvtColor(cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR),
                                 cv2.COLOR_BGR2RGB)
        else:
            image = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
        x = cv2.resize(image, (self.size[1], self.size[0])).astype(np.float32) / 255.0
        x = ((x - self.mean) / self.std).transpose(2, 0, 1)[None].astype(np.float32)
        t_model = time.perf_counter()
        logits = self.session.run(None, {self.input_name: x})[0][0]
        t_model = time.perf_counter() - t_model
        e = np.exp(logits - logits.max(axis=0, keepdims=True))
        probs = e / e.sum(axis=0, keepdims=True)
        mask = probs.argmax(axis=0).astype(np.uint8)
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        color = self.palette[mask]
        overlay = (image * (1 - self.alpha) + color * self.alpha).astype(np.uint8)
        for name, array in (('mask', mask), ('color_mask', color), ('overlay', overlay)):
            out = Image()
            out.header = msg.header
            out.height, out.width = array.shape[:2]
            out.encoding = 'mono8' if array.ndim == 2 else 'rgb8'
            out.step = array.shape[1] * (1 if array.ndim == 2 else 3)
            out.data = array.tobytes()
            self.pubs[topic][name].publish(out)
        # Measurement only, not part of the baseline's behaviour: split its time as seg_node does.
        self.inference_ms.append(t_model * 1e3)
        self.other_ms.append((time.perf_counter() - t_start) * 1e3 - t_model * 1e3)

    def report(self) -> None:
        status = DiagnosticStatus(name='seg_node: engine', values=[
            KeyValue(key='inference_ms_p50', value=f'{np.median(self.inference_ms or [np.nan]):.2f}'),
            KeyValue(key='not_inference_ms_p50', value=f'{np.median(self.other_ms or [np.nan]):.2f}')])
        self.diagnostics.publish(DiagnosticArray(status=[status]))


def main() -> None:
    rclpy.init()
    node = BaselineNode()
    node.get_logger().info('segmenting')
    with contextlib.suppress(KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        rclpy.spin(node)


if __name__ == '__main__':
    main()
