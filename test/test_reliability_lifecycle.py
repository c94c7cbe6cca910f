"""The managed (lifecycle) node in-process: engine built in configure, frames only while active."""

import threading

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from reliability_helpers import FRONT, LEFT, Harness, image_msg, save_model

from seg_node.model.known_answer import palette_scene
from seg_node.ros.managed import ManagedSegmentationNode

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp('m') / 'palette.onnx')


def state(node):
    return node._state_machine.current_state[1]


def subscribed_topics(node):
    return {s.topic_name for s in node.subscriptions}


def workers():
    return [t for t in threading.enumerate() if t.name == 'seg_node_inference']


@pytest.fixture
def managed(context):
    params = {'providers': ['cpu'], 'image_topics': [FRONT, LEFT], 'diagnostics_period_s': 60.0}
    node = ManagedSegmentationNode(context=context,
                                   parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    yield node
    node.stop()
    node.destroy_node()


def test_the_engine_is_built_in_configure_and_frames_are_taken_only_while_active(managed, model):
    node = managed
    assert state(node) == 'unconfigured' and node.supervisor is None
    assert FRONT not in subscribed_topics(node) and not workers()

    assert node.set_parameters([Parameter('model_path', value=model)])[0].successful
    assert node.trigger_configure() == SUCCESS and state(node) == 'inactive'
    assert node.supervisor.model.engine.provider == 'cpu'
    assert {FRONT, LEFT}.isdisjoint(subscribed_topics(node)), 'no image subscription before activate'
    assert len(workers()) == 1
    inactive = {s.name: s for s in node.diagnostic_array().status}
    assert inactive['seg_node: /cam_front'].message == 'inactive (not subscribed)'

    assert node.trigger_activate() == SUCCESS and state(node) == 'active'
    assert {FRONT, LEFT} <= subscribed_topics(node)
    run = Harness(node)
    rgb, label = palette_scene(4, 24, 32, min_block=4)
    run.send_and_settle(FRONT, image_msg(rgb, 7, 'front'))
    np.testing.assert_array_equal(run.recorder.by_stamp(FRONT)[7].mask, label)

    assert node.trigger_deactivate() == SUCCESS and state(node) == 'inactive'
    assert {FRONT, LEFT}.isdisjoint(subscribed_topics(node))
    assert node.trigger_cleanup() == SUCCESS and state(node) == 'unconfigured'
    assert node.supervisor is None and node.cameras == {}
    assert not any('segmentation' in p.topic_name for p in node.publishers), 'cleanup frees the publishers'
    assert not workers()

    assert node.trigger_configure() == SUCCESS, 'configure works again after cleanup'
    assert node.trigger_activate() == SUCCESS
    assert node.trigger_shutdown() == SUCCESS and state(node) == 'finalized'
    assert node.supervisor is None and not workers()


@pytest.mark.parametrize(('params', 'reason'), [
    ({}, 'model_path is empty'),
    ({'model_path': '/nonexistent.onnx'}, "model file '/nonexistent.onnx' does not exist"),
])
def test_a_failed_configure_stays_unconfigured_with_nothing_left_and_says_why(managed, model, capfd,
                                                                             params, reason):
    node = managed
    node.set_parameters([Parameter(k, value=v) for k, v in params.items()])
    assert node.trigger_configure() == FAILURE
    assert state(node) == 'unconfigured' and node.supervisor is None and not workers()
    assert f'configure failed: {reason}' in capfd.readouterr().err
    node.set_parameters([Parameter('model_path', value=model)])
    assert node.trigger_configure() == SUCCESS
