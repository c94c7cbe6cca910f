"""The node's parameters in-process: declared with descriptors, validated at start and at runtime."""

import pytest
from rclpy.parameter import Parameter

from seg_node.ros.node import SegmentationNode, StartupError
from seg_node.ros.parameters import PARAMETERS


def start(context, **params):
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    return SegmentationNode(context=context, parameter_overrides=overrides)


def test_every_parameter_is_declared_with_its_descriptor(context, model_path):
    node = start(context, model_path=model_path, providers=['cpu'])
    try:
        for spec in PARAMETERS:
            descriptor = node.describe_parameter(spec.name)
            assert descriptor.description.startswith(spec.description)
            assert descriptor.read_only == spec.read_only
        alpha = node.describe_parameter('overlay_alpha').floating_point_range[0]
        assert (alpha.from_value, alpha.to_value) == (0.0, 1.0)
    finally:
        node.stop()
        node.destroy_node()


def test_runtime_changes_are_validated_then_applied(context, model_path):
    node = start(context, model_path=model_path, providers=['cpu'])
    try:
        refused = node.set_parameters([Parameter('overlay_alpha', value=1.7)])[0]
        assert not refused.successful and 'overlay_alpha' in refused.reason
        assert node.get_parameter('overlay_alpha').value == 0.5
        assert node.set_parameters([Parameter('overlay_alpha', value=0.8)])[0].successful
        assert node.settings.overlay_alpha == 0.8
        assert node.set_parameters([Parameter('publish_overlay', value=False)])[0].successful
        assert 'overlay' not in node.settings.outputs
        read_only = node.set_parameters([Parameter('image_topics', value=['/x/image'])])[0]
        assert not read_only.successful
    finally:
        node.stop()
        node.destroy_node()


@pytest.mark.parametrize(('params', 'message'), [
    ({}, 'model_path is empty'),
    ({'model_path': '/nonexistent/m.onnx'}, "model file '/nonexistent/m.onnx' does not exist"),
    ({'overlay_alpha': 2.0}, r'parameter overlay_alpha must be in \[0.0, 1.0\]'),
    ({'cpu_threads': 'many'}, 'parameter cpu_threads expects a value of type int'),
    ({'image_topics': ['/a/image', '/a/image/compressed']}, "share the camera namespace '/a'"),
    ({'model_sha256': '0' * 64}, 'has SHA-256 .* not the expected 0000'),
    ({'providers': ['tpu']}, 'providers must be a non-empty list'),
])
def test_bad_startup_configuration_is_one_sentence(context, model_path, params, message):
    params = {'model_path': model_path} | params if 'model_path' not in params and params else params
    with pytest.raises(StartupError, match=message) as info:
        start(context, **params)
    assert '\n' not in str(info.value)
