"""The node's parameters: one table of declarations, and validation into ``NodeSettings``.

Plain data, no ROS imports: the node turns each ``ParamSpec`` into a declared parameter with a
descriptor, and the tests check the validation rules without starting ROS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from seg_node.model.contract import ModelOverrides
from seg_node.msg.topics import validate_image_topics
from seg_node.runtime.config import DEFAULT_PROVIDERS, DEFAULT_TRT_CACHE, PROVIDERS, EngineConfig
from seg_node.runtime.render import MASK_AT_INPUT, MASK_AT_MODEL
from seg_node.viewer.live import IMAGE_FORMATS, ViewOptions, check_host

RELIABILITY = ('best_effort', 'reliable')


class SettingsError(ValueError):
    """A parameter value is invalid; the message names the parameter and the reason."""


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: its type, default, description and constraints."""

    name: str
    type: str  # bool, int, double, string, string_array, integer_array, double_array
    default: object
    description: str
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = True
    reloads_model: bool = False  # a runtime change loads a new engine beside the running one


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec('model_path', 'string', '',
              'ONNX model file that meets the seg_node model contract: absolute, ~/..., '
              'package://<pkg>/<path>, or relative (looked up in the working directory, '
              '~/.local/share/seg_node/models, then share/seg_node/models).',
              read_only=False, reloads_model=True),
    ParamSpec('model_sha256', 'string', '', 'Expected SHA-256 of the model file; empty skips the check.',
              read_only=False, reloads_model=True),
    ParamSpec('image_topics', 'string_array', ['/camera/image_raw'],
              'Camera image topics; a topic ending in /compressed is a CompressedImage.'),
    ParamSpec('providers', 'string_array', list(DEFAULT_PROVIDERS),
              'Execution providers in order of preference; the first that loads runs.',
              read_only=False, reloads_model=True),
    ParamSpec('cpu_threads', 'int', 0, 'ONNX Runtime CPU threads (0: one per core).', int_range=(0, 256),
              read_only=False, reloads_model=True),
    ParamSpec('trt_fp16', 'bool', True, 'Let TensorRT run layers in fp16.',
              read_only=False, reloads_model=True),
    ParamSpec('trt_cache_dir', 'string', str(DEFAULT_TRT_CACHE), 'Directory of cached TensorRT engines.',
              read_only=False, reloads_model=True),
    ParamSpec('device_id', 'int', 0, 'CUDA device index.', int_range=(0, 64), read_only=False,
              reloads_model=True),
    ParamSpec('classes', 'string_array', None, 'Class names, overriding the model metadata.',
              read_only=False, reloads_model=True),
    ParamSpec('palette', 'integer_array', None,
              'Class colours as a flat list r,g,b,r,g,b,..., overriding the model metadata.',
              read_only=False, reloads_model=True),
    ParamSpec('mean', 'double_array', None, 'Normalization mean (0..1 scale, RGB), overriding the model.',
              read_only=False, reloads_model=True),
    ParamSpec('std', 'double_array', None, 'Normalization std (0..1 scale, RGB), overriding the model.',
              read_only=False, reloads_model=True),
    ParamSpec('input_size', 'integer_array', None,
              'Model input [height, width] for models with dynamic spatial size.',
              read_only=False, reloads_model=True),
    ParamSpec('mask_resolution', 'string', MASK_AT_INPUT,
              'Publish the mask and confidence at the "input" image size or at the "model" output size.',
              choices=(MASK_AT_INPUT, MASK_AT_MODEL), read_only=False),
    ParamSpec('visualization_scale', 'double', 0.5,
              'Size of color_mask and overlay relative to the input image (1.0: full size; the '
              'default 0.5 is a quarter of the bytes, as sharp as a half-resolution model).',
              float_range=(0.05, 1.0), read_only=False),
    ParamSpec('visualization_max_rate_hz', 'double', 0.0,
              'Most color_mask and overlay messages per second and camera (0: every frame); the '
              'mask and confidence are published for every frame.',
              float_range=(0.0, 1000.0), read_only=False),
    ParamSpec('data_path', 'string', 'auto',
              'How frames enter and outputs leave: "auto" takes and publishes serialized CDR '
              '(GIL released while rcl publishes) where rcl allows it, else rclpy messages; '
              '"plain" always uses rclpy messages.', choices=('auto', 'plain')),
    ParamSpec('overlay_alpha', 'double', 0.5, 'Weight of the colour mask in the overlay.',
              float_range=(0.0, 1.0), read_only=False),
    ParamSpec('publish_mask', 'bool', True, 'Publish segmentation/mask (mono8 class ids).', read_only=False),
    ParamSpec('publish_color_mask', 'bool', True, 'Publish segmentation/color_mask (rgb8).', read_only=False),
    ParamSpec('publish_overlay', 'bool', True, 'Publish segmentation/overlay (rgb8).', read_only=False),
    ParamSpec('publish_confidence', 'bool', False,
              'Publish segmentation/confidence (mono8, max class probability x 255).', read_only=False),
    ParamSpec('input_reliability', 'string', 'best_effort', 'Reliability of the image subscriptions.',
              choices=RELIABILITY),
    ParamSpec('input_depth', 'int', 1, 'History depth of the image subscriptions.', int_range=(1, 100)),
    ParamSpec('output_reliability', 'string', 'reliable',
              'Reliability of the output publishers (reliable also serves best-effort subscribers).',
              choices=RELIABILITY),
    ParamSpec('output_depth', 'int', 1, 'History depth of the output publishers.', int_range=(1, 100)),
    ParamSpec('max_batch', 'int', 0,
              'Most frames one engine call takes (0: every camera waiting, as the model allows).',
              int_range=(0, 64), read_only=False),
    ParamSpec('diagnostics_period_s', 'double', 1.0, 'Period of /diagnostics messages.',
              float_range=(0.1, 60.0), read_only=False),
    ParamSpec('warn_throttle_s', 'double', 5.0, 'Least time between two warnings of one kind per camera.',
              float_range=(0.0, 3600.0), read_only=False),
    ParamSpec('silence_timeout_s', 'double', 2.0,
              'A camera that sends no frame for this long is an ERROR in /diagnostics (0: never).',
              float_range=(0.0, 3600.0), read_only=False),
    ParamSpec('drop_warn_fraction', 'double', 0.5,
              'WARN in /diagnostics when more than this fraction of a camera\'s frames in one '
              'diagnostics period were dropped for a newer frame.',
              float_range=(0.0, 1.0), read_only=False),
    ParamSpec('cpu_fallback_after', 'int', 0,
              'Rebuild the model on the CPU provider after this many consecutive failed engine '
              'calls (0: never).', int_range=(0, 1000), read_only=False),
    # The ground grid (README, "Ground grid"): nav_msgs/OccupancyGrid per camera and fused.
    ParamSpec('ground_grid', 'bool', False,
              'Publish <camera ns>/segmentation/ground_grid and ~/ground_grid (nav_msgs/OccupancyGrid) '
              'while somebody subscribes.'),
    ParamSpec('ground_frame', 'string', 'base_footprint',
              'Frame of the ground grid: its z = 0 plane is the flat ground.'),
    ParamSpec('ground_resolution', 'double', 0.1, 'Ground grid cell size in metres.',
              float_range=(0.01, 5.0)),
    ParamSpec('ground_x_min', 'double', 0.0, 'Ground grid extent: least x (forward) in metres.',
              float_range=(-500.0, 500.0)),
    ParamSpec('ground_x_max', 'double', 20.0, 'Ground grid extent: greatest x in metres.',
              float_range=(-500.0, 500.0)),
    ParamSpec('ground_y_min', 'double', -10.0, 'Ground grid extent: least y (left) in metres.',
              float_range=(-500.0, 500.0)),
    ParamSpec('ground_y_max', 'double', 10.0, 'Ground grid extent: greatest y in metres.',
              float_range=(-500.0, 500.0)),
    ParamSpec('ground_max_range', 'double', 20.0,
              'Farthest ground distance from a camera the grid may claim; the flat-ground limits '
              '(row size, pitch_sigma) can make it shorter.', float_range=(0.1, 1000.0)),
    ParamSpec('ground_pitch_sigma_deg', 'double', 1.0,
              'Assumed camera pitch uncertainty; the grid stops where it moves a point by a cell (0: ignore).',
              float_range=(0.0, 45.0)),
    ParamSpec('ground_drivable_classes', 'string_array', None,
              'Classes that are drivable ground (unset: road).'),
    ParamSpec('ground_obstacle_classes', 'string_array', None,
              'Classes whose ground contact is an obstacle (unset: the Cityscapes things, '
              'poles, walls, fences, buildings, signs, lights and vegetation that the model has).'),
    ParamSpec('ground_ignore_classes', 'string_array', None,
              'Classes that are neither (unset: sky); classes in no list count as unknown ground.'),
    ParamSpec('ground_camera_poses', 'double_array', None,
              'Camera poses in ground_frame, 6 values per camera in image_topics order: x y z (m), '
              'roll pitch yaw (rad) of the camera body (x forward, y left, z up; positive pitch '
              'looks down); the optical frame follows per REP-103. Unset: tf2.', read_only=False),
    ParamSpec('ground_rectified', 'bool', False,
              'The image topics are rectified (image_rect): project with CameraInfo P and ignore D. '
              'Otherwise a non-zero D stops the grid of that camera.'),
    ParamSpec('ground_fusion_max_age_s', 'double', 0.1,
              'The fused grid takes each camera\'s latest grid within this age of the newest one.',
              float_range=(0.0, 10.0), read_only=False),
    # The Foxglove live view (README, "Foxglove"); seg_node.viewer.live.
    ParamSpec('foxglove_port', 'int', -1,
              'Port of the Foxglove WebSocket live view (-1: off; 0: any free port, logged at start). '
              'Needs the foxglove extra (foxglove-sdk).', int_range=(-1, 65535)),
    ParamSpec('foxglove_host', 'string', '127.0.0.1',
              'Address the live view listens on: 127.0.0.1 keeps it on this machine (reach it through '
              'an SSH tunnel); 0.0.0.0 opens it to every network the vehicle is on, with no authentication.'),
    ParamSpec('foxglove_image_format', 'string', 'jpeg',
              'Compression of the camera picture and overlay on the live view (the colour mask is always '
              'PNG, so its class colours stay exact).', choices=IMAGE_FORMATS, read_only=False),
    ParamSpec('foxglove_jpeg_quality', 'int', 80, 'JPEG quality of the live view pictures.',
              int_range=(1, 100), read_only=False),
    ParamSpec('foxglove_max_width', 'int', 640,
              'Widest picture on the live view in pixels; wider ones are scaled down (0: as rendered).',
              int_range=(0, 8192), read_only=False),
)
OUTPUT_PARAMS = {'mask': 'publish_mask', 'color_mask': 'publish_color_mask',
                 'overlay': 'publish_overlay', 'confidence': 'publish_confidence'}
