"""Topic naming: where each camera's outputs go, and what the launch file passes the node."""

from __future__ import annotations

from collections.abc import Sequence

COMPRESSED_SUFFIX = '/compressed'
# Every per-frame output and its sensor_msgs/Image encoding.
OUTPUT_ENCODINGS = {'mask': 'mono8', 'color_mask': 'rgb8', 'overlay': 'rgb8', 'confidence': 'mono8'}
OUTPUTS = tuple(OUTPUT_ENCODINGS)
# Images for people to look at (RViz, Foxglove): their resolution and rate are parameters.
VISUALIZATION_OUTPUTS = frozenset({'color_mask', 'overlay'})
# Topics under <camera namespace>/segmentation/.
LABELS = 'labels'
CAMERA_INFO = 'camera_info'
GROUND_TRUTH = 'ground_truth'


SEGMENTATION = 'segmentation'


def camera_image_topic(camera: str) -> str:
    """The raw image topic of a named camera (launch argument, synthetic rig): ``front`` -> ``/cam_front/image_raw``."""
    return f'/cam_{camera}/image_raw'


def camera_frame_id(camera: str) -> str:
    """The optical frame of a named camera: ``front`` -> ``cam_front_optical_frame``."""
    return f'cam_{camera}_optical_frame'


def is_output_topic(topic: str) -> bool:
    """True for a per-camera output or ground-truth topic (``<camera namespace>/segmentation/<name>``)."""
    return f'/{SEGMENTATION}/' in topic or topic.startswith(f'{SEGMENTATION}/')


def output_name(topic: str) -> str | None:
    """``mask`` for ``/cam_front/segmentation/mask``; None for a topic that is no output."""
    return topic.rpartition('/')[2] if is_output_topic(topic) else None


def output_topic(namespace: str, name: str) -> str:
    """``<namespace>/segmentation/<name>`` for a camera namespace (``/cam_front``, ``mask``)."""
    return f'{namespace}/{SEGMENTATION}/{name}'


def namespace_of(topic: str) -> str:
    """The camera namespace of a camera or output topic (``/cam_front/segmentation/mask``: ``/cam_front``)."""
    if f'/{SEGMENTATION}/' in topic:
        return topic.split(f'/{SEGMENTATION}/', maxsplit=1)[0]
    return camera_namespace(topic)


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
        return f'/{SEGMENTATION}/{name}'
    return f'{namespace}/{SEGMENTATION}/{name}' if namespace else f'{SEGMENTATION}/{name}'


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
