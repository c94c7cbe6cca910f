"""The Foxglove live view without ROS: pictures, labels, statistics and a grid reach a real WebSocket client."""

import json
import socket

import numpy as np
import pytest

from seg_node.model.classes import CITYSCAPES_PALETTE, ClassTable
from seg_node.msg.labels import labels_json
from seg_node.runtime.render import resize_nearest

live = pytest.importorskip('seg_node.viewer.live')
pytest.importorskip('foxglove')
from foxglove_client import FoxgloveClient  # noqa: E402

from seg_node.ros.harness import wait_for  # noqa: E402

CAMERA = '/cam_a/image_raw'
OVERLAY, COLOUR, LABELS = '/cam_a/segmentation/overlay', '/cam_a/segmentation/color_mask', '/cam_a/segmentation/labels'
PALETTE = np.asarray(CITYSCAPES_PALETTE, np.uint8)
GRID = {'resolution': 0.25, 'origin': (1.5, -2.0), 'frame_id': 'base_link', 'stamp': (7, 8)}


def decode_picture(data):
    import cv2
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def class_picture(height, width, seed=0, block=8):
    ids = np.random.default_rng(seed).integers(0, 19, (height // block, width // block), dtype=np.uint8)
    return PALETTE[resize_nearest(ids, (height, width))]


@pytest.fixture
def view():
    server = live.LiveView('127.0.0.1', 0, [CAMERA], options=lambda: live.ViewOptions(max_width=64))
    yield server
    server.close()


def test_view_image_keeps_mask_colours_exact_and_bounds_the_width():
    colour = class_picture(96, 128, block=1)  # any averaging would invent colours
    data, fmt = live.view_image('color_mask', colour, live.ViewOptions(image_format='jpeg', max_width=48))
    assert fmt == 'png'
    np.testing.assert_array_equal(decode_picture(data), resize_nearest(colour, (36, 48)))
    colour = class_picture(96, 128)
    data, fmt = live.view_image('overlay', colour, live.ViewOptions(image_format='jpeg', jpeg_quality=95,
                                                                     max_width=0))
    assert fmt == 'jpeg' and data[:2] == b'\xff\xd8'
    error = np.abs(decode_picture(data).astype(int) - colour)
    assert error.mean() < 12 and np.median(error) <= 3  # JPEG: loss at the class edges only


def test_nothing_is_encoded_without_a_subscriber(view):
    client = FoxgloveClient(view.url)
    try:
        assert wait_for(lambda: OVERLAY in client.channels, 10)  # connected, subscribed to nothing
        for i in range(5):
            view.offer_frame(CAMERA, (i, 0), 'cam_a', {'overlay': class_picture(32, 32), 'image': None})
        assert view.wanted(CAMERA) == set()
        assert view.counts['skipped'] == 5 and view.counts['offered'] == 0 and view.counts['encoded'] == 0
    finally:
        client.close()


def test_a_subscriber_gets_the_pictures_with_their_stamps_and_the_labels(view):
    table = ClassTable(('road', 'car'), ((128, 64, 128), (0, 0, 142)))
    view.set_labels(CAMERA, labels_json(table, 'toy.onnx'))
    client = FoxgloveClient(view.url)
    try:
        client.subscribe(COLOUR, LABELS)
        assert wait_for(lambda: view.wanted(CAMERA) == {'color_mask'}, 5)
        colour = class_picture(40, 128, seed=3)
        view.offer_frame(CAMERA, (12, 345), 'cam_a_optical', {'color_mask': colour})
        assert wait_for(lambda: client.messages[COLOUR] and client.messages[LABELS], 10), dict(view.counts)
        picture = client.decoded(COLOUR)[0]
        assert (picture.timestamp.seconds, picture.timestamp.nanos) == (12, 345)
        assert picture.frame_id == 'cam_a_optical' and picture.format == 'png'
        np.testing.assert_array_equal(decode_picture(picture.data), resize_nearest(colour, (20, 64)))
        labels = client.decoded(LABELS)[0]
        assert labels['classes'][1] == {'id': 1, 'name': 'car', 'color': [0, 0, 142]}
        assert client.channels[LABELS]['schemaName'] == live.LABELS_SCHEMA
    finally:
        client.close()
    late = FoxgloveClient(view.url)  # like a latched topic: a viewer that comes later gets them too
    try:
        late.subscribe(LABELS)
        assert wait_for(lambda: late.messages[LABELS], 5)
        assert late.decoded(LABELS)[0] == labels
    finally:
        late.close()


def test_a_grid_offered_through_the_hook_arrives_as_a_foxglove_grid(view):
    topic = '/seg_node/ground_grid'
    cells = np.array([[-1, 0, 100], [50, -1, 7]], np.int8)
    view.declare_grid(topic)
    assert topic in view.topics()
    client = FoxgloveClient(view.url)
    try:
        client.subscribe(topic)
        assert wait_for(lambda: client.messages[topic] or view.offer_grid(topic, cells, **GRID), 10, period=0.1)
        grid = client.decoded(topic)[0]
        assert (grid.timestamp.seconds, grid.timestamp.nanos, grid.frame_id) == (7, 8, 'base_link')
        assert grid.column_count == 3 and grid.row_stride == 3 and grid.cell_stride == 1
        assert (grid.cell_size.x, grid.cell_size.y) == (0.25, 0.25)
        assert (grid.pose.position.x, grid.pose.position.y) == (1.5, -2.0)
        assert [(f.name, f.offset, f.type) for f in grid.fields] == [('value', 0, 2)]  # 2: INT8
        np.testing.assert_array_equal(np.frombuffer(grid.data, np.int8).reshape(2, 3), cells)
    finally:
        client.close()
    with pytest.raises(ValueError, match='2-D int8'):
        view.offer_grid(topic, cells.astype(np.uint8), **GRID)


def test_statistics_reach_a_subscriber(view):
    client = FoxgloveClient(view.url)
    try:
        client.subscribe(live.STATISTICS_TOPIC)
        statuses = [{'name': 'seg_node: engine', 'level': 0, 'message': 'running on cpu', 'hardware_id': '',
                     'values': [{'key': 'provider', 'value': 'cpu'}]}]
        assert wait_for(lambda: view.log_statistics(live.diagnostics_json(statuses, 3_000_000_005))
                        or client.messages[live.STATISTICS_TOPIC], 10, period=0.1)
        stats = client.decoded(live.STATISTICS_TOPIC)[0]
        assert stats['header']['stamp'] == {'sec': 3, 'nanosec': 5}
        assert stats['status'] == statuses
    finally:
        client.close()


def test_a_client_asking_for_the_old_subprotocol_is_refused(view):
    with pytest.raises(Exception, match='400'):
        FoxgloveClient(view.url, subprotocol='foxglove.websocket.v1')


def test_a_port_in_use_and_a_bad_host_are_refused_in_one_sentence():
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(live.LiveViewError, match=f'cannot listen on 127.0.0.1:{port}') as err:
            live.LiveView('127.0.0.1', port, [CAMERA])
    assert '\n' not in str(err.value)
    with pytest.raises(live.LiveViewError, match=r"foxglove_host must be an IP address .* got 'vehicle one'"):
        live.LiveView('vehicle one', 0, [CAMERA])
    assert live.check_host('0.0.0.0') is None and live.check_host('::1') is None


def test_labels_payload_is_plain_json():
    assert json.loads(labels_json(ClassTable(('a',), ((1, 2, 3),)), 'm'))['classes'][0]['color'] == [1, 2, 3]
