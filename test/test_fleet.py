"""seg_bag fleet on a local two-worker Ray cluster: the same bytes and scores as seg_bag label/eval, resume, failures.

One local cluster (num_cpus=2) serves the whole module. Bags are small synthetic palette drives
(sqlite3 and MCAP, one with two cameras) and the models are known-answer palette classifiers, so
every expected figure is computed from the ground truth or from seg_bag label itself.
"""

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from seg_node.bag import messages
from seg_node.bag.bagio import BagError, BagWriter, open_bag
from seg_node.bag.cli import main
from seg_node.bag.evaluate import evaluate_bag
from seg_node.bag.label import LabelOptions, label_bag
from seg_node.bag.synth import SynthOptions, write_drive
from seg_node.fleet import run as fleet_run
from seg_node.fleet.plan import Layout, expand_inputs, output_names, plan_bag
from seg_node.fleet.run import FleetOptions, run_fleet, worker_environment
from seg_node.fleet.worker import ShardWorker, WorkerConfig
from seg_node.model.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from seg_node.model.known_answer import palette_classifier
from seg_node.msg.cdr import parse_image
from seg_node.privacy import OPT_IN, TELEMETRY_OFF

ray = pytest.importorskip('ray', reason='needs the fleet extra: pip install -e .[fleet]')
pq = pytest.importorskip('pyarrow.parquet')

REPO = Path(__file__).resolve().parents[1]
W, H = 64, 48
SHARD_FRAMES = 4  # several shards per bag, so bags are split over both workers
GOOD = ('two_cams', 'mcap_one', 'long_one')


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    # The telemetry variables are taken out of the driver's environment before the cluster starts,
    # so its processes do not inherit them from here. Ray's own usage statistics stay off through
    # its config file instead (ray.init, outside nightly wheels, also sets RAY_USAGE_STATS_ENABLED=0
    # for the cluster it starts, so that one variable reaches the workers either way; the fleet's
    # part in it is checked on worker_environment() itself).
    folder = tmp_path_factory.mktemp('ray')
    config = folder / 'usage_stats.json'
    config.write_text('{"usage_stats": false}')
    with pytest.MonkeyPatch.context() as env:
        for name in TELEMETRY_OFF:
            env.delenv(name, raising=False)
        env.setenv('RAY_USAGE_STATS_CONFIG_PATH', str(config))
        ray.init(address='local', num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level='WARNING', _temp_dir=str(folder))  # the session's files under the test's folder
    yield
    ray.shutdown()


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return tmp_path_factory.mktemp('fleet')


@pytest.fixture(scope='module')
def bags(root):
    folder = root / 'bags'
    write_drive(folder / 'two_cams', SynthOptions(cameras=2, frames=5, width=W, height=H, scene='palette', seed=1))
    # One shard only: moved into place as the worker wrote it, no merge.
    write_drive(folder / 'mcap_one', SynthOptions(cameras=1, frames=4, width=W, height=H, scene='palette', seed=2,
                                                  storage='mcap'))
    write_drive(folder / 'long_one', SynthOptions(cameras=1, frames=9, width=W, height=H, scene='palette', seed=3))
    # Broken in two ways: not a bag at all (found when planning), and a frame no decoder reads
    # (found by the worker in the middle of the bag).
    (folder / 'not_a_bag').mkdir()
    (folder / 'not_a_bag' / 'metadata.yaml').write_text('this: [is not: rosbag2')
    with BagWriter(folder / 'bad_frames') as out:
        for i in range(3):
            head = messages.header(1_000 + i, 'cam_front_optical_frame')
            image = messages.image(head, np.zeros((4, 4, 3), np.uint8))
            if i == 1:
                image.encoding = 'no_such_encoding'
            out.write('/cam_front/image_raw', image, 1_000 + i)
    return folder


def save(model, path):
    onnx.save(model, path)
    return path


@pytest.fixture(scope='module')
def models(root):
    folder = root / 'models'
    folder.mkdir()
    return {
        'exact': save(palette_classifier(), folder / 'exact.onnx'),
        # Average pooling blurs block edges: a model with real, known errors for the scores.
        'blurry': save(palette_classifier(downsample=4), folder / 'blurry.onnx'),
        # The same 19 classes, colours in reverse order: it answers 18 - c wherever the truth is c.
        'reversed': save(palette_classifier(palette=CITYSCAPES_PALETTE[::-1], classes=CITYSCAPES_CLASSES),
                         folder / 'reversed.onnx'),
        'seven': save(palette_classifier(palette=CITYSCAPES_PALETTE[:7], classes=CITYSCAPES_CLASSES[:7]),
                      folder / 'seven.onnx'),
    }


