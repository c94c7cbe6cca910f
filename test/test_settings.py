"""Parameter validation, topic naming and the launch plan, without ROS."""

import pytest

from seg_node.msg.topics import camera_info_topic, camera_namespace, segmentation_topic, validate_image_topics
from seg_node.ros.launch_config import LAUNCH_ARGUMENTS, LaunchArgumentError, camera_topics, launch_plan
from seg_node.ros.parameters import PARAMETERS, SettingsError, check_parameter, settings_from_values


@pytest.mark.parametrize(('topic', 'namespace', 'mask'), [
    ('/cam_front/image_raw', '/cam_front', '/cam_front/segmentation/mask'),
    ('/cam_front/image_raw/compressed', '/cam_front', '/cam_front/segmentation/mask'),
    ('/car/cams/left/image_rect', '/car/cams/left', '/car/cams/left/segmentation/mask'),
    ('image_raw', '', 'segmentation/mask'),
    ('front/image_raw', 'front', 'front/segmentation/mask'),
    ('/image_raw', '/', '/segmentation/mask'),
])
def test_outputs_go_under_the_camera_namespace(topic, namespace, mask):
    assert camera_namespace(topic) == namespace
    assert segmentation_topic(topic, 'mask') == mask


def default_values() -> dict[str, object]:
    """Every parameter at its default (None where unset)."""
    return {spec.name: spec.default for spec in PARAMETERS}


def test_camera_info_follows_image_transport():
    assert camera_info_topic('/cam_front/image_raw/compressed') == '/cam_front/camera_info'


@pytest.mark.parametrize(('topics', 'problem'), [
    ([], 'image_topics is empty'),
    (['/a/image_raw', '/a/image_raw/compressed'], "share the camera namespace '/a'"),
    (['/a/ image'], 'is not a valid topic name'),
])
def test_unusable_camera_lists_are_explained(topics, problem):
    assert problem in validate_image_topics(topics)


def values(**changes):
    return default_values() | {'model_path': 'm.onnx'} | changes


@pytest.mark.parametrize(('changes', 'message'), [
    ({'model_path': ''}, 'model_path is empty'),
    ({'overlay_alpha': 1.5}, r'overlay_alpha must be in \[0.0, 1.0\]'),
    ({'mask_resolution': 'half'}, 'mask_resolution must be one of input, model'),
    ({'providers': ['cpu', 'tpu']}, 'providers must be a non-empty list'),
    ({'providers': []}, 'providers must be a non-empty list'),
    ({'input_size': [10]}, 'input_size must be'),
    ({'palette': [1, 2]}, 'palette must be a flat list'),
    ({'palette': [1, 2, 256]}, 'palette must be a flat list'),
    ({'mean': [0.5, 0.5]}, 'mean must have 3 values'),
    ({'model_sha256': 'abc'}, 'model_sha256 must be 64 hexadecimal digits'),
    ({'input_reliability': 'maybe'}, 'input_reliability must be one of'),
    ({'input_depth': 0}, r'input_depth must be in \[1, 100\]'),
    ({'visualization_scale': 0.0}, r'visualization_scale must be in \[0.05, 1.0\]; got 0.0'),
    ({'visualization_scale': 1.5}, r'visualization_scale must be in \[0.05, 1.0\]; got 1.5'),
    ({'visualization_max_rate_hz': -1.0}, r'visualization_max_rate_hz must be in \[0.0, 1000.0\]'),
    ({'data_path': 'zero-copy'}, "data_path must be one of auto, plain; got 'zero-copy'"),
])
def test_invalid_parameters_are_refused_with_the_reason(changes, message):
    with pytest.raises(SettingsError, match=message):
        settings_from_values(values(**changes))


def test_valid_parameters_become_settings():
    settings = settings_from_values(values(palette=[1, 2, 3, 4, 5, 6], publish_confidence=True,
                                           publish_overlay=False, providers=['cpu']))
    assert settings.overrides.palette == [[1, 2, 3], [4, 5, 6]]
    assert settings.outputs == {'mask', 'color_mask', 'confidence'}
    assert settings.engine.providers == ('cpu',)


def test_every_parameter_is_described_and_runtime_checks_use_the_same_rules():
    assert len({p.name for p in PARAMETERS}) == len(PARAMETERS)
    assert all(p.description.endswith('.') for p in PARAMETERS)
    check_parameter('overlay_alpha', 0.2)
    with pytest.raises(SettingsError, match='overlay_alpha must be in'):
        check_parameter('overlay_alpha', -0.1)


def test_launch_plan_maps_arguments_onto_parameters():
    plan = launch_plan({'cameras': 'front, left,/rig/cam3/image_raw/compressed', 'model_path': '/m.onnx',
                        'rviz': 'true', 'bag': '/drive', 'use_sim_time': 'true'}, '/share/seg_node')
    params_file, overrides = plan.parameters
    assert params_file == '/share/seg_node/config/camera_seg.yaml'
    assert overrides == {'use_sim_time': True, 'model_path': '/m.onnx', 'image_topics': [
        '/cam_front/image_raw', '/cam_left/image_raw', '/rig/cam3/image_raw/compressed']}
    assert plan.rviz_config == '/share/seg_node/rviz/camera_seg.rviz'
    assert plan.bag_command == ['ros2', 'bag', 'play', '/drive', '--delay', '3.0', '--clock']
    default = launch_plan({}, '/s')
    assert default.parameters == ['/s/config/camera_seg.yaml', {'use_sim_time': False}]
    assert default.rviz_config is None and default.bag_command is None


@pytest.mark.parametrize(('arguments', 'message'), [
    ({'rviz': 'yes'}, 'rviz must be true or false'),
    ({'cameras': ' , '}, 'names no camera'),
    ({'log_level': 'loud'}, 'log_level must be one of'),
])
def test_bad_launch_arguments(arguments, message):
    with pytest.raises(LaunchArgumentError, match=message):
        launch_plan(arguments, '/s')


def test_camera_names_expand_to_topics():
    assert camera_topics('front') == ['/cam_front/image_raw']
    assert [a[0] for a in LAUNCH_ARGUMENTS] == ['params_file', 'model_path', 'cameras',
                                                'use_sim_time', 'rviz', 'bag', 'log_level']
