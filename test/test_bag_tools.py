"""seg_bag offline tools: synth, label, eval and video on small bags, read back with rosbags."""

import cv2
import numpy as np
import onnx
import pytest
import yaml
from nav_msgs.msg import OccupancyGrid
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from seg_node.bag import messages
from seg_node.bag.bagio import BagWriter, frame_key, open_bag
from seg_node.bag.evaluate import evaluate_bag
from seg_node.bag.label import LabelOptions, label_bag
from seg_node.bag.synth import CAMERA_NAMES, CAMERA_OFFSET_NS, FPS, SynthOptions, stamp_ns, write_drive
from seg_node.bag.video import VideoOptions, write_video
from seg_node.model.known_answer import palette_classifier
from seg_node.msg.image import message_to_rgb
from seg_node.synthetic import RIG_YAWS, Drive

FRAMES, WIDTH, HEIGHT = 4, 96, 64
CAMERAS = ('/cam_front', '/cam_left')
MASK = '/cam_front/segmentation/mask'


def read_all(path):
    """{topic: [(log time, message)]} of a bag."""
    out = {}
    with open_bag(path) as reader:
        for conn, logged, raw in reader.messages():
            out.setdefault(conn.topic, []).append((logged, reader.deserialize(raw, conn.msgtype)))
    return out


@pytest.fixture(scope='module')
def drive_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp('synth') / 'drive'
    write_drive(path, SynthOptions(cameras=2, frames=FRAMES, width=WIDTH, height=HEIGHT, compressed=True,
                                   compressed_format='png', seed=3))
    return path


@pytest.fixture(scope='module')
def palette_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp('synth') / 'palette'
    write_drive(path, SynthOptions(cameras=2, frames=FRAMES, width=WIDTH, height=HEIGHT, scene='palette'))
    return path


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    # Native input size: the palette classifier is then exact on every pixel.
    path = tmp_path_factory.mktemp('model') / 'palette.onnx'
    onnx.save(palette_classifier(), path)
    return path


@pytest.fixture(scope='module')
def labelled(palette_bag, model, tmp_path_factory):
    out = tmp_path_factory.mktemp('label') / 'labelled'
    result = label_bag(palette_bag, out, model, LabelOptions(batch=3, providers=('cpu',)))
    return out, result


def test_synth_writes_every_camera_topic_at_30_hz_with_offsets(drive_bag):
    bag = read_all(drive_bag)
    for name in CAMERA_NAMES[:2]:
        ns = f'/cam_{name}'
        for topic in ('/image_raw', '/image_raw/compressed', '/camera_info', '/segmentation/ground_truth'):
            assert len(bag[ns + topic]) == FRAMES, ns + topic
    for camera, ns in enumerate(CAMERAS):
        stamps = [frame_key(m.header)[0] for _, m in bag[f'{ns}/image_raw']]
        assert stamps == [stamp_ns(f, camera) for f in range(FRAMES)]
        assert all(logged > stamp for (logged, _), stamp in zip(bag[f'{ns}/image_raw'], stamps, strict=True))
    periods = np.diff([frame_key(m.header)[0] for _, m in bag['/cam_front/image_raw']])
    assert np.allclose(periods, 1e9 / FPS, atol=1)
    first = [frame_key(bag[f'{ns}/image_raw'][0][1].header)[0] for ns in CAMERAS]
    assert first[1] - first[0] == CAMERA_OFFSET_NS


def test_synth_images_and_ground_truth_are_the_generators_frames(drive_bag):
    bag = read_all(drive_bag)
    drive = Drive(3, width=WIDTH, height=HEIGHT, num_cameras=2, fps=FPS)
    for frame in (0, FRAMES - 1):
        rgb, label = drive.frame(frame, 1)
        _, image = bag['/cam_left/image_raw'][frame]
        _, truth = bag['/cam_left/segmentation/ground_truth'][frame]
        _, png = bag['/cam_left/image_raw/compressed'][frame]
        assert image.encoding == 'rgb8' and truth.encoding == 'mono8'
        np.testing.assert_array_equal(message_to_rgb(image), rgb)
        np.testing.assert_array_equal(messages.mask_array(truth), label)
        np.testing.assert_array_equal(message_to_rgb(png), rgb)
        assert image.header == truth.header == png.header
        assert image.header.frame_id == 'cam_left_optical_frame'