MODEL_PARAMS = tuple(spec.name for spec in PARAMETERS if spec.reloads_model)


@dataclass(frozen=True)
class NodeSettings:
    """Validated parameter values."""

    model_path: str
    model_sha256: str
    image_topics: tuple[str, ...]
    engine: EngineConfig
    overrides: ModelOverrides
    mask_resolution: str
    visualization_scale: float
    visualization_max_rate_hz: float
    data_path: str
    overlay_alpha: float
    outputs: frozenset[str]
    input_reliability: str
    input_depth: int
    output_reliability: str
    output_depth: int
    max_batch: int
    diagnostics_period_s: float
    warn_throttle_s: float
    silence_timeout_s: float
    drop_warn_fraction: float
    cpu_fallback_after: int
    raw: Mapping[str, object] = field(default_factory=dict)
    ground: GroundSettings | None = None  # None: no ground grid
    foxglove_port: int = -1  # -1: no live view
    foxglove_host: str = '127.0.0.1'
    foxglove_view: ViewOptions = field(default_factory=ViewOptions)

    def model_key(self) -> tuple:
        """The values of every parameter that shapes the engine, comparable with ``==``."""
        return model_key(self.raw)


@dataclass(frozen=True)
class GroundSettings:
    """Validated ground grid parameters (class names are checked against the model at start-up)."""

    frame_id: str
    resolution: float
    x_min: float
    x_max: float
    y_min: float
    y_max: float
    max_range: float
    pitch_sigma_deg: float
    drivable: tuple[str, ...]
    obstacle: tuple[str, ...]
    ignore: tuple[str, ...]
    poses: tuple[tuple[float, ...], ...]  # one (x, y, z, roll, pitch, yaw) per camera; empty: tf2
    fusion_max_age_s: float
    rectified: bool = False


