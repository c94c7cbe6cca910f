"""Topic naming: where each camera's outputs go, and what the launch file passes the node."""

from __future__ import annotations

from collections.abc import Sequence

COMPRESSED_SUFFIX = '/compressed'
OUTPUTS = ('mask', 'color_mask', 'overlay', 'confidence')
# Topics under <camera namespace>/segmentation/.
LABELS = 'labels'
CAMERA_INFO = 'camera_info'
GROUND_TRUTH = 'ground_truth'


def is_compressed(image_topic: str) -> bool:
    """True for a ``.../compressed`` topic (sensor_msgs/CompressedImage)."""
    return image_topic.endswith(COMPRESSED_SUFFIX)


def camera_namespace(image_topic: str) -> str:
    """The camera's namespace: the topic's parent after stripping ``/compressed``.

    ``/cam_front/image_raw`` and ``/cam_front/image_raw/compressed`` give ``/cam_front``;
    a bare ``image_raw`` gives ``''`` (outputs then resolve in the node's namespace).
    """
    base = image_topic[:-len(COMPRESSED_SUFFIX)] if is_compressed(image_topic) else image_topic
    base = base.rstrip('/')
    parent, _, _ = base.rpartition('/')
    if not parent and base.startswith('/'):
        return '/'
    return parent


def segmentation_topic(image_topic: str, name: str) -> str:
    """``<camera namespace>/segmentation/<name>`` for an output ``name``."""
    namespace = camera_namespace(image_topic)
    if namespace == '/':
        return f'/segmentation/{name}'
    return f'{namespace}/segmentation/{name}' if namespace else f'segmentation/{name}'


def camera_info_topic(image_topic: str) -> str:
    """The camera_info topic that belongs to ``image_topic`` (image_transport convention)."""
    namespace = camera_namespace(image_topic)
    if namespace == '/':
        return '/camera_info'
    return f'{namespace}/camera_info' if namespace else 'camera_info'


def validate_image_topics(topics: Sequence[str]) -> str | None:
    """Return why ``topics`` is not a usable camera list, or None when it is."""
    if not topics:
        return 'image_topics is empty; name at least one camera topic'
    for topic in topics:
        if not topic or topic.strip() != topic or ' ' in topic or topic.endswith('/'):
            return f'image topic {topic!r} is not a valid topic name'
    namespaces = [camera_namespace(t) for t in topics]
    duplicates = sorted({n for n in namespaces if namespaces.count(n) > 1})
    if duplicates:
        return (f'two image topics share the camera namespace {duplicates[0]!r}, so their '
                'outputs would collide; give each camera its own namespace')
    return None
