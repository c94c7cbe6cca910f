"""What ``camera_seg.launch.py`` starts, as a plain function the tests cover without ``launch``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from seg_node.msg import topics
from seg_node.privacy import telemetry_environment
from seg_node.ros.dds_profile import share_profile

# (name, default, description) of every launch argument; the launch file declares exactly these.
LAUNCH_ARGUMENTS: tuple[tuple[str, str, str], ...] = (
    ('params_file', '', 'Node parameters YAML (default: share/seg_node/config/camera_seg.yaml).'),
    ('model_path', '', 'ONNX model; overrides model_path in the parameters file.'),
    ('cameras', '',
     'Comma-separated cameras: names (front -> /cam_front/image_raw) or full image topics; '
     'overrides image_topics in the parameters file.'),
    ('use_sim_time', 'false', 'Use /clock (set true when replaying a bag with --clock).'),
    ('rviz', 'false', 'Also start RViz2 with rviz/camera_seg.rviz.'),
    ('bag', '', 'A rosbag2 to play into the node (ros2 bag play).'),
    ('log_level', 'info', 'Node log level: debug, info, warn, error or fatal.'),
)
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')
BAG_START_DELAY_S = 3.0


class LaunchArgumentError(ValueError):
    """A launch argument is invalid."""


@dataclass(frozen=True)
class LaunchPlan:
    """The processes one launch starts and their configuration."""

    parameters: list = field(default_factory=list)  # a params file path, then overrides
    node_arguments: list[str] = field(default_factory=list)
    rviz_config: str | None = None
    bag_command: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)  # extra variables for the node process


def camera_topics(cameras: str) -> list[str]:
    """``'front, left'`` -> ``['/cam_front/image_raw', '/cam_left/image_raw']``; topics pass through."""
    image_topics = []
    for item in (c.strip() for c in cameras.split(',')):
        if not item:
            continue
        image_topics.append(item if '/' in item else topics.camera_image_topic(item))
    return image_topics


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ('true', 'false'):
        msg = f'launch argument {name} must be true or false, got {value!r}'
        raise LaunchArgumentError(msg)
    return lowered == 'true'


def launch_plan(arguments: Mapping[str, str], share_dir: str | Path) -> LaunchPlan:
    """Turn launch argument values into the node's parameters and the optional processes."""
    values = {name: default for name, default, _ in LAUNCH_ARGUMENTS} | dict(arguments)
    share = Path(share_dir)
    params_file = values['params_file'] or str(share / 'config' / 'camera_seg.yaml')
    use_sim_time = _flag(values['use_sim_time'], 'use_sim_time')
    overrides: dict[str, object] = {'use_sim_time': use_sim_time}
    if values['model_path']:
        overrides['model_path'] = values['model_path']
    if values['cameras']:
        image_topics = camera_topics(values['cameras'])
        if not image_topics:
            msg = f'launch argument cameras names no camera: {values["cameras"]!r}'
            raise LaunchArgumentError(msg)
        overrides['image_topics'] = image_topics
    if values['log_level'] not in LOG_LEVELS:
        msg = f'launch argument log_level must be one of {", ".join(LOG_LEVELS)}'
        raise LaunchArgumentError(msg)
    bag_command = None
    if values['bag']:
        # The delay leaves the node time to load its model before the first frame is played.
        bag_command = ['ros2', 'bag', 'play', values['bag'], '--delay', str(BAG_START_DELAY_S)]
        bag_command += ['--clock'] if use_sim_time else []
    return LaunchPlan(
        parameters=[params_file, overrides],
        node_arguments=['--ros-args', '--log-level', values['log_level']],
        rviz_config=str(share / 'rviz' / 'camera_seg.rviz') if _flag(values['rviz'], 'rviz') else None,
        bag_command=bag_command,
        # A Fast DDS profile the user exported under one distro's variable name reaches the other's too.
        environment=telemetry_environment() | share_profile(dict(os.environ)),
    )
