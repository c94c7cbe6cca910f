"""The demo end to end, small and fast: a contract model, a short drive, the real node over DDS."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import onnx
import pytest

from demo import run as demo
from seg_node.bag.bagio import open_bag
from seg_node.model.known_answer import palette_classifier

pytestmark = pytest.mark.dds

REPO = Path(__file__).resolve().parents[1]
FRAMES = 12


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    onnx.save(palette_classifier(input_size=(96, 160)), root / 'model.onnx')
    result = subprocess.run(
        [sys.executable, '-m', 'demo.run', '--model', str(root / 'model.onnx'),
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
        assert camera['frames_out'] >= FRAMES - 1
        assert camera['latency_p50_ms'] > 0
    assert 0 <= summary['mean_iou'] <= 1 and 0 <= summary['pixel_accuracy'] <= 1


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


def test_replay_rate_leaves_the_node_headroom(tmp_path):
    onnx.save(palette_classifier(input_size=(96, 160)), tmp_path / 'model.onnx')
    args = demo._parser().parse_args(['--model', str(tmp_path / 'model.onnx'), '--width', '160',
                                      '--height', '96'])
    plan = demo.plan(args.model, args)
    assert 0 < plan.rate <= 1
    assert 1e3 / 30 / plan.rate >= demo.HEADROOM * plan.batch_ms, 'frame sets come faster than the engine'
    assert plan.frames <= 90
    assert plan.frames == 15 or plan.frames / 30 / plan.rate <= demo.PLAY_BUDGET_S