def test_camera_info_is_the_rigs_pinhole(drive_bag):
    _, info = read_all(drive_bag)['/cam_front/camera_info'][0]
    camera = Drive(3, width=WIDTH, height=HEIGHT, num_cameras=2, fps=FPS).camera(0, 0)
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(info.k, [camera.f, 0, camera.cx, 0, camera.f, camera.cy, 0, 0, 1])


def test_bag_carries_standard_definitions_that_ros2_deserializes(drive_bag):
    meta = yaml.safe_load((drive_bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['version'] >= 8 and meta['storage_identifier'] == 'sqlite3'
    for entry in meta['topics_with_message_count']:
        assert entry['topic_metadata']['serialization_format'] == 'cdr'
        assert entry['topic_metadata']['type_description_hash'].startswith('RIHS01_')
    # The stored bytes are what a ROS 2 publisher sends: rclpy reads them as its own messages.
    types = {'sensor_msgs/msg/Image': Image, 'sensor_msgs/msg/CompressedImage': CompressedImage,
             'sensor_msgs/msg/CameraInfo': CameraInfo, 'nav_msgs/msg/OccupancyGrid': OccupancyGrid}
    with open_bag(drive_bag) as reader:
        for conn, _, raw in reader.messages():
            if conn.msgtype == 'tf2_msgs/msg/TFMessage':
                continue  # /tf_static: tf2_msgs has no PyPI wheel to read it with
            msg = deserialize_message(bytes(raw), types[conn.msgtype])
            assert msg.header.frame_id.startswith('cam_') or conn.topic.endswith('/ground_grid_truth')


def test_synth_names_cameras_in_rig_order(tmp_path):
    assert CAMERA_NAMES[:4] == ('front', 'left', 'right', 'rear')
    assert len(CAMERA_NAMES) == len(RIG_YAWS)
    write_drive(tmp_path / 'b', SynthOptions(cameras=4, frames=1, width=32, height=32, scene='palette'))
    with open_bag(tmp_path / 'b') as reader:
        assert {c.topic for c in reader.connections if c.topic.endswith('image_raw')} == {
            f'/cam_{n}/image_raw' for n in ('front', 'left', 'right', 'rear')}


def test_label_writes_inputs_and_outputs_with_the_input_headers(labelled):
    out, result = labelled
    assert result.frames == {f'{ns}/image_raw': FRAMES for ns in CAMERAS}
    assert result.provider == 'cpu'
    bag = read_all(out)
    for ns in CAMERAS:
        inputs = bag[f'{ns}/image_raw']
        for name, encoding in (('mask', 'mono8'), ('color_mask', 'rgb8'), ('overlay', 'rgb8')):
            outputs = bag[f'{ns}/segmentation/{name}']
            assert [m.header for _, m in outputs] == [m.header for _, m in inputs]
            assert [t for t, _ in outputs] == [t for t, _ in inputs], 'outputs keep the input log times'
            assert all(m.encoding == encoding and (m.height, m.width) == (HEIGHT, WIDTH) for _, m in outputs)
        assert len(bag[f'{ns}/segmentation/labels']) == 1
        assert len(bag[f'{ns}/segmentation/ground_truth']) == FRAMES


def test_label_of_palette_frames_is_exact(labelled):
    out, _ = labelled
    report = evaluate_bag(out)
    assert report.metrics.mean_iou == 1.0 and report.metrics.pixel_accuracy == 1.0
    for camera in report.cameras.values():
        assert (camera.matched, camera.missing, camera.extra) == (FRAMES, [], [])


def test_eval_counts_missing_extra_and_duplicate_masks(palette_bag, tmp_path):
    truth = read_all(palette_bag)['/cam_front/segmentation/ground_truth']
    path = tmp_path / 'partial'
    with BagWriter(path) as bag:
        for logged, msg in truth[1:]:  # frame 0 missing
            bag.write(MASK, messages.image(msg.header, messages.mask_array(msg)), logged)
        logged, msg = truth[1]
        bag.write(MASK, messages.image(msg.header, messages.mask_array(msg)), logged)
        stray = messages.header(frame_key(msg.header)[0] + 1, msg.header.frame_id)
        bag.write(MASK, messages.image(stray, messages.mask_array(msg)), logged)
    report = evaluate_bag(path, truth_bag=palette_bag)
    front = report.cameras['/cam_front']
    assert front.matched == FRAMES - 1
    assert front.missing == [frame_key(truth[0][1].header)[0]]
    assert len(front.extra) == 1 and front.duplicates == 1
    assert report.cameras['/cam_left'].missing and report.cameras['/cam_left'].mask_frames == 0
    assert report.metrics.mean_iou == 1.0
    # No camera images in this bag: latency falls back to the header stamp.
    assert front.latency_from == 'header stamp'


def test_eval_scores_a_wrong_mask(palette_bag, tmp_path):
    truth = read_all(palette_bag)['/cam_front/segmentation/ground_truth']
    path = tmp_path / 'wrong'
    with BagWriter(path) as bag:
        for logged, msg in truth:
            wrong = messages.mask_array(msg).copy()
            wrong[:, :WIDTH // 2] = 18  # bicycle, which palette frames rarely show this much
            bag.write(MASK, messages.image(msg.header, wrong), logged)
    report = evaluate_bag(path, truth_bag=palette_bag)
    labels = np.stack([messages.mask_array(m) for _, m in truth])
    assert report.metrics.pixel_accuracy == pytest.approx(
        ((labels[:, :, WIDTH // 2:] != 255).sum() + (labels[:, :, :WIDTH // 2] == 18).sum())
        / (labels != 255).sum())
    assert report.metrics.mean_iou < 0.9


@pytest.mark.parametrize('layout', ['overlay', 'side-by-side'])
def test_video_writes_an_mp4_and_a_contact_sheet(labelled, tmp_path, layout):
    out, _ = labelled
    result = write_video(out, tmp_path / 'drive.mp4', VideoOptions(layout=layout))
    capture = cv2.VideoCapture(str(result.video))
    assert capture.isOpened()
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES == result.frames
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS, rel=1e-3)
    ok, frame = capture.read()
    assert ok and frame.shape[:2] == (result.size[1], result.size[0])
    sheet = cv2.imread(str(result.sheet))
    assert sheet is not None and sheet.shape[0] > HEIGHT
    assert result.sheet == tmp_path / 'drive_sheet.png'
    # The legend names the classes the masks contain, nothing else.
    masks = np.stack([messages.mask_array(m) for ns in CAMERAS
                      for _, m in read_all(out)[f'{ns}/segmentation/mask']])
    assert len(result.classes_shown) == len(np.unique(masks))


def test_label_takes_one_topic_per_camera_and_png_equals_raw(drive_bag, model, tmp_path):
    raw = label_bag(drive_bag, tmp_path / 'raw', model, LabelOptions(providers=('cpu',)))
    assert set(raw.frames) == {f'{ns}/image_raw' for ns in CAMERAS}, 'raw preferred over its compressed twin'
    png = label_bag(drive_bag, tmp_path / 'png', model,
                    LabelOptions(topics=('/cam_left/image_raw/compressed',), providers=('cpu',)))
    assert png.frames == {'/cam_left/image_raw/compressed': FRAMES}
    from_raw = read_all(tmp_path / 'raw')['/cam_left/segmentation/overlay']
    from_png = read_all(tmp_path / 'png')['/cam_left/segmentation/overlay']
    assert [frame_key(m.header) for _, m in from_png] == [frame_key(m.header) for _, m in from_raw]
    for (_, a), (_, b) in zip(from_raw, from_png, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_mcap_storage_round_trips(tmp_path, model):
    write_drive(tmp_path / 'in', SynthOptions(cameras=1, frames=2, width=48, height=32, scene='palette',
                                              storage='mcap'))
    label_bag(tmp_path / 'in', tmp_path / 'out', model, LabelOptions(providers=('cpu',), storage='mcap'))
    assert list((tmp_path / 'out').glob('*.mcap'))
    assert evaluate_bag(tmp_path / 'out').metrics.mean_iou == 1.0