# The most cells a ground grid may have (2000 x 2000): a bigger one is a unit mistake.
MAX_GROUND_CELLS = 4_000_000


def ground_settings(values: Mapping[str, object], cameras: int) -> GroundSettings | None:
    """The ground grid settings of ``values``, None when the grid is off; raise SettingsError."""
    if not values.get('ground_grid'):
        return None
    g = {name: float(values[name]) for name in ('ground_resolution', 'ground_x_min', 'ground_x_max',
                                                'ground_y_min', 'ground_y_max')}
    if g['ground_x_max'] <= g['ground_x_min'] or g['ground_y_max'] <= g['ground_y_min']:
        msg = (f'the ground grid extent is empty: ground_x_max must exceed ground_x_min and ground_y_max '
               f'ground_y_min; got x {g["ground_x_min"]}..{g["ground_x_max"]}, y {g["ground_y_min"]}..'
               f'{g["ground_y_max"]}')
        raise SettingsError(msg)
    cells = ((g['ground_x_max'] - g['ground_x_min']) / g['ground_resolution']
             * (g['ground_y_max'] - g['ground_y_min']) / g['ground_resolution'])
    if cells > MAX_GROUND_CELLS:
        msg = (f'the ground grid would have {cells:.0f} cells (more than {MAX_GROUND_CELLS}); '
               'raise ground_resolution or shrink its extent')
        raise SettingsError(msg)
    frame = str(values.get('ground_frame') or '')
    if not frame or frame.strip() != frame:
        msg = f'ground_frame must name a frame; got {frame!r}'
        raise SettingsError(msg)
    flat = [float(v) for v in values.get('ground_camera_poses') or ()]
    if flat and len(flat) != 6 * cameras:
        msg = (f'ground_camera_poses needs 6 values (x y z roll pitch yaw) for each of the {cameras} '
               f'image topics, {6 * cameras} in all; got {len(flat)}')
        raise SettingsError(msg)
    poses = tuple(tuple(flat[i:i + 6]) for i in range(0, len(flat), 6))
    for index, pose in enumerate(poses):
        if pose[2] <= 0:
            msg = f'ground_camera_poses puts camera {index} at z = {pose[2]} m; it must be above the ground (z > 0)'
            raise SettingsError(msg)
    return GroundSettings(
        frame_id=frame, resolution=g['ground_resolution'], x_min=g['ground_x_min'], x_max=g['ground_x_max'],
        y_min=g['ground_y_min'], y_max=g['ground_y_max'], max_range=float(values['ground_max_range']),
        pitch_sigma_deg=float(values['ground_pitch_sigma_deg']),
        drivable=tuple(values.get('ground_drivable_classes') or ()),
        obstacle=tuple(values.get('ground_obstacle_classes') or ()),
        ignore=tuple(values.get('ground_ignore_classes') or ()),
        poses=poses, fusion_max_age_s=float(values['ground_fusion_max_age_s']),
        rectified=bool(values.get('ground_rectified')))