@pytest.fixture(scope='module')
def handed_to_ray():
    """Every environment the fleet run of ``labelled`` handed to Ray for its processes (runtime_env)."""
    return []


@pytest.fixture(scope='module')
def labelled(cluster, root, bags, models, handed_to_ray):
    """One fleet label run over good and broken bags, given as a manifest and a glob; a worker dies once."""
    manifest = root / 'manifest.txt'
    manifest.write_text('# bags of the test drive\nbags/two_cams\nbags/not_a_bag\n\nbags/bad_frames  # broken frame\n')
    options = FleetOptions(model=str(models['blurry']), out=root / 'out', workers=2, shard_frames=SHARD_FRAMES,
                           providers=('cpu',), batch=3, progress=False, crash_once='long_one')

    def recorded_worker_environment():
        handed_to_ray.append(worker_environment())
        return handed_to_ray[-1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fleet_run, 'worker_environment', recorded_worker_environment)
        summary = run_fleet([manifest, str(bags / '*_one')], options)
    return summary, Layout(root / 'out')


def topic_messages(path):
    """{topic: sorted [(log time, raw bytes)]} of a bag."""
    found = {}
    with open_bag(path) as reader:
        for conn, logged, raw in reader.messages():
            found.setdefault(conn.topic, []).append((logged, bytes(raw)))
    return {topic: sorted(entries) for topic, entries in found.items()}


@pytest.fixture(scope='module')
def single_machine(root, bags, models):
    """seg_bag label of every good bag with the same model, for comparison."""
    out = {}
    for name in GOOD:
        out[name] = root / 'single' / name
        label_bag(bags / name, out[name], models['blurry'], LabelOptions(providers=('cpu',), batch=3))
    return out


def test_every_bag_ends_done_or_failed_with_its_reason(labelled):
    summary, _ = labelled
    status = {name: bag['status'] for name, bag in summary.bags.items()}
    assert status == {'two_cams': 'done', 'not_a_bag': 'failed', 'bad_frames': 'failed', 'mcap_one': 'done',
                      'long_one': 'done'}
    assert 'is not a readable rosbag2' in summary.bags['not_a_bag']['reason']
    assert "/cam_front/image_raw at 1001 ns cannot be labelled" in summary.bags['bad_frames']['reason']
    assert summary.exit_code == 1
    assert summary.frames == 5 * 2 + 4 + 9  # a failed shard's frames do not count


def test_output_bags_hold_exactly_what_seg_bag_label_writes(labelled, single_machine):
    _, layout = labelled
    for name in GOOD:
        fleet, single = topic_messages(layout.bag(name)), topic_messages(single_machine[name])
        assert fleet.keys() == single.keys()
        for topic in single:
            assert fleet[topic] == single[topic], f'{name} {topic}'
        assert any(t.endswith('/segmentation/mask') for t in fleet)


def test_merged_bags_are_in_log_time_order_and_named_like_seg_bag_label(labelled):
    _, layout = labelled
    db3 = layout.bag('two_cams') / 'two_cams.db3'
    with sqlite3.connect(db3) as db:
        stamps = [t for (t,) in db.execute('SELECT timestamp FROM messages ORDER BY id')]
    assert stamps == sorted(stamps) and len(stamps) > 10
    assert not any(p.name.startswith('.') for p in layout.bags.iterdir() if p.name != '.partial')
    assert not list((layout.bags / '.partial').glob('*'))
    assert not layout.parts.exists() or not list(layout.parts.iterdir()), 'shard parts are removed'


def test_fleet_scores_are_seg_bag_evals_matrices_summed(labelled, single_machine):
    summary, layout = labelled
    total = 0
    for name in GOOD:
        record = json.loads(layout.record(name).read_text())
        expected = evaluate_bag(single_machine[name]).confusion.mat
        assert np.array_equal(np.asarray(record['confusion']), expected), name
        total = total + expected
    assert np.array_equal(np.asarray(summary.confusion), total)
    fleet = summary.to_json()['confusion_metrics']
    assert 0.3 < fleet['miou'] < 1.0, 'the blurry model makes real mistakes'
    merged = evaluate_bag(single_machine['two_cams'])
    assert summary.bags['two_cams']['confusion_metrics']['miou'] == merged.metrics.mean_iou


