"""A SageMaker job's hyperparameters.json runs unchanged, each hyperparameter with AWS's semantics.

SageMaker writes every value of hyperparameters.json as a string and adds keys of its own to
tuning jobs (``_tuning_objective_metric``) and framework estimators (``sagemaker_*``). AWS's
documentation applies ``momentum`` and ``weight_decay`` to sgd only and ``gamma1``/``gamma2`` to
rmsprop; MXNet's rmsprop uses ``gamma2`` only when centered; ``mini_batch_size`` is the job's.
"""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from seg_node.training.hyperparameters import (
    SAGEMAKER_NAMES,
    Hyperparameters,
    parse_args,
    run_notes,
    sagemaker_hyperparameters,
)
from seg_node.training.train import JobBatchSampler, make_optimizer, schedule_steps

# What SageMaker writes to /opt/ml/input/config/hyperparameters.json for a tuning job's training job.
TUNING_JOB = {
    '_tuning_objective_metric': 'validation:mIOU', 'algorithm': 'fcn', 'backbone': 'resnet-50',
    'use_pretrained_model': 'False', 'num_classes': '21', 'num_training_samples': '1464', 'epochs': '10',
    'learning_rate': '0.0031622776601683794', 'optimizer': 'rmsprop', 'lr_scheduler': 'poly',
    'mini_batch_size': '16', 'validation_mini_batch_size': '16', 'early_stopping': 'True',
    'early_stopping_patience': '2', 'early_stopping_min_epochs': '10', 'crop_size': '240', 'base_size': '520',
    'momentum': '0.95', 'weight_decay': '0.0005', 'gamma1': '0.9', 'gamma2': '0.9', 'syncbn': 'False',
    'lr_scheduler_factor': '0.1', 'early_stopping_tolerance': '0.0',
}


def write_json(tmp_path, values):
    path = tmp_path / 'hyperparameters.json'
    path.write_text(json.dumps(values))
    return path


def test_tuning_jobs_hyperparameters_json_runs_unchanged(tmp_path):
    run = parse_args(['--config', str(write_json(tmp_path, TUNING_JOB)), '--data', 'd', '--output', 'o'])
    hp = run.hp
    assert (hp.num_classes, hp.num_training_samples, hp.epochs, hp.mini_batch_size) == (21, 1464, 10, 16)
    assert hp.use_pretrained_model is False
    assert hp.early_stopping is True
    assert hp.learning_rate == pytest.approx(0.0031622776601683794)
    assert (hp.optimizer, hp.momentum, hp.weight_decay) == ('rmsprop', 0.95, 0.0005)
    assert (hp.early_stopping_patience, hp.early_stopping_min_epochs) == (2, 10)  # the defaults are 4 and 5
    # Every other key holds its value too (these happen to equal the defaults).
    assert (hp.algorithm, hp.backbone, hp.lr_scheduler, hp.lr_scheduler_factor, hp.validation_mini_batch_size,
            hp.crop_size, hp.base_size, hp.gamma1, hp.gamma2, hp.syncbn, hp.early_stopping_tolerance) \
        == ('fcn', 'resnet-50', 'poly', 0.1, 16, 240, 520, 0.9, 0.9, False, 0.0)
    assert run.ignored == {'_tuning_objective_metric': 'validation:mIOU'}


def test_injected_keys_are_logged_not_fatal(tmp_path):
    values = TUNING_JOB | {'sagemaker_job_name': '"seg-2024-01-01"', 'sagemaker_container_log_level': '20',
                           '_kvstore': 'device'}
    run = parse_args(['--config', str(write_json(tmp_path, values)), '--data', 'd', '--output', 'o'])
    assert run.ignored['sagemaker_job_name'] == 'seg-2024-01-01'
    notes = run_notes(run.hp, run.ignored)
    assert ("ignoring _tuning_objective_metric='validation:mIOU': SageMaker adds it to hyperparameters.json; "
            'it is not a hyperparameter of the algorithm') in notes
    assert any(n.startswith("ignoring _kvstore='device'") for n in notes)