def _palette(flat: Sequence[int] | None) -> list[list[int]] | None:
    if not flat:
        return None
    if len(flat) % 3 or any(not 0 <= v <= 255 for v in flat):
        msg = 'palette must be a flat list of r,g,b values in 0..255 (a multiple of 3 long)'
        raise SettingsError(msg)
    return [list(flat[i:i + 3]) for i in range(0, len(flat), 3)]


def _check_value(spec: ParamSpec, value: object) -> None:
    if spec.choices and value not in spec.choices:
        msg = f'{spec.name} must be one of {", ".join(spec.choices)}; got {value!r}'
        raise SettingsError(msg)
    if spec.int_range and not spec.int_range[0] <= value <= spec.int_range[1]:
        msg = f'{spec.name} must be in [{spec.int_range[0]}, {spec.int_range[1]}]; got {value!r}'
        raise SettingsError(msg)
    if spec.float_range and not spec.float_range[0] <= value <= spec.float_range[1]:
        msg = f'{spec.name} must be in [{spec.float_range[0]}, {spec.float_range[1]}]; got {value!r}'
        raise SettingsError(msg)


def check_parameter(name: str, value: object) -> None:
    """Raise SettingsError if ``value`` is not valid for parameter ``name``."""
    spec = next((s for s in PARAMETERS if s.name == name), None)
    if spec is None:
        msg = f'{name} is not a seg_node parameter'
        raise SettingsError(msg)
    _check_value(spec, value)


