"""``seg_bag synth``: a multi-camera drive with exact ground truth, written as a rosbag2."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seg_node.bag import ground, messages
from seg_node.bag.bagio import BagError, BagWriter
from seg_node.ground.geometry import pose_from_mount
from seg_node.model.classes import CITYSCAPES_CLASSES
from seg_node.model.known_answer import palette_scene
from seg_node.msg import topics
from seg_node.synthetic import Drive

# Camera names in rig order (the synthetic rig's yaws: front, front-left, front-right, rear, ...).
CAMERA_NAMES = ('front', 'left', 'right', 'rear', 'rear_left', 'rear_right', 'side_left', 'side_right')
SCENES = ('drive', 'palette')
FPS = 30.0
START_NS = 1_700_000_000 * 1_000_000_000  # a fixed epoch keeps bags byte-reproducible
# Cameras are not hardware-synchronised: each one fires a few ms after the previous one, and
# the recorder logs a frame a few ms after its stamp.
CAMERA_OFFSET_NS = 4_000_000
TRANSPORT_DELAY_NS = 3_000_000
PALETTE_HFOV = math.radians(70.0)


@dataclass(frozen=True)
class SynthOptions:
    """What to write: rig size, length, resolution and scene kind."""

    cameras: int = 2
    frames: int = 90
    width: int = 640
    height: int = 320
    compressed: bool = False
    compressed_format: str = 'jpeg'
    seed: int = 0
    scene: str = 'drive'  # drive: street scenes; palette: palette-coloured blocks (exact for contract models)
    storage: str = 'sqlite3'

    def check(self) -> None:
        """Raise BagError naming the first invalid option."""
        if not 1 <= self.cameras <= len(CAMERA_NAMES):
            msg = f'--cameras must be 1..{len(CAMERA_NAMES)}, got {self.cameras}'
            raise BagError(msg)
        if self.frames < 1:
            msg = f'--frames must be at least 1, got {self.frames}'
            raise BagError(msg)
        if self.width < 16 or self.height < 16:
            msg = f'--width and --height must be at least 16, got {self.width}x{self.height}'
            raise BagError(msg)
        if self.scene not in SCENES:
            msg = f'--scene must be one of {", ".join(SCENES)}, got {self.scene!r}'
            raise BagError(msg)
        if self.compressed_format not in ('jpeg', 'png'):
            msg = f'--compressed-format must be jpeg or png, got {self.compressed_format!r}'
            raise BagError(msg)


def stamp_ns(frame: int, camera: int) -> int:
    """Capture time of ``frame`` on ``camera``: 30 Hz, each camera offset from the previous one."""
    return START_NS + round(frame * 1e9 / FPS) + camera * CAMERA_OFFSET_NS


@dataclass
class _View:
    rgb: np.ndarray
    label: np.ndarray
    focal: float
    cx: float
    cy: float


def _views(options: SynthOptions, frame: int, drive: Drive | None) -> Iterator[_View]:
    for camera in range(options.cameras):
        if drive is not None:
            rgb, label = drive.frame(frame, camera)
            cam = drive.camera(frame, camera)
            yield _View(rgb, label, cam.f, cam.cx, cam.cy)
        else:
            seed = (options.seed * 1_000_003 + frame) * len(CAMERA_NAMES) + camera
            rgb, label = palette_scene(seed, options.height, options.width)
            focal = options.width / 2 / math.tan(PALETTE_HFOV / 2)
            yield _View(rgb, label, focal, options.width / 2, options.height / 2)


def write_drive(out: str | Path, options: SynthOptions, *, force: bool = False) -> dict[str, int]:
    """Write the drive; return the number of messages per topic."""
    options.check()
    drive = None
    if options.scene == 'drive':
        drive = Drive(options.seed, width=options.width, height=options.height,
                      num_cameras=options.cameras, fps=FPS)
    names = CAMERA_NAMES[:options.cameras]
    with BagWriter(out, force=force, storage=options.storage) as bag:
        grids = None
        if drive is not None:  # the drive knows its cameras' poses: /tf_static and ground-truth grids
            mounts = {topics.camera_frame_id(name): drive.mount(camera) for camera, name in enumerate(names)}
            bag.write('/tf_static', ground.tf_static(messages.header(START_NS, ground.BASE_FRAME), mounts), START_NS)
            grids = ground.mapper_for(CITYSCAPES_CLASSES)
        for frame in tqdm(range(options.frames), desc='synth', unit='frame', disable=None):
            for camera, (name, view) in enumerate(zip(names, _views(options, frame, drive), strict=True)):
                stamp = stamp_ns(frame, camera)
                logged = stamp + TRANSPORT_DELAY_NS
                head = messages.header(stamp, topics.camera_frame_id(name))
                topic = topics.camera_image_topic(name)
                bag.write(topic, messages.image(head, view.rgb), logged)
                if options.compressed:
                    bag.write(topic + topics.COMPRESSED_SUFFIX,
                              messages.compressed(head, view.rgb, options.compressed_format), logged)
                info = messages.camera_info(head, width=options.width, height=options.height,
                                            focal=view.focal, cx=view.cx, cy=view.cy)
                bag.write(topics.camera_info_topic(topic), info, logged)
                bag.write(topics.segmentation_topic(topic, topics.GROUND_TRUTH),
                          messages.image(head, view.label), logged)
                if grids is not None:
                    k = np.array([[view.focal, 0.0, view.cx], [0.0, view.focal, view.cy], [0.0, 0.0, 1.0]])
                    lookup = grids.lookup(name, pose_from_mount(drive.mount(camera)), k, view.label.shape,
                                          mask_size=view.label.shape)
                    cells = grids.camera_grid(name, view.label, lookup, stamp).cells
                    bag.write(topics.segmentation_topic(topic, ground.TRUTH_TOPIC),
                              ground.occupancy_grid(head, cells), logged)
        return dict(bag.counts)