def test_tuning_objective_seg_train_does_not_log_is_named(tmp_path):
    values = TUNING_JOB | {'_tuning_objective_metric': 'validation:dice'}
    run = parse_args(['--config', str(write_json(tmp_path, values)), '--data', 'd', '--output', 'o'])
    assert any(n.startswith("tuning objective 'validation:dice' is not a metric seg_train logs")
               for n in run_notes(run.hp, run.ignored))


def test_framework_estimators_quoted_values_are_read(tmp_path):
    values = {'mini_batch_size': '"8"', 'algorithm': '"deeplab"', 'use_pretrained_model': '"false"',
              'sagemaker_program': '"train.py"'}
    run = parse_args(['--config', str(write_json(tmp_path, values)), '--data', 'd', '--output', 'o'])
    assert (run.hp.mini_batch_size, run.hp.algorithm, run.hp.use_pretrained_model) == (8, 'deeplab', False)


def test_unknown_key_that_sagemaker_does_not_inject_is_still_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"unknown hyperparameters \['learning_rat'\]"):
        parse_args(['--config', str(write_json(tmp_path, {'learning_rat': '0.1'})), '--data', 'd', '--output', 'o'])


def test_unreadable_json_config_is_named(tmp_path):
    path = tmp_path / 'hyperparameters.json'
    path.write_text('{"epochs": ')
    with pytest.raises(ValueError, match=f'cannot read config {path}: Expecting value'):
        parse_args(['--config', str(path), '--data', 'd', '--output', 'o'])


def test_written_hyperparameters_are_sagemakers_strings():
    written = sagemaker_hyperparameters(vars(Hyperparameters(num_classes=5, early_stopping=True)))
    assert set(written) <= set(SAGEMAKER_NAMES)
    assert written['num_classes'] == '5'
    assert written['early_stopping'] == 'True'
    assert 'num_training_samples' not in written  # None is not written
    assert all(isinstance(v, str) for v in written.values())


