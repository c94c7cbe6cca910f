"""One camera's ROS endpoints: its image subscription and its segmentation publishers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from seg_node.model.classes import ClassTable
from seg_node.model.contract import ModelSpec
from seg_node.msg import topics
from seg_node.msg.labels import labels_json
from seg_node.ros.transport import ImageOutput, ros_header
from seg_node.runtime.render import BufferFactory, RenderedOutputs
from seg_node.runtime.stats import CameraStats

try:  # vision_msgs is optional: labels fall back to a JSON std_msgs/String
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:  # pragma: no cover - depends on the ROS install
    LabelInfo = None


def qos(reliability: str, depth: int, *, latched: bool = False) -> QoSProfile:
    """A keep-last QoS profile from parameter values."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def labels_message(spec: ModelSpec, model_name: str) -> Any:
    """The class table as vision_msgs/LabelInfo when installed, else a JSON String."""
    if LabelInfo is not None:
        msg = LabelInfo()
        msg.class_map = [VisionClass(class_id=i, class_name=n) for i, n in enumerate(spec.classes)]
        return msg
    return String(data=labels_json(ClassTable(spec.classes, spec.palette), model_name))


def scaled_camera_info(info: CameraInfo, header: Any, height: int, width: int) -> CameraInfo:
    """``info`` rescaled to a mask of height x width, stamped with ``header``."""
    sx, sy = width / info.width, height / info.height
    out = CameraInfo()
    out.header = header
    out.height, out.width = height, width
    out.distortion_model, out.d = info.distortion_model, info.d
    k = np.asarray(info.k, float).reshape(3, 3)
    k[0] *= sx
    k[1] *= sy
    out.k = k.ravel().tolist()
    p = np.asarray(info.p, float).reshape(3, 4)
    p[0] *= sx
    p[1] *= sy
    out.p = p.ravel().tolist()
    out.r = info.r
    out.binning_x, out.binning_y = info.binning_x, info.binning_y
    out.roi.x_offset = round(info.roi.x_offset * sx)
    out.roi.y_offset = round(info.roi.y_offset * sy)
    out.roi.width, out.roi.height = round(info.roi.width * sx), round(info.roi.height * sy)
    out.roi.do_rectify = info.roi.do_rectify
    return out