def settings_from_values(values: Mapping[str, object]) -> NodeSettings:
    """Validate declared parameter values (None: not set) into NodeSettings."""
    for spec in PARAMETERS:
        if values.get(spec.name) is not None:
            _check_value(spec, values[spec.name])
    if not values.get('model_path'):
        msg = 'model_path is empty; point it at an ONNX model (see README, "Model contract")'
        raise SettingsError(msg)
    topics = tuple(values['image_topics'] or ())
    problem = validate_image_topics(topics)
    if problem:
        raise SettingsError(problem)
    providers = tuple(values['providers'] or ())
    unknown = [p for p in providers if p not in PROVIDERS]
    if not providers or unknown:
        msg = f'providers must be a non-empty list of {", ".join(PROVIDERS)}; got {list(providers)}'
        raise SettingsError(msg)
    input_size = values.get('input_size')
    if input_size and (len(input_size) != 2 or min(input_size) <= 0):
        msg = f'input_size must be [height, width] with positive values; got {list(input_size)}'
        raise SettingsError(msg)
    for name in ('mean', 'std'):
        triple = values.get(name)
        if triple and len(triple) != 3:
            msg = f'{name} must have 3 values (R, G, B); got {list(triple)}'
            raise SettingsError(msg)
    sha = str(values.get('model_sha256') or '').lower()
    if sha and (len(sha) != 64 or any(c not in '0123456789abcdef' for c in sha)):
        msg = 'model_sha256 must be 64 hexadecimal digits'
        raise SettingsError(msg)
    host_problem = check_host(str(values.get('foxglove_host', '127.0.0.1')))
    if host_problem:
        raise SettingsError(host_problem)
    overrides = ModelOverrides(
        classes=list(values['classes']) if values.get('classes') else None,
        palette=_palette(values.get('palette')),
        mean=list(values['mean']) if values.get('mean') else None,
        std=list(values['std']) if values.get('std') else None,
        input_size=list(input_size) if input_size else None,
    )
    engine = EngineConfig(providers=providers, cpu_threads=int(values['cpu_threads']),
                          trt_fp16=bool(values['trt_fp16']), trt_cache_dir=str(values['trt_cache_dir']),
                          device_id=int(values['device_id']))
    return NodeSettings(
        model_path=str(values['model_path']), model_sha256=sha, image_topics=topics,
        engine=engine, overrides=overrides, mask_resolution=str(values['mask_resolution']),
        visualization_scale=float(values['visualization_scale']),
        visualization_max_rate_hz=float(values['visualization_max_rate_hz']),
        data_path=str(values['data_path']),
        overlay_alpha=float(values['overlay_alpha']),
        outputs=frozenset(out for out, param in OUTPUT_PARAMS.items() if values[param]),
        input_reliability=str(values['input_reliability']), input_depth=int(values['input_depth']),
        output_reliability=str(values['output_reliability']),
        output_depth=int(values['output_depth']), max_batch=int(values['max_batch']),
        diagnostics_period_s=float(values['diagnostics_period_s']),
        warn_throttle_s=float(values['warn_throttle_s']),
        silence_timeout_s=float(values['silence_timeout_s']),
        drop_warn_fraction=float(values['drop_warn_fraction']),
        cpu_fallback_after=int(values['cpu_fallback_after']), raw=dict(values),
        ground=ground_settings(values, len(topics)),
        foxglove_port=int(values.get('foxglove_port', -1)),
        foxglove_host=str(values.get('foxglove_host', '127.0.0.1')),
        foxglove_view=ViewOptions(image_format=str(values.get('foxglove_image_format', 'jpeg')),
                                  jpeg_quality=int(values.get('foxglove_jpeg_quality', 80)),
                                  max_width=int(values.get('foxglove_max_width', 640))),
    )


def model_key(values: Mapping[str, object]) -> tuple:
    """The model parameters of ``values`` as a hashable tuple (arrays become tuples)."""
    def frozen(value: object) -> object:
        if isinstance(value, str) or value is None:
            return value
        try:
            return tuple(value)  # type: ignore[arg-type]
        except TypeError:
            return value
    return tuple(frozen(values.get(name)) for name in MODEL_PARAMS)
