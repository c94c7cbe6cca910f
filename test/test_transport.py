"""Outputs published from CDR buffers through rcl arrive as exactly the message the plain path sends."""

import os

import numpy as np
import pytest
from sensor_msgs.msg import Image

from seg_node.msg.cdr import CdrHeader, Stamp, header_bytes
from seg_node.ros import transport
from seg_node.ros.camera import qos
from seg_node.ros.harness import wait_for
from seg_node.ros.spinning import BackgroundNode
from seg_node.ros.transport import ImageOutput, cdr_header, ros_header

pytestmark = pytest.mark.dds

RNG = np.random.default_rng(5)
# Odd widths, one channel and three, and a full 1080p colour frame (6 MB, shared memory).
SHAPES = [(1, 1), (3, 7), (5, 3, 3), (9, 11, 3), (1080, 1920, 3)]


@pytest.fixture(autouse=True)
def environment_left_as_found():
    """Fail a test that leaves the process environment changed: later tests would depend on the order."""
    def environment():
        return {k: v for k, v in os.environ.items() if k != 'PYTEST_CURRENT_TEST'}  # pytest's own, per phase
    before = environment()
    yield
    assert environment() == before, 'the test changed the environment for the tests after it'


@pytest.fixture(scope='module')
def peer():
    ros = BackgroundNode('seg_node_test_transport')
    yield ros
    ros.close()


def _publish_and_receive(ros, serialized, cases, name):
    node = ros.node
    topic = f'/transport_test/{name}'
    publisher = node.create_publisher(Image, topic, qos('reliable', 10))
    got = []
    subscription = node.create_subscription(Image, topic, got.append, qos('reliable', 10))
    try:
        assert wait_for(lambda: publisher.get_subscription_count() > 0, 10)
        output = ImageOutput(publisher, 'unused', serialized=serialized)
        for i, (shape, header) in enumerate(cases):
            output.encoding = 'rgb8' if len(shape) == 3 else 'mono8'
            view = output.buffer(header, shape)
            view[...] = RNG.integers(0, 256, shape, dtype=np.uint8)
            expected = view.copy()
            output.publish(view)
            assert wait_for(lambda n=i + 1: len(got) >= n, 10), f'frame {i} not received'
            msg = got[i]
            channels = 3 if len(shape) == 3 else 1
            assert (msg.height, msg.width, msg.step, msg.is_bigendian) == (shape[0], shape[1], shape[1] * channels, 0)
            assert msg.encoding == output.encoding
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
                header.stamp.sec, header.stamp.nanosec, header.frame_id)
            np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(shape), expected)
        return output
    finally:
        node.destroy_subscription(subscription)
        node.destroy_publisher(publisher)


def _cases():
    """Each shape with a ROS header and with a header read from CDR, frame_ids of every alignment."""
    cases = []
    for i, shape in enumerate(SHAPES):
        frame_id = 'f' * i
        plain = ros_header(CdrHeader(Stamp(100 + i, 7 * i), frame_id, b''))
        cases.append((shape, plain))
        raw = CdrHeader(Stamp(200 + i, 9 * i), frame_id + 'x', header_bytes(200 + i, 9 * i, frame_id + 'x'))
        cases.append((shape, raw))
    return cases


def test_serialized_outputs_arrive_as_the_plain_message(peer):
    output = _publish_and_receive(peer, True, _cases(), 'serialized')
    assert output.serialized, 'rcl_publish_serialized_message was not found: the fast path did not run'


def test_the_plain_path_sends_the_same(peer):
    output = _publish_and_receive(peer, False, _cases(), 'plain')
    assert not output.serialized


def test_without_a_handle_pointer_the_plain_path_is_chosen(peer, monkeypatch):
    monkeypatch.setattr(transport, 'publisher_pointer', lambda publisher: None)
    output = _publish_and_receive(peer, True, _cases()[:2], 'no_pointer')
    assert not output.serialized


def test_an_output_rendered_elsewhere_is_copied_in_and_a_wrong_shape_refused(peer):
    node = peer.node
    publisher = node.create_publisher(Image, '/transport_test/elsewhere', qos('reliable', 1))
    try:
        header = ros_header(CdrHeader(Stamp(1, 2), 'cam', b''))
        for serialized in (True, False):
            output = ImageOutput(publisher, 'mono8', serialized=serialized)
            view = output.buffer(header, (2, 3))
            output.publish(np.full((2, 3), 9, np.uint8))  # not the buffer: copied in
            assert (view == 9).all()
            with pytest.raises(ValueError, match='was not rendered into its buffer'):
                output.publish(np.zeros((3, 2), np.uint8))
    finally:
        node.destroy_publisher(publisher)


def test_headers_convert_both_ways():
    header = ros_header(CdrHeader(Stamp(-5, 123), 'base_link', b''))
    assert (header.stamp.sec, header.stamp.nanosec, header.frame_id) == (-5, 123, 'base_link')
    assert cdr_header(header) == header_bytes(-5, 123, 'base_link')
    raw = CdrHeader(Stamp(1, 2), 'x', b'exact bytes')
    assert cdr_header(raw) == b'exact bytes'  # a received header is passed on as it came
    assert ros_header(header) is header


def test_asynchronous_publication_is_only_a_default(monkeypatch):
    # setenv first records what was there (delenv of an unset variable records nothing), so the
    # value set below is undone when the test ends, whatever the environment held before.
    monkeypatch.setenv(transport.PUBLICATION_MODE_VARIABLE, 'recorded')
    monkeypatch.delenv(transport.PUBLICATION_MODE_VARIABLE)
    transport.prefer_asynchronous_publication()
    assert transport.os.environ[transport.PUBLICATION_MODE_VARIABLE] == 'ASYNCHRONOUS'
    monkeypatch.setenv(transport.PUBLICATION_MODE_VARIABLE, 'SYNCHRONOUS')
    transport.prefer_asynchronous_publication()
    assert transport.os.environ[transport.PUBLICATION_MODE_VARIABLE] == 'SYNCHRONOUS'


def test_the_rcl_call_releases_the_gil():
    """ctypes drops the GIL for functions of a CDLL, not for those of a PyDLL (the Python API flag)."""
    function = transport.rcl_publish_function()
    assert function is not None
    assert not function._flags_ & transport.ctypes._FUNCFLAG_PYTHONAPI
    assert transport.ctypes.pythonapi.Py_IsInitialized._flags_ & transport.ctypes._FUNCFLAG_PYTHONAPI