def test_long_bags_are_split_and_a_dead_worker_is_retried(labelled):
    summary, layout = labelled
    record = json.loads(layout.record('long_one').read_text())
    assert record['shards'] == 3 and record['frames_total'] == 9
    assert record['retries'] == 1 and summary.retries == 1
    assert json.loads(layout.record('two_cams').read_text())['shards'] == 3
    single = json.loads(layout.record('mcap_one').read_text())
    assert single['shards'] == 1 and single['outputs']['bag']['merged_from'] == 1


def test_workers_get_telemetry_off_and_never_load_ros(labelled, handed_to_ray):
    summary, _ = labelled
    # The shard workers' and the merge tasks' runtime_env: telemetry off, whatever the cluster inherited.
    assert handed_to_ray == [{'ORT_DISABLE_TELEMETRY': '1', 'RAY_USAGE_STATS_ENABLED': '0'}] * 2
    assert summary.workers
    for worker in summary.workers.values():
        assert worker['environment']['ORT_DISABLE_TELEMETRY'] == '1'
        assert worker['environment']['RAY_USAGE_STATS_ENABLED'] == '0'
        assert worker['seg_node_before_onnxruntime'] is True
        assert worker['rclpy_loaded'] is False
        assert worker['cpu_threads'] == 1 and worker['provider'] == 'cpu'


def test_worker_environment_turns_telemetry_off_even_when_the_driver_has_not(monkeypatch):
    for name in (*TELEMETRY_OFF, OPT_IN):
        monkeypatch.delenv(name, raising=False)
    assert worker_environment() == {'ORT_DISABLE_TELEMETRY': '1', 'RAY_USAGE_STATS_ENABLED': '0'}
    # The user's own setting is passed on as it is; an opt-in passes the opt-in and turns nothing off.
    monkeypatch.setenv('RAY_USAGE_STATS_ENABLED', '1')
    assert worker_environment() == {'ORT_DISABLE_TELEMETRY': '1', 'RAY_USAGE_STATS_ENABLED': '1'}
    monkeypatch.setenv(OPT_IN, '1')
    assert worker_environment() == {OPT_IN: '1'}


def test_per_frame_results_are_parquet(labelled):
    _, layout = labelled
    table = pq.read_table(layout.frames_file('two_cams')).to_pandas()
    assert len(table) == 10
    assert set(table['camera']) == {'/cam_front', '/cam_left'}
    assert (table['class_pixels'].map(sum) == W * H).all()
    assert len(set(zip(table['camera'], table['stamp_ns'], strict=True))) == 10
    assert table['miou'].between(0, 1).all() and table['latency_ms'].gt(0).all()
    assert table['confidence_mean'].isna().all(), 'no confidence asked for: the mask-only graph ran'


def test_the_report_shows_scores_bags_worst_frames_and_throughput(labelled):
    _, layout = labelled
    page = layout.report.read_text()
    for text in ('Per-class IoU', 'not_a_bag', 'is not a readable rosbag2', 'Worst frames', 'data:image/png;base64,',
                 'frames/s', 'road'):
        assert text in page, text
    saved = json.loads(layout.summary.read_text())
    assert saved['exit_code'] == 1 and saved['failed'] == ['not_a_bag', 'bad_frames']


def test_a_rerun_does_nothing_and_redoes_what_was_deleted_or_damaged(labelled, root, bags, models):
    _, layout = labelled
    out = root / 'resumed'
    shutil.copytree(layout.out, out)
    options = FleetOptions(model=str(models['blurry']), out=out, workers=2, shard_frames=SHARD_FRAMES,
                           providers=('cpu',), batch=3, progress=False)
    inputs = [bags / name for name in GOOD]
    again = run_fleet(inputs, options)
    assert {b['status'] for b in again.bags.values()} == {'skipped'} and again.frames == 0
    assert again.exit_code == 0
    before = topic_messages(out / 'bags' / 'mcap_one')
    shutil.rmtree(out / 'bags' / 'two_cams')  # deleted
    db3 = out / 'bags' / 'long_one' / 'long_one.db3'
    db3.write_bytes(db3.read_bytes()[:1000])  # damaged
    (out / 'records' / 'mcap_one.json').unlink()  # a bag without its record is not complete
    third = run_fleet(inputs, options)
    assert {n: b['status'] for n, b in third.bags.items()} == {n: 'done' for n in GOOD}
    assert topic_messages(out / 'bags' / 'mcap_one') == before
    assert third.frames == 23
    fourth = run_fleet([*inputs, bags / 'not_a_bag'], options)
    assert [b['status'] for b in fourth.bags.values()] == ['skipped'] * 3 + ['failed'] and fourth.exit_code == 1


