"""A SageMaker semantic-segmentation job's data, hyperparameters and model move over with no edits.

The dataset has SageMaker's four channels plus ``label_map``, 8-bit indexed PNG annotations whose
palette indices encode the classes through a permutation (``{"map": {class: pixel value}}``, AWS's
reading), and the ``hyperparameters.json`` of a tuning job's training job (every value a string,
``_tuning_objective_metric`` injected). It trains (1 epoch, 2 iterations), exports, evaluates,
seeds incremental training from the model.tar.gz and resumes from a tarball of the run folder.
"""

import io
import json
import tarfile

import cv2
import numpy as np
import pytest
import torch

from seg_node.synthetic import write_sagemaker_dataset
from seg_node.training import evaluate, export_cli, train
from seg_node.training.datasets import get_dataset
from seg_node.training.png import write_indexed_png

torch.set_num_threads(2)

NUM_CLASSES = 19
# Class c is stored as palette index ENCODE[c] (a permutation), as annotation tools may do.
ENCODE = np.roll(np.arange(NUM_CLASSES), 7)
# The training job of a tuning job, as SageMaker writes /opt/ml/input/config/hyperparameters.json.
HYPERPARAMETERS = {
    '_tuning_objective_metric': 'validation:mIOU', 'algorithm': 'fcn', 'backbone': 'resnet-50',
    'use_pretrained_model': 'False', 'num_classes': str(NUM_CLASSES), 'num_training_samples': '4',
    'epochs': '1', 'learning_rate': '0.001', 'optimizer': 'sgd', 'momentum': '0.9', 'weight_decay': '0.0001',
    'lr_scheduler': 'poly', 'mini_batch_size': '2', 'validation_mini_batch_size': '2', 'base_size': '64',
    'crop_size': '32', 'early_stopping': 'False', 'syncbn': 'False',
}
# What a small CPU run adds on the command line (ours; the file stays as SageMaker wrote it).
QUICK = ['--workers', '0', '--threads', '2', '--max_iterations', '2', '--output_stride', '16']


@pytest.fixture(scope='module')
def job(tmp_path_factory):
    """The SageMaker-style dataset and hyperparameters.json, then one seg_train run on them."""
    root = tmp_path_factory.mktemp('sagemaker')
    data = write_sagemaker_dataset(root / 'data', n_train=4, n_val=2, width=64, height=32, seed=7)
    palette = [tuple(int(v) for v in np.random.default_rng(c).integers(0, 256, 3)) for c in range(256)]
    for split in ('train', 'validation'):
        for label_path in (data / f'{split}_annotation').glob('*.png'):
            classes = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
            encoded = np.where(classes == 255, 255, ENCODE[np.minimum(classes, NUM_CLASSES - 1)]).astype(np.uint8)
            write_indexed_png(label_path, encoded, palette)
    (data / 'label_map').mkdir()
    label_map = {'map': {str(c): int(ENCODE[c]) for c in range(NUM_CLASSES)}}
    for split in ('train', 'validation'):
        (data / 'label_map' / f'{split}_label_map.json').write_text(json.dumps(label_map))
    config = root / 'hyperparameters.json'
    config.write_text(json.dumps(HYPERPARAMETERS))
    run = root / 'run'
    return {'root': root, 'data': data, 'config': config, 'run': run, 'tar': root / 'model.tar.gz'}


@pytest.fixture(scope='module')
def trained(job):
    argv = ['--config', str(job['config']), '--data', str(job['data']), '--output', str(job['run']),
            '--model_tar', str(job['tar']), *QUICK]
    assert train.main(argv) == 0
    return job


def test_labels_decode_through_the_palette_and_the_label_map(job):
    # The indexed PNGs hold ENCODE[class]; read back through the label map they are the classes again.
    reference = write_sagemaker_dataset(job['root'] / 'plain', n_train=4, n_val=2, width=64, height=32, seed=7)
    for split in ('train', 'validation'):
        plain = get_dataset(reference, split=split, num_classes=NUM_CLASSES)
        mapped = get_dataset(job['data'], split=split, num_classes=NUM_CLASSES)
        for i in range(len(plain)):
            assert np.array_equal(mapped.read(i)[1], plain.read(i)[1])


def test_trains_from_the_jobs_files_and_logs_what_sagemaker_would(trained):
    run = trained['run']
    lines = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert len(lines) == 1
    record = lines[0]
    assert record['validation:mIOU'] == record['validation:mIOU_present_classes']
    assert 0 <= record['validation:mIOU_all_classes'] <= record['validation:mIOU_present_classes'] <= 1
    saved = train.load_checkpoint(run / 'model_best.pt')
    assert saved['hyperparameters']['num_training_samples'] == 4
    assert (run / 'manifest.json').is_file()
    with tarfile.open(trained['tar']) as tar:
        assert sorted(tar.getnames()) == ['hyperparameters.json', 'manifest.json', 'model_best.pt']
        written = json.load(tar.extractfile('hyperparameters.json'))
    assert written['num_classes'] == '19'
    assert written['use_pretrained_model'] == 'False'