@pytest.mark.parametrize(('argv', 'message'), [
    (['--rmsprop_centered', 'maybe'], "hyperparameter rmsprop_centered: cannot read 'maybe' as bool"),
    (['--miou_classes', 'seen'], r"miou_classes must be one of \('present', 'all'\), got 'seen'"),
    (['--momentum', '0'], r'momentum must be in \(0, 1\], got 0\.0'),
    (['--weight_decay', '1'], r'weight_decay must be in \[0, 1\), got 1\.0'),
    (['--gamma1', '1.5'], r'gamma1 must be in \[0, 1\], got 1\.5'),
    (['--gamma2', '-0.1'], r'gamma2 must be in \[0, 1\], got -0\.1'),
    (['--early_stopping_tolerance', '2'], r'early_stopping_tolerance must be in \[0, 1\], got 2\.0'),
    (['--lr_scheduler_factor', '1.5'], r'lr_scheduler_factor must be in \[0, 1\], got 1\.5'),
    (['--epochs', '0'], 'epochs must be a positive integer, got 0'),
    (['--mini_batch_size', '0'], 'mini_batch_size must be a positive integer, got 0'),
    (['--num_training_samples', '0'], 'num_training_samples must be a positive integer, got 0'),
])
def test_bad_values_are_one_sentence_naming_the_hyperparameter(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_args(['--data', 'd', '--output', 'o', *argv])


# --- optimizer-specific hyperparameters act only where SageMaker applies them ---------------------------


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone, self.head = nn.Linear(2, 2), nn.Linear(2, 2)


def _optimizer(**kw):
    return make_optimizer(Hyperparameters(**kw), _Tiny())


def test_weight_decay_and_momentum_act_on_sgd_only():
    sgd = _optimizer(optimizer='sgd', weight_decay=0.01, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults['weight_decay'], sgd.defaults['momentum'], sgd.defaults['nesterov']) == (0.01, 0.8, False)
    nag = _optimizer(optimizer='nag', weight_decay=0.01)
    assert (nag.defaults['weight_decay'], nag.defaults['nesterov']) == (0.01, True)
    for name in ('adam', 'rmsprop', 'adagrad'):
        assert _optimizer(optimizer=name, weight_decay=0.01).defaults['weight_decay'] == 0.0, name
    assert _optimizer(optimizer='adamw', weight_decay=0.01).defaults['weight_decay'] == 0.01  # ours: decoupled


def test_gamma2_is_momentum_of_the_centered_rmsprop_only():
    plain = _optimizer(optimizer='rmsprop', gamma1=0.8, gamma2=0.7)
    assert (plain.defaults['alpha'], plain.defaults['momentum'], plain.defaults['centered']) == (0.8, 0.0, False)
    centered = _optimizer(optimizer='rmsprop', gamma1=0.8, gamma2=0.7, rmsprop_centered=True)
    assert (centered.defaults['momentum'], centered.defaults['centered']) == (0.7, True)
    assert _optimizer(optimizer='adagrad').defaults['eps'] == 1e-7  # MXNet's AdaGrad epsilon


def test_settings_an_optimizer_does_not_use_are_noted():
    notes = run_notes(Hyperparameters(optimizer='adam', weight_decay=0.01, momentum=0.5))
    assert 'weight_decay=0.01 is not used by optimizer adam, only by adamw, nag, sgd' in notes
    assert 'momentum=0.5 is not used by optimizer adam, only by nag, sgd' in notes
    assert run_notes(Hyperparameters()) == []  # SageMaker's defaults: nothing to say
    rmsprop = run_notes(Hyperparameters(optimizer='rmsprop'))
    assert rmsprop == ["gamma2=0.9 is not used: MXNet's rmsprop applies it (as momentum) only when centered; "
                       'set rmsprop_centered true to use it']
    assert run_notes(Hyperparameters(optimizer='rmsprop', rmsprop_centered=True)) == []


# --- mini_batch_size is the job's batch, and num_training_samples lays out the schedule ----------------


def test_job_batch_is_split_over_processes():
    samplers = [JobBatchSampler(10, 4, world=2, rank=r, seed=1) for r in range(2)]
    batches = [list(s) for s in samplers]
    assert [len(b) for b in batches] == [2, 2]  # 10 // 4 whole job batches per epoch
    for step in range(2):
        together = batches[0][step] + batches[1][step]
        assert len(together) == len(set(together)) == 4  # one job batch of 4 images, no overlap
    everything = [i for b in batches for step in b for i in step]
    assert len(set(everything)) == 8
    for sampler in samplers:
        sampler.set_epoch(1)
    assert [list(s) for s in samplers] != batches  # reshuffled each epoch, the same way on every rank


def test_uneven_job_batch_still_trains_the_whole_batch():
    shares = [list(JobBatchSampler(9, 3, world=2, rank=r)) for r in range(2)]
    assert [len(step) for step in shares[0]] == [2, 2, 2]
    assert [len(step) for step in shares[1]] == [1, 1, 1]


def test_job_batch_smaller_than_the_processes_is_refused():
    with pytest.raises(ValueError, match=r'mini_batch_size 2 is the batch of the whole job \(as in SageMaker\) and '
                                         'cannot be split over 4 processes'):
        JobBatchSampler(10, 2, world=4, rank=0)
    with pytest.raises(ValueError, match='the training set has 1 images, fewer than the 2 processes'):
        JobBatchSampler(1, 4, world=2, rank=0)


def test_num_training_samples_sets_the_schedule_length():
    assert schedule_steps(Hyperparameters(), 7) == 7
    assert schedule_steps(Hyperparameters(num_training_samples=1464, mini_batch_size=16), 7) == 91
    assert schedule_steps(Hyperparameters(num_training_samples=1464, mini_batch_size=16, max_iterations=5), 7) == 5


def test_training_readme_parity_table_lists_every_sagemaker_hyperparameter():
    readme = (Path(__file__).resolve().parents[1] / 'seg_node' / 'training' / 'README.md').read_text()
    table = readme.split('## Hyperparameters: parity with SageMaker')[1].split('\n## ')[0]
    rows = {line.split('|')[1].strip().strip('`') for line in table.splitlines() if line.startswith('| `')}
    assert rows == set(SAGEMAKER_NAMES)
