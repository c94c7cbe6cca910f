"""Ground grids through the bag tools: synth writes poses and truth grids, label writes grids, eval scores them."""

import numpy as np
import onnx
import pytest

from seg_node.bag import ground
from seg_node.bag.bagio import BagError, BagWriter, open_bag
from seg_node.bag.evaluate import evaluate_bag, format_report
from seg_node.bag.label import LabelOptions, label_bag
from seg_node.bag.synth import SynthOptions, write_drive
from seg_node.bag.video import VideoOptions, write_video
from seg_node.ground.geometry import pose_from_mount
from seg_node.model.known_answer import palette_classifier
from seg_node.synthetic import Drive

FRAMES, WIDTH, HEIGHT = 3, 320, 160


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp('synth') / 'drive'
    write_drive(path, SynthOptions(cameras=2, frames=FRAMES, width=WIDTH, height=HEIGHT, seed=4))
    return path


def messages_on(path, suffix):
    with open_bag(path) as reader:
        conns = [c for c in reader.connections if c.topic.endswith(suffix)]
        return [(c.topic, reader.deserialize(raw, c.msgtype)) for c, _, raw in reader.messages(connections=conns)]


def test_synth_writes_the_rigs_poses_and_a_truth_grid_per_frame(synth):
    drive = Drive(4, width=WIDTH, height=HEIGHT, num_cameras=2)
    with open_bag(synth) as reader:
        poses = ground.bag_poses(reader)
    for camera, name in enumerate(('front', 'left')):
        expected = pose_from_mount(drive.mount(camera))
        pose = poses[f'cam_{name}_optical_frame']
        assert np.allclose(pose.rotation, expected.rotation) and np.allclose(pose.translation, expected.translation)
    truth = messages_on(synth, '/segmentation/ground_grid_truth')
    assert len(truth) == 2 * FRAMES
    front = [ground.grid_cells(m) for topic, m in truth if topic.startswith('/cam_front')]
    assert all((cells == 0).sum() > 100 for cells in front)  # the road ahead
    assert truth[0][1].header.frame_id == 'base_footprint' and truth[0][1].info.resolution == pytest.approx(0.2)
    assert sum((cells == 100).sum() for cells in front) >= 10  # the contacts of the cars ahead


def copy_with_grids(source, out, change):
    """``source`` plus, for each truth grid, a predicted grid ``change(cells)`` on ground_grid."""
    with open_bag(source) as reader, BagWriter(out) as writer:
        for conn, logged, raw in reader.messages():
            writer.write_raw(conn.topic, conn.msgtype, raw, logged, typestore=reader.typestore)
            if conn.topic.endswith('/ground_grid_truth'):
                msg = reader.deserialize(raw, conn.msgtype)
                predicted = change(ground.grid_cells(msg).copy())
                writer.write(conn.topic.replace('ground_grid_truth', 'ground_grid'),
                             ground.occupancy_grid(msg.header, predicted), logged)


def blind_to_obstacles(cells):
    cells[cells == 100] = 0
    return cells


def test_eval_scores_grids_against_the_truth(synth, tmp_path):
    copy_with_grids(synth, tmp_path / 'perfect', lambda cells: cells)
    # A perfect mask topic is needed by eval: the truth masks stand in for it.
    scores = ground.score_grids_of(tmp_path / 'perfect')
    assert scores.summary() == {'cell_accuracy': 1.0, 'coverage': 1.0, 'contact_recall': 1.0,
                                'false_free_rate': 0.0, 'frames': 2.0 * FRAMES}
    copy_with_grids(synth, tmp_path / 'blind', blind_to_obstacles)
    blind = ground.score_grids_of(tmp_path / 'blind').summary()
    assert blind['false_free_rate'] == 1.0 and blind['contact_recall'] == 0.0
    assert 0.5 < blind['cell_accuracy'] < 1.0


def test_label_writes_grids_that_eval_scores(synth, tmp_path):
    model = tmp_path / 'palette.onnx'
    onnx.save(palette_classifier(downsample=2), model)
    out = tmp_path / 'labelled'
    label_bag(synth, out, model, LabelOptions(providers=('cpu',), ground_grid=True))
    grids = messages_on(out, '/segmentation/ground_grid')
    assert len(grids) == 2 * FRAMES
    assert {m.header.frame_id for _, m in grids} == {'base_footprint'}
    report = evaluate_bag(out)
    assert report.ground is not None and report.ground.frames == 2 * FRAMES
    assert 'false-free rate' in format_report(report)
    # The side-by-side video gains a fourth tile per camera: the grid from above.
    # (Without grids it is three tiles and the legend: 3 x 320 + about 100 pixels.)
    video = write_video(out, tmp_path / 'v.mp4', VideoOptions(layout='side-by-side'))
    assert 4 * WIDTH <= video.size[0] < 4 * WIDTH + 200


def test_label_ground_grid_needs_poses(tmp_path):
    bag = tmp_path / 'palette'
    write_drive(bag, SynthOptions(cameras=1, frames=1, width=64, height=48, scene='palette'))
    model = tmp_path / 'palette.onnx'
    onnx.save(palette_classifier(), model)
    with pytest.raises(BagError, match=r'--ground-grid needs .* poses on /tf_static'):
        label_bag(bag, tmp_path / 'out', model, LabelOptions(outputs=('mask',), providers=('cpu',), ground_grid=True))