class CameraIO:
    """Publishers, reusable output buffers and (while active) the subscription of one camera.

    Publishers exist from configuration on; the image subscription only while the node is
    active, so a managed node takes no frames before it is told to.
    """

    def __init__(self, node: Node, image_topic: str, *, output_qos: QoSProfile, labels: Any,
                 serialized: bool = True) -> None:
        self.topic = image_topic
        self.compressed = topics.is_compressed(image_topic)
        self.serialized = serialized  # frames taken as CDR bytes, outputs published from CDR buffers
        self.namespace = topics.camera_namespace(image_topic)
        self.stats = CameraStats()
        self._node = node
        self._output_qos = output_qos
        self._last_warning: dict[str, float] = {}
        self.subscription = None
        self.outputs = {
            name: ImageOutput(node.create_publisher(Image, topics.segmentation_topic(image_topic, name), output_qos),
                              topics.OUTPUT_ENCODINGS[name], serialized=serialized)
            for name in topics.OUTPUTS}
        self.publishers = {name: output.publisher for name, output in self.outputs.items()}
        self._last_visualization = -float('inf')  # monotonic time of the last colour mask or overlay
        self.labels_publisher = node.create_publisher(
            type(labels), topics.segmentation_topic(image_topic, topics.LABELS),
            qos('reliable', 1, latched=True))
        self.labels_publisher.publish(labels)
        self._want_camera_info = False
        self.camera_info: CameraInfo | None = None
        self.info_subscription = None
        self.info_publisher = None

    @property
    def active(self) -> bool:
        """True while the image subscription exists."""
        return self.subscription is not None

    def subscribe(self, on_frame: Callable[[str, Any], None], input_qos: QoSProfile) -> None:
        """Start taking frames; ``on_frame(topic, msg)`` runs on the executor thread.

        ``msg`` is the frame's CDR bytes on the serialized path (see ``transport.take_frame``).
        """
        if self.subscription is not None:
            return
        msg_type = CompressedImage if self.compressed else Image
        topic = self.topic
        self.subscription = self._node.create_subscription(
            msg_type, topic, lambda msg: on_frame(topic, msg), input_qos, raw=self.serialized)
        self.stats.watch()
        self._sync_camera_info()

    def unsubscribe(self) -> None:
        """Stop taking frames (publishers stay)."""
        if self.subscription is not None:
            self._node.destroy_subscription(self.subscription)
            self.subscription = None
        self._sync_camera_info()

    def want_camera_info(self, wanted: bool) -> None:
        """Rescale and republish ``camera_info`` (for masks at model resolution) or stop doing so."""
        self._want_camera_info = wanted
        self._sync_camera_info()

    def _sync_camera_info(self) -> None:
        wanted = self._want_camera_info and self.active
        if wanted and self.info_subscription is None:
            if self.info_publisher is None:
                self.info_publisher = self._node.create_publisher(
                    CameraInfo, topics.segmentation_topic(self.topic, topics.CAMERA_INFO), self._output_qos)
            self.info_subscription = self._node.create_subscription(
                CameraInfo, topics.camera_info_topic(self.topic), self._on_camera_info, qos('best_effort', 1))
        elif not wanted and self.info_subscription is not None:
            self._node.destroy_subscription(self.info_subscription)
            self.info_subscription = None
            self.camera_info = None

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def publish_labels(self, labels: Any) -> None:
        """Publish (latched) a new class table, after a model switch."""
        self.labels_publisher.publish(labels)

    def destroy(self) -> None:
        """Remove every subscription and publisher of this camera from the node."""
        self._want_camera_info = False
        self.unsubscribe()
        for publisher in (*self.publishers.values(), self.labels_publisher, self.info_publisher):
            if publisher is not None:
                self._node.destroy_publisher(publisher)
        self.publishers = {}
        self.info_publisher = None

    def wanted(self, enabled: frozenset[str]) -> set[str]:
        """The enabled outputs somebody subscribes to; the rest are not computed."""
        return {name for name in enabled if self.publishers[name].get_subscription_count() > 0}

    def due(self, outputs: set[str], visualization_period_s: float, now: float | None = None) -> set[str]:
        """``outputs`` less the colour mask and overlay when one was published within the period."""
        visual = outputs & topics.VISUALIZATION_OUTPUTS
        if not visual or visualization_period_s <= 0:
            return outputs
        now = time.monotonic() if now is None else now
        if now - self._last_visualization < visualization_period_s:
            return outputs - visual
        self._last_visualization = now
        return outputs

    def buffers(self, header: Any) -> BufferFactory:
        """Where this frame's outputs are rendered: each output's reusable (CDR or message) buffer."""
        return lambda name, shape: self.outputs[name].buffer(header, shape)

    def publish(self, rendered: RenderedOutputs, header: Any) -> None:
        """Publish every rendered output (rendered into ``buffers(header)``) with the input's header."""
        for name, array in rendered.items():
            self.outputs[name].publish(array)
        mask = rendered.class_mask
        info, info_publisher = self.camera_info, self.info_publisher
        if info_publisher is not None and info is not None and mask is not None:
            h, w = mask.shape[:2]
            info_publisher.publish(scaled_camera_info(info, ros_header(header), h, w))

    def should_warn(self, kind: str, period_s: float) -> bool:
        """Rate limit: True at most once per ``period_s`` for each kind of warning."""
        now = time.monotonic()
        last = self._last_warning.get(kind)
        if last is not None and now - last < period_s:
            return False
        self._last_warning[kind] = now
        return True
