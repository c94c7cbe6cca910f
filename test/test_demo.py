"""The demo end to end, small and fast: a contract model, a short drive, the real node over DDS."""

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
import pytest

from demo import run as demo
from seg_node.bag.bagio import open_bag
from seg_node.bag.ground import BAG_GRID
from seg_node.bag.synth import SynthOptions
from seg_node.ground.score import GridScores
from seg_node.model.known_answer import palette_classifier
from seg_node.synthetic import Drive

pytestmark = pytest.mark.dds

REPO = Path(__file__).resolve().parents[1]
FRAMES = 12


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    # Palette scenes through the palette classifier at the frames' own size: every label is known.
    onnx.save(palette_classifier(), root / 'model.onnx')
    result = subprocess.run(
        [sys.executable, '-m', 'demo.run', '--model', str(root / 'model.onnx'), '--scene', 'palette',
         '--providers', 'cpu',
         '--out', str(root / 'out'), '--frames', str(FRAMES), '--width', '160', '--height', '96'],
        capture_output=True, text=True, cwd=REPO, timeout=240, check=False)
    return root / 'out', result


def test_the_demo_succeeds_and_prints_the_summary(finished):
    _, result = finished
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr
    for text in ('seg_node demo: 2 cameras x 12 frames', 'provider cpu', 'mIoU', 'p99', '/cam_left'):
        assert text in result.stdout


def test_every_frame_went_through_the_node(finished):
    out, _ = finished
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['provider'] == 'cpu'
    for camera in summary['cameras'].values():
        assert camera['frames_in'] == FRAMES
        assert camera['frames_out'] + camera['dropped'] == FRAMES
        # A frame missing from the recording is one the node itself counted as superseded.
        assert camera['dropped'] == camera['node_dropped']
        assert camera['latency_p50_ms'] > 0
    assert summary['mean_iou'] == 1.0 and summary['pixel_accuracy'] == 1.0


def test_the_demo_writes_the_bag_the_video_and_the_contact_sheet(finished):
    out, _ = finished
    with open_bag(out / 'output') as reader:
        recorded = {c.topic for c in reader.connections}
    assert {'/cam_front/segmentation/overlay', '/cam_left/segmentation/mask', '/diagnostics'} <= recorded
    video = cv2.VideoCapture(str(out / 'demo.mp4'))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(demo.VIDEO_FPS)
    assert cv2.imread(str(out / 'demo_sheet.png')) is not None
    assert 'segmenting' in (out / 'node.log').read_text()


def test_a_missing_model_that_is_not_the_demo_model_is_an_error(tmp_path, capsys):
    code = demo.main(['--model', str(tmp_path / 'nope.onnx'), '--out', str(tmp_path / 'out')])
    assert code == 1
    assert f"model '{tmp_path / 'nope.onnx'}' does not exist" in capsys.readouterr().err


class TimedEngine:
    """An engine that takes ``seconds`` per call, whatever it is given."""

    provider = 'cpu'

    def __init__(self, seconds):
        self.seconds = seconds

    def segment(self, images):
        time.sleep(self.seconds)


def test_replay_rate_gives_a_slow_engine_its_headroom(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, 'load_model', lambda request: SimpleNamespace(engine=TimedEngine(0.05)))
    args = demo._parser().parse_args(['--model', str(tmp_path / 'model.onnx'), '--cameras', '2'])
    plan = demo.plan(args.model, args)
    # By hand: a 2-camera set costs 50 ms in the engine plus 2 x 15 ms to render and publish;
    # with 2.5x headroom that is one set per 200 ms, against one per 33.3 ms at 30 Hz: 1/6 real time.
    assert plan.batch_ms == pytest.approx(50, abs=15)
    assert plan.rate == pytest.approx(1 / 6, rel=0.15)
    # 75 s of playback at 1/6 real time would hold 375 frames: capped at 90.
    assert plan.frames == 90


def test_an_instant_engine_leaves_headroom_for_rendering_only(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, 'load_model', lambda request: SimpleNamespace(engine=TimedEngine(0.0)))
    args = demo._parser().parse_args(['--model', str(tmp_path / 'model.onnx'), '--cameras', '1'])
    plan = demo.plan(args.model, args)
    # By hand: 2.5 x 15 ms of rendering = 37.5 ms per frame against 33.3 ms at 30 Hz: 0.89x real time.
    assert plan.rate == pytest.approx(33.33 / 37.5, rel=0.05)
    assert plan.frames == 90


def test_a_second_run_reuses_the_drive_only_when_nothing_it_depends_on_changed(tmp_path, monkeypatch):
    options = demo.SynthOptions(cameras=1, frames=2, width=64, height=32, seed=5, scene='palette')
    folder = tmp_path / 'drive'
    assert demo.ensure_drive(folder, options) is False
    written = {p: p.stat().st_mtime_ns for p in folder.rglob('*') if p.is_file()}
    assert written, 'the drive was written'
    assert demo.ensure_drive(folder, options) is True
    assert {p: p.stat().st_mtime_ns for p in folder.rglob('*') if p.is_file()} == written, 'nothing rewritten'
    with open_bag(folder) as bag:
        assert sum(1 for _ in bag.messages()) > 0
    # Other options, or a drive whose writing was interrupted (no stamp): drawn again.
    assert demo.ensure_drive(folder, dataclasses.replace(options, seed=6)) is False
    (tmp_path / 'drive.key').unlink()
    assert demo.ensure_drive(folder, options) is False
    # Another generator: the demo reads the generator's source from a copy, the same bytes first
    # (reused), then with one file of the scene package and then the bag writer changed (drawn again).
    copy = tmp_path / 'generator'
    shutil.copytree(Path(demo.synthetic.__file__).parent, copy / 'synthetic')
    shutil.copy(demo.synth.__file__, copy / 'synth.py')
    monkeypatch.setattr(demo.synthetic, '__file__', str(copy / 'synthetic' / '__init__.py'))
    monkeypatch.setattr(demo.synth, '__file__', str(copy / 'synth.py'))
    assert demo.ensure_drive(folder, options) is True
    for changed in (copy / 'synthetic' / 'painter.py', copy / 'synth.py'):
        key = (tmp_path / 'drive.key').read_text()
        changed.write_bytes(changed.read_bytes() + b'\n# a changed generator\n')
        assert demo.ensure_drive(folder, options) is False, f'{changed.name} changed'
        assert (tmp_path / 'drive.key').read_text() != key
        assert demo.ensure_drive(folder, options) is True


def test_the_drive_scene_gives_the_node_its_cameras_poses_and_the_summary_its_grid_scores():
    drive = SynthOptions(cameras=2, frames=3, width=320, height=160, seed=4)
    params = demo.ground_params(drive)
    rig = Drive(4, width=320, height=160, num_cameras=2)
    assert params['ground_camera_poses'] == [*rig.mount(0), *rig.mount(1)]
    grid = (params['ground_resolution'], params['ground_x_max'], params['ground_y_min'])
    assert grid == (BAG_GRID.resolution, 20.0, -10.0)
    assert params['ground_pitch_sigma_deg'] == 0.0  # the drive's poses are exact
    assert demo.ground_params(dataclasses.replace(drive, scene='palette')) == {}
    scores = GridScores()
    truth = np.array([[0, 100], [0, -1]], np.int8)
    scores.add(truth.copy(), truth)
    line = demo.ground_line({k: v for k, v in scores.summary().items()})
    assert 'cell accuracy 1.000' in line and 'false-free rate 0.000' in line
