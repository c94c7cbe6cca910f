"""Pieces shared by the benchmark processes: frames, message building, raw CDR headers."""

from __future__ import annotations

import array
import json
import struct
import sys
import time

import numpy as np

from seg_node.model.known_answer import palette_scene
from seg_node.msg import topics
from seg_node.msg.image import encode_compressed

WIDTH, HEIGHT = 1920, 1080


def camera_topic(index: int, compressed: bool) -> str:
    """Image topic of benchmark camera ``index``."""
    return topics.camera_image_topic(f'bench{index}') + (topics.COMPRESSED_SUFFIX if compressed else '')


def output_topic(index: int, name: str) -> str:
    """seg_node output topic of benchmark camera ``index``."""
    return topics.segmentation_topic(camera_topic(index, compressed=False), name)


def frames(count: int, seed: int) -> list[np.ndarray]:
    """Distinct 1080p RGB frames painted in palette colours."""
    return [palette_scene(seed * 100 + i, HEIGHT, WIDTH, blocks=20, min_block=60)[0] for i in range(count)]


def image_message(rgb: np.ndarray, frame_id: str, compressed: bool):  # noqa: ANN201 - message types
    """A message built once; publishing only restamps it."""
    from sensor_msgs.msg import CompressedImage, Image

    if compressed:
        msg = CompressedImage(format='jpeg')
        msg.data = encode_compressed(rgb, 'jpeg', quality=90)
    else:
        msg = Image(check_fields=True)
        msg.height, msg.width = rgb.shape[:2]
        msg.encoding, msg.step = 'rgb8', rgb.shape[1] * 3
        msg.data = array.array('B', rgb.tobytes())
    msg.header.frame_id = frame_id
    return msg


def stamp_of(raw: bytes) -> float:
    """Header stamp (s) of a serialized message: CDR encapsulation (4 bytes), int32 sec, uint32 nanosec."""
    sec, nanosec = struct.unpack_from('<iI', raw, 4)
    return sec + nanosec * 1e-9


def now_stamp() -> tuple[int, int]:
    """Wall-clock time as (sec, nanosec), the clock every process on this machine shares."""
    ns = time.time_ns()
    return ns // 1_000_000_000, ns % 1_000_000_000


def emit(result: dict) -> None:
    """Print a result line the orchestrator parses."""
    sys.stdout.write('RESULT ' + json.dumps(result) + '\n')
    sys.stdout.flush()
