"""SageMaker hyperparameter names/defaults, YAML + command line precedence, validation."""

import pytest

from seg_node.training.hyperparameters import Hyperparameters, parse_args


def test_sagemaker_defaults():
    hp = Hyperparameters()
    assert (hp.algorithm, hp.backbone, hp.use_pretrained_model) == ('fcn', 'resnet-50', True)
    assert (hp.epochs, hp.learning_rate, hp.optimizer) == (10, 0.001, 'sgd')
    assert (hp.momentum, hp.weight_decay) == (0.9, 1e-4)
    assert (hp.lr_scheduler, hp.mini_batch_size, hp.base_size, hp.crop_size) == ('poly', 16, 520, 240)
    assert (hp.early_stopping, hp.early_stopping_min_epochs, hp.early_stopping_patience,
            hp.early_stopping_tolerance, hp.syncbn) == (False, 5, 4, 0.0, False)


def test_command_line_with_sagemaker_names_and_string_booleans(tmp_path):
    run = parse_args(['--data', str(tmp_path), '--output', 'out', '--learning_rate', '0.01',
                      '--use_pretrained_model', 'False', '--algorithm', 'psp', '--early_stopping', 'True',
                      '--backbone-weights', 'r50.pth', '--eval_size', '96', '192'])
    assert run.hp.learning_rate == 0.01
    assert run.hp.use_pretrained_model is False
    assert run.hp.early_stopping is True
    assert run.hp.algorithm == 'psp'
    assert run.hp.backbone_weights == 'r50.pth'
    assert run.hp.eval_size == [96, 192]
    assert run.data == tmp_path


def test_yaml_holds_a_whole_run_and_command_line_wins(tmp_path):
    config = tmp_path / 'run.yaml'
    config.write_text('data: /data/sm\noutput: /runs/a\nformat: cityscapes\nepochs: 30\n'
                      'optimizer: rmsprop\nnum_classes: 19\neval_size: 512x1024\n')
    run = parse_args(['--config', str(config), '--epochs', '3'])
    assert run.hp.epochs == 3
    assert run.hp.optimizer == 'rmsprop'
    assert run.hp.eval_size == [512, 1024]
    assert run.format == 'cityscapes'
    assert str(run.output) == '/runs/a'


def test_crop_size_rounded_up_to_multiple_of_8(tmp_path):
    assert parse_args(['--data', 'd', '--output', 'o', '--crop_size', '241']).hp.crop_size == 248
    hp = parse_args(['--data', 'd', '--output', 'o', '--crop_size', '192', '--crop_height', '90']).hp
    assert (hp.crop_height, hp.crop_size) == (96, 192)
    with pytest.raises(ValueError, match='crop_height must be 0'):
        parse_args(['--data', 'd', '--output', 'o', '--crop_height', '8'])


def test_ohem_threshold_is_a_probability_and_excludes_class_weights():
    assert parse_args(['--data', 'd', '--output', 'o', '--ohem_threshold', '0.7']).hp.ohem_threshold == 0.7
    with pytest.raises(ValueError, match=r'ohem_threshold must be in \[0, 1\)'):
        parse_args(['--data', 'd', '--output', 'o', '--ohem_threshold', '1.5'])
    with pytest.raises(ValueError, match='choose one'):
        parse_args(['--data', 'd', '--output', 'o', '--ohem_threshold', '0.7', '--class_weighting',
                    'median_frequency'])


@pytest.mark.parametrize(('argv', 'message'), [
    (['--optimizer', 'lbfgs'], "optimizer must be one of"),
    (['--num_classes', '300'], 'num_classes must be 2..254'),
    (['--lr_scheduler', 'step'], 'lr_scheduler step needs lr_scheduler_step'),
    (['--use_pretrained_model', 'maybe'], "use_pretrained_model: cannot read 'maybe' as bool"),
    (['--epochs', 'ten'], "epochs: cannot read 'ten' as int"),
])
def test_bad_values_are_named(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_args(['--data', 'd', '--output', 'o', *argv])


def test_unknown_yaml_key_and_missing_data(tmp_path):
    config = tmp_path / 'run.yaml'
    config.write_text('data: d\noutput: o\nlearning_rat: 0.1\n')
    with pytest.raises(ValueError, match=r"unknown hyperparameters \['learning_rat'\]"):
        parse_args(['--config', str(config)])
    with pytest.raises(ValueError, match='--data is required'):
        parse_args(['--output', 'o'])


def test_step_epochs():
    hp = Hyperparameters(lr_scheduler='step', lr_scheduler_step='10, 20')
    assert hp.step_epochs() == [10, 20]


def test_logit_adjustment_needs_class_weights():
    args = ['--data', 'd', '--output', 'o', '--class_weighting', 'median_frequency', '--logit_adjustment', '0.5']
    assert parse_args(args).hp.logit_adjustment == 0.5
    with pytest.raises(ValueError, match='needs class_weighting median_frequency'):
        parse_args(['--data', 'd', '--output', 'o', '--logit_adjustment', '0.5'])
    with pytest.raises(ValueError, match=r'logit_adjustment must be in \[0, 2\]'):
        parse_args([*args[:-1], '3'])