def test_compare_two_models_gives_the_known_per_class_agreement(cluster, root, bags, models, capsys):
    out = root / 'compare'
    code = main(['fleet', 'eval', *(str(bags / n) for n in GOOD), '--model', str(models['exact']),
                 '--reference-model', str(models['reversed']), '--out', str(out), '--workers', '2',
                 '--shard-frames', str(SHARD_FRAMES), '--providers', 'cpu', '--no-progress', '--confidence'])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads((out / 'summary.json').read_text())
    # Where the truth is c, the exact model says c and the reversed one 18 - c.
    truth_counts = np.zeros(19, np.int64)
    for name in GOOD:
        with open_bag(bags / name) as reader:
            for conn, _, raw in reader.messages():
                if conn.topic.endswith('/segmentation/ground_truth'):
                    mask = messages.mask_array(reader.deserialize(raw, conn.msgtype))
                    truth_counts += np.bincount(mask.ravel(), minlength=19)
    expected = np.zeros((19, 19), np.int64)
    expected[18 - np.arange(19), np.arange(19)] = truth_counts
    assert np.array_equal(np.asarray(summary['agreement']), expected)
    agreement = summary['agreement_metrics']
    assert agreement['pixel_accuracy'] == pytest.approx(truth_counts[9] / truth_counts.sum())
    for c in range(19):
        seen = truth_counts[c] + truth_counts[18 - c] > 0
        assert agreement['iou'][c] == ((1.0 if c == 9 else 0.0) if seen else None)
    assert summary['confusion_metrics']['miou'] == 1.0
    assert np.array_equal(np.asarray(summary['reference_confusion']), np.diag(truth_counts)[:, ::-1])
    assert not list((out / 'bags').iterdir()), 'fleet eval writes no bags'
    frames = pq.read_table(out / 'frames' / 'long_one.parquet').to_pandas()
    assert frames['confidence_mean'].between(0.5, 1).all() and frames['confidence_p10'].between(0, 1).all()
    assert frames['agreement'].between(0, 1).all() and (frames['miou'] == 1.0).all()
    assert 'agreement with the reference model' in printed
    page = (out / 'report.html').read_text()
    assert 'Per-class agreement with the reference model' in page
    assert 'least agreement with the reference model; each thumbnail is camera | mask | reference | truth' in page
    worst = json.loads((out / 'records' / 'two_cams.json').read_text())['worst']
    assert [w['agreement'] for w in worst] == sorted(w['agreement'] for w in worst)
    thumb = cv2.imread(str(out / worst[0]['file']))
    assert thumb.shape[1] == 4 * 192 + 3 * 2, 'camera | mask | reference | truth'


def test_ground_truth_with_ids_the_model_lacks_is_named_as_such(tmp_path, bags, models):
    # In seg_bag eval (the 7-class masks are not to blame) ...
    label_bag(bags / 'mcap_one', tmp_path / 'seven', models['seven'], LabelOptions(providers=('cpu',)))
    with pytest.raises(BagError) as err:
        evaluate_bag(tmp_path / 'seven')
    text = str(err.value)
    truth = topic_messages(bags / 'mcap_one')['/cam_front/segmentation/ground_truth']
    labels = np.concatenate([np.frombuffer(parse_image(raw).data, np.uint8) for _, raw in truth])
    top = int(labels[labels != 255].max())  # 255: ignored
    assert top > 6
    assert text.startswith(f'the ground truth on /cam_front/segmentation/ground_truth has class ids up to {top}, ')
    assert "model's 7-class table (ids 0..6) lacks" in text and 'label map' in text
    # ... and in a fleet worker, which reuses it (run in-process: the actor is a plain class).
    plan = plan_bag(bags / 'mcap_one', 'mcap_one', Layout(tmp_path / 'out'), shard_frames=100)
    sha = hashlib.sha256(models['seven'].read_bytes()).hexdigest()
    worker = ShardWorker(WorkerConfig(model=str(models['seven']), model_sha256=sha, mode='eval', providers=('cpu',)))
    status = worker.run(plan.shards[0])
    assert status['ok'] is False and status['error'] == text


