"""seg_bag refuses bad input with one sentence and exit code 2: no traceback, nothing overwritten."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from seg_node.bag import messages
from seg_node.bag.bagio import BagWriter
from seg_node.bag.cli import main
from seg_node.bag.synth import SynthOptions, stamp_ns, write_drive
from seg_node.model.known_answer import palette_classifier

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp('bags') / 'drive'
    write_drive(path, SynthOptions(cameras=1, frames=2, width=32, height=24, scene='palette'))
    return path


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp('model') / 'palette.onnx'
    onnx.save(palette_classifier(), path)
    return path


@pytest.fixture(scope='module')
def corrupt(tmp_path_factory, bag):
    """Bags broken in different ways, by name."""
    root = tmp_path_factory.mktemp('corrupt')
    db3 = next(bag.glob('*.db3')).read_bytes()
    metadata = (bag / 'metadata.yaml').read_text()
    broken = {}
    for name, files in {
        'no metadata': {},
        'garbage metadata': {'metadata.yaml': 'this: [is not: rosbag2', 'drive.db3': db3},
        'truncated database': {'metadata.yaml': metadata, 'drive.db3': db3[:len(db3) // 3]},
        'not a database': {'metadata.yaml': metadata, 'drive.db3': b'hello' * 100},
    }.items():
        path = root / name.replace(' ', '_')
        path.mkdir()
        for file, content in files.items():
            (path / file).write_bytes(content if isinstance(content, bytes) else content.encode())
        broken[name] = path
    return broken


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_one_sentence(code, err, *fragments):
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert 'Traceback' not in err
    for fragment in fragments:
        assert fragment in err, err


def commands(bag, tmp_path, model):
    return {
        'eval': ['eval', bag],
        'label': ['label', bag, tmp_path / 'labelled', '--model', model],
        'video': ['video', bag, tmp_path / 'out.mp4'],
        'play': ['play', bag],
    }


@pytest.mark.parametrize('command', ['eval', 'label', 'video', 'play'])
def test_a_missing_bag(capsys, tmp_path, model, command):
    code, err = run(capsys, *commands(tmp_path / 'nope', tmp_path, model)[command])
    assert_one_sentence(code, err, f'seg_bag {command}: error:', 'does not exist')


@pytest.mark.parametrize('kind', ['no metadata', 'garbage metadata', 'truncated database', 'not a database'])
@pytest.mark.parametrize('command', ['eval', 'label', 'video'])
def test_a_corrupt_bag(capsys, tmp_path, model, corrupt, kind, command):
    code, err = run(capsys, *commands(corrupt[kind], tmp_path, model)[command])
    assert_one_sentence(code, err, 'is not a readable rosbag2')
    assert not (tmp_path / 'labelled').exists() and not (tmp_path / 'out.mp4').exists()


@pytest.mark.parametrize(('argv', 'fragment'), [
    (['label', '{bag}', '{tmp}/o', '--model', '{model}', '--topics', '/cam_rear/image_raw'],
     'the bag has no topic /cam_rear/image_raw (topics: /cam_front/camera_info'),
    (['video', '{bag}', '{tmp}/o.mp4', '--cameras', '/cam_rear'], 'no overlay topic'),
    (['play', '{bag}', '--play-topics', '/cam_rear/image_raw'], 'the bag has no topic /cam_rear/image_raw'),
    (['play', '{bag}', '--remap', '/cam_rear/image_raw:=/x'], 'the bag has no topic /cam_rear/image_raw'),
])
def test_an_unknown_topic(capsys, tmp_path, bag, model, argv, fragment):
    argv = [a.format(bag=bag, tmp=tmp_path, model=model) for a in argv]
    assert_one_sentence(*run(capsys, *argv), fragment)


def test_a_topic_of_the_wrong_type_to_label(capsys, tmp_path, bag, model):
    code, err = run(capsys, 'label', bag, tmp_path / 'o', '--model', model,
                    '--topics', '/cam_front/camera_info')
    assert_one_sentence(code, err, 'carries sensor_msgs/msg/CameraInfo, not sensor_msgs/msg/Image or')


def test_eval_of_a_bag_without_masks_or_ground_truth(capsys, tmp_path, bag):
    assert_one_sentence(*run(capsys, 'eval', bag), 'has no mask topic')
    images_only = tmp_path / 'images'
    with BagWriter(images_only) as out:
        out.write('/cam_front/image_raw', messages.image(messages.header(1, 'f'), np.zeros((2, 2, 3), np.uint8)), 1)
    assert_one_sentence(*run(capsys, 'eval', images_only), 'has no ground-truth topic')
    assert_one_sentence(*run(capsys, 'eval', bag, '--truth', bag / '..' / 'nope'), 'does not exist')


def test_a_mask_that_is_not_mono8(capsys, tmp_path, bag):
    path = tmp_path / 'rgb_mask'
    with BagWriter(path) as out:
        head = messages.header(stamp_ns(0, 0), 'cam_front_optical_frame')  # a frame with ground truth
        rgb = messages.image(head, np.zeros((2, 2, 3), np.uint8))
        out.write('/cam_front/segmentation/mask', rgb, 1)
    code, err = run(capsys, 'eval', path, '--truth', bag)
    assert_one_sentence(code, err, '/cam_front/segmentation/mask: a class mask must be mono8')


def test_playing_a_type_this_ros_install_lacks(capsys, tmp_path):
    # A message package that exists in no ROS install: the bag carries its definition, rclpy has none.
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg('float64 meters', 'seg_node_test_msgs/msg/Odometer'))
    path = tmp_path / 'odometer'
    with BagWriter(path) as out:
        out.connection('/odom', 'seg_node_test_msgs/msg/Odometer', typestore=store)
    code, err = run(capsys, 'play', path)
    assert_one_sentence(code, err, 'topic /odom has type seg_node_test_msgs/msg/Odometer, which is not installed')


def test_a_model_that_does_not_exist(capsys, tmp_path, bag):
    code, err = run(capsys, 'label', bag, tmp_path / 'o', '--model', tmp_path / 'missing.onnx')
    assert_one_sentence(code, err, 'missing.onnx', 'does not exist')
    assert not (tmp_path / 'o').exists()


def test_a_model_whose_sha256_differs_is_refused_before_labelling(capsys, tmp_path, bag, model):
    code, err = run(capsys, 'label', bag, tmp_path / 'o', '--model', model, '--model-sha256', '0' * 64)
    assert_one_sentence(code, err, 'palette.onnx', f'not the expected {"0" * 64}')
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('command', ['synth', 'label', 'video', 'play-record'])
def test_nothing_is_overwritten_without_force(capsys, tmp_path, bag, model, command):
    target = tmp_path / ('out.mp4' if command == 'video' else 'existing')
    if command == 'video':
        target.write_bytes(b'precious')
    else:
        target.mkdir()
        (target / 'metadata.yaml').write_text('precious')
    argv = {'synth': ['synth', target, '--frames', '1'],
            'label': ['label', bag, target, '--model', model],
            'video': ['video', bag, target],
            'play-record': ['play', bag, '--record', target, '--topics', '/cam_front/image_raw']}[command]
    code, err = run(capsys, *argv)
    assert_one_sentence(code, err, 'already exists; pass --force to overwrite it')
    assert (target.read_bytes() if command == 'video' else (target / 'metadata.yaml').read_text()) in (
        b'precious', 'precious')


def test_force_replaces_a_bag_but_never_deletes_anything_else(capsys, tmp_path):
    bag = tmp_path / 'bag'
    assert main(['synth', str(bag), '--frames', '1', '--width', '32', '--height', '32']) == 0
    assert main(['synth', str(bag), '--frames', '2', '--width', '32', '--height', '32', '--force']) == 0
    assert '2' in (bag / 'metadata.yaml').read_text()
    home = tmp_path / 'home'
    home.mkdir()
    (home / 'notes.txt').write_text('keep me')
    code, err = run(capsys, 'synth', home, '--force')
    assert_one_sentence(code, err, 'is not a rosbag2 directory, so --force will not delete it')
    assert (home / 'notes.txt').read_text() == 'keep me'


@pytest.mark.parametrize(('argv', 'fragment'), [
    (['synth', '{tmp}/b', '--cameras', '9'], '--cameras must be 1..8'),
    (['synth', '{tmp}/b', '--frames', '0'], '--frames must be at least 1'),
    (['play', '{bag}', '--rate', '0'], '--rate must be positive'),
    (['play', '{bag}', '--remap', 'nonsense'], '--remap expects FROM:=TO'),
    (['play', '{bag}', '--record', '{tmp}/r'], '--record OUT_BAG and --topics T ... go together'),
    (['video', '{bag}', '{tmp}/o.avi'], 'must end in .mp4'),
])
def test_bad_options(capsys, tmp_path, bag, argv, fragment):
    argv = [a.format(bag=bag, tmp=tmp_path) for a in argv]
    assert_one_sentence(*run(capsys, *argv), fragment)
    assert not (tmp_path / 'b').exists()


def test_the_console_script_exits_2_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'seg_node.bag.cli', 'eval', str(tmp_path / 'nope')],
                            capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == f"seg_bag eval: error: bag '{tmp_path / 'nope'}' does not exist"
    assert result.stdout == ''