def test_log_names_the_ignored_key_the_label_map_reading_and_syncbn(job, tmp_path, capsys):
    # The command line adds SageMaker's mIoU definition and syncbn, which one process cannot honour.
    argv = ['--config', str(job['config']), '--data', str(job['data']), '--output', str(tmp_path / 'r'),
            *QUICK, '--max_iterations', '1', '--miou_classes', 'all', '--syncbn', 'true']
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert "ignoring _tuning_objective_metric='validation:mIOU'" in out
    assert "keys read as class ids and values as pixel values (AWS's reading)" in out
    assert 'syncbn has no effect in a single process' in out
    record = json.loads((tmp_path / 'r' / 'metrics.jsonl').read_text())
    assert record['validation:mIOU'] == record['validation:mIOU_all_classes']
    assert f'validation:mIOU={record["validation:mIOU"]:.4f}' in out
    assert f'validation:mIOU_all_classes={record["validation:mIOU_all_classes"]:.4f}' in out


def test_exports_and_evaluates_with_no_edits(trained, tmp_path):
    onnx_path, artifact = tmp_path / 'model.onnx', tmp_path / 'export.tar.gz'
    assert export_cli.main([str(trained['tar']), '--output', str(onnx_path), '--input-format', 'uint8', '--argmax',
                        '--height', '32', '--width', '64', '--model-tar', str(artifact)]) == 0
    with tarfile.open(artifact) as tar:
        assert sorted(tar.getnames()) == ['hyperparameters.json', 'manifest.json', 'model.onnx', 'model.pt']
    logged = json.loads((trained['run'] / 'metrics.jsonl').read_text().splitlines()[0])
    from_onnx = evaluate.evaluate_model(onnx_path, trained['data'])
    from_tar = evaluate.evaluate_model(artifact, trained['data'], miou_classes='all')  # runs the ONNX inside
    assert np.array_equal(from_onnx.matrix.mat, from_tar.matrix.mat)
    scores = from_tar.scores()
    assert scores['validation:mIOU'] == scores['validation:mIOU_all_classes']
    assert scores['validation:mIOU_present_classes'] == pytest.approx(logged['validation:mIOU_present_classes'],
                                                                      abs=2e-3)
    assert scores['validation:mIOU_all_classes'] == pytest.approx(logged['validation:mIOU_all_classes'], abs=2e-3)
    # seg_train's artifact holds no ONNX model: seg_eval runs its checkpoint, as training validated.
    from_checkpoint = evaluate.evaluate_model(trained['tar'], trained['data']).scores()
    for name in ('validation:mIOU', 'validation:pixel_accuracy', 'validation:mIOU_all_classes'):
        assert from_checkpoint[name] == pytest.approx(logged[name], abs=1e-6)


def test_incremental_training_from_the_model_tar(trained, tmp_path, monkeypatch, capsys):
    # The weights the first training step starts from are the ones the model.tar.gz holds.
    starting = []

    def first_step_recorded(model, *args, **kwargs):
        if not starting:
            starting.append({name: value.detach().clone() for name, value in model.state_dict().items()})
        return real_step(model, *args, **kwargs)
    real_step = train.training_step
    monkeypatch.setattr(train, 'training_step', first_step_recorded)
    argv = ['--config', str(trained['config']), '--data', str(trained['data']), '--output', str(tmp_path / 'inc'),
            '--init_checkpoint', str(trained['tar']), *QUICK, '--max_iterations', '1']
    assert train.main(argv) == 0
    assert (tmp_path / 'inc' / 'model_best.pt').is_file()
    with tarfile.open(trained['tar']) as tar:
        saved = torch.load(io.BytesIO(tar.extractfile('model_best.pt').read()), weights_only=False)['model']
    assert saved.keys() == starting[0].keys()
    assert all(torch.equal(starting[0][name], value) for name, value in saved.items())
    mismatched = [*argv, '--algorithm', 'deeplab']
    assert train.main(mismatched) == 2
    assert "was trained with a different network: algorithm: 'fcn' there, 'deeplab' here" in capsys.readouterr().err


def test_resume_from_a_sagemaker_tarball_of_the_run_folder(trained, tmp_path, capsys):
    # SageMaker tars the job's model folder; here that folder is seg_train's run folder.
    tarball = tmp_path / 'output.tar.gz'
    with tarfile.open(tarball, 'w:gz') as tar:
        tar.add(trained['run'], arcname='.')
    out = tmp_path / 'resumed'
    argv = ['--config', str(trained['config']), '--data', str(trained['data']), '--output', str(out),
            '--resume', str(tarball), '--epochs', '2', *QUICK, '--max_iterations', '1']
    assert train.main(argv) == 0
    assert [json.loads(line)['epoch'] for line in (out / 'metrics.jsonl').read_text().splitlines()] == [1]
    # The best-model artifact has no optimizer state to resume.
    argv[argv.index(str(tarball))] = str(trained['tar'])
    assert train.main(argv) == 2
    assert 'holds no optimizer state (a best-model checkpoint)' in capsys.readouterr().err