def test_two_models_with_different_classes_are_refused_before_any_work(capsys, root, bags, models):
    code = main(['fleet', 'label', str(bags / 'mcap_one'), '--model', str(models['exact']),
                 '--reference-model', str(models['seven']), '--out', str(root / 'never')])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert 'the model exact.onnx has 19 classes (ids 0..18) and the reference model seven.onnx has 7' in err
    assert 'same class set' in err and not (root / 'never').exists()


def test_a_wrong_model_hash_is_refused_on_the_driver(capsys, root, bags, models):
    code = main(['fleet', 'label', str(bags / 'mcap_one'), '--model', str(models['exact']),
                 '--model-sha256', '0' * 64, '--out', str(root / 'never')])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f'not the expected {"0" * 64}' in err


def test_without_ray_the_command_says_how_to_install_it(capsys, monkeypatch, root, bags, models):
    monkeypatch.setitem(sys.modules, 'ray', None)  # what `import ray` meets when it is not installed
    monkeypatch.setitem(sys.modules, 'ray.data', None)
    code = main(['fleet', 'label', str(bags / 'mcap_one'), '--model', str(models['exact']),
                 '--out', str(root / 'never')])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith('seg_bag fleet: error: fleet labelling needs Ray Data')
    assert "pip install 'seg_node[fleet]'" in err


@pytest.mark.parametrize(('argv', 'fragment'), [
    (['--workers', '-1'], '--workers must be 0'),
    (['--shard-frames', '0'], '--shard-frames must be at least 1'),
    (['--cpus-per-worker', '0'], '--cpus-per-worker must be positive'),
])
def test_bad_options(capsys, root, bags, models, argv, fragment):
    code = main(['fleet', 'label', str(bags / 'mcap_one'), '--model', str(models['exact']),
                 '--out', str(root / 'never'), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and fragment in err


def test_a_second_run_into_the_same_folder_is_refused(root, bags, models):
    import fcntl

    out = root / 'locked'
    out.mkdir()
    with (out / '.fleet.lock').open('w') as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(BagError, match='another fleet run is writing into'):
            run_fleet([bags / 'mcap_one'], FleetOptions(model=str(models['exact']), out=out))


def test_inputs_from_folders_globs_and_manifests(tmp_path, bags):
    manifest = tmp_path / 'list.txt'
    manifest.write_text(f'{bags / "two_cams"}\n# a comment\n{bags}/m*\n')
    found = expand_inputs([manifest, bags / 'two_cams', bags / 'long_one' / 'metadata.yaml'])
    assert [p.name for p in found] == ['two_cams', 'mcap_one', 'long_one']
    with pytest.raises(BagError, match=r"the pattern .* matches no bag folder"):
        expand_inputs([str(bags / 'zz*')])
    empty = tmp_path / 'empty.txt'
    empty.write_text('# nothing\n')
    with pytest.raises(BagError, match='lists no bag'):
        expand_inputs([empty])
    assert output_names([Path('/a/drive'), Path('/b/drive'), Path('/c/other')])[2] == 'other'
    first, second, _ = output_names([Path('/a/drive'), Path('/b/drive'), Path('/c/other')])
    assert first != second and first.startswith('drive-')


def test_the_fleet_layer_imports_with_ros_blocked():
    code = ('import importlib.abc, sys\n'
            'class Block(importlib.abc.MetaPathFinder):\n'
            '    def find_spec(self, name, path=None, target=None):\n'
            "        if name.split('.')[0] in ('rclpy', 'sensor_msgs', 'std_msgs', 'rosgraph_msgs'):\n"
            "            raise ImportError(name + ' is blocked')\n"
            'sys.meta_path.insert(0, Block())\n'
            'import seg_node.fleet.cli, seg_node.fleet.run, seg_node.fleet.worker, seg_node.fleet.report\n'
            "print('ok')\n")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stderr
