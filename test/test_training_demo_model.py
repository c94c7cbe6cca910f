"""The demo model builder, on a tiny recipe: data, training, verified export, card, engine mIoU."""

import dataclasses
import json
import time
from types import SimpleNamespace

import onnx
import pytest
import torch

from seg_node.training import demo_model
from seg_node.training.demo_model import DemoRecipe, build_demo_model, imagenet_weights_available, recipe_for
from seg_node.training.evaluate import evaluate_model
from seg_node.training.hyperparameters import Hyperparameters
from seg_node.training.train import seconds_per_step

torch.set_num_threads(2)


def test_cpu_recipe_fits_the_budget_shape():
    recipe = recipe_for('cpu')
    assert recipe.hyperparameters['eval_size'] == [recipe.height, recipe.width]
    assert recipe.hyperparameters['algorithm'] in ('fcn', 'psp', 'deeplab')
    assert recipe.hyperparameters['backbone'] == 'resnet-50'


def tiny_recipe(**changes) -> DemoRecipe:
    base = recipe_for('cpu').hyperparameters
    return DemoRecipe(width=96, height=48, train_frames=8, val_frames=2, held_out_frames=3,
                      hyperparameters=base | {'epochs': 1, 'max_iterations': 2, 'mini_batch_size': 4,
                                              'base_size': 96, 'crop_size': 96, 'crop_height': 48,
                                              'eval_size': [48, 96]} | changes)


def test_build_tiny_demo_model(tmp_path):
    out = tmp_path / 'models' / 'demo.onnx'
    card = build_demo_model(out, work=tmp_path / 'work', device='cpu', recipe=tiny_recipe())
    saved = json.loads(out.with_suffix('.json').read_text())
    assert saved['held_out']['frames'] == 3
    # The card reports what the exported model does on the held-out frames, measured anew here.
    again = evaluate_model(out, tmp_path / 'work' / 'held_out').matrix.compute()
    assert saved['held_out']['validation:mIOU'] == pytest.approx(again.mean_iou, abs=1e-9)
    assert saved['held_out']['validation:pixel_accuracy'] == pytest.approx(again.pixel_accuracy, abs=1e-9)
    assert saved['export']['argmax_agreement'] >= 0.999
    assert saved == json.loads(json.dumps(card))
    assert 'trained on **synthetic scenes only**' in out.with_suffix('.md').read_text()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta['seg_node.input_size']) == [48, 96]


def test_imagenet_weights_are_used_when_cached_and_fetched_only_when_allowed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    fetched = []

    def offline(self, progress=True):
        fetched.append(self.url)
        raise OSError('Name or service not known')

    monkeypatch.setattr(demo_model.ResNet50_Weights.IMAGENET1K_V1.__class__, 'get_state_dict', offline)
    assert not imagenet_weights_available(download=False)
    assert fetched == []
    assert not imagenet_weights_available(download=True)
    assert fetched == [demo_model.ResNet50_Weights.IMAGENET1K_V1.url]
    assert 'training the backbone from scratch' in capsys.readouterr().err
    cached = tmp_path / 'torch' / 'hub' / 'checkpoints' / fetched[0].rsplit('/', 1)[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b'weights')
    assert imagenet_weights_available(download=False)


def test_fine_tuning_recipe_slows_the_backbone_only():
    scratch, tuned = recipe_for('cpu').hyperparameters, recipe_for('cpu', pretrained=True).hyperparameters
    assert tuned['learning_rate'] < scratch['learning_rate']
    assert tuned['learning_rate'] * tuned['head_lr_mult'] > scratch['learning_rate']


def interrupt_training_after_first_epoch(monkeypatch) -> object:
    """Make the builder's training stop with Ctrl-C after its first epoch; return the real ``train``."""
    real_train = demo_model.train

    def interrupted_after_first_epoch(config):
        def stop(record):
            raise KeyboardInterrupt
        return real_train(config, on_epoch=stop)
    monkeypatch.setattr(demo_model, 'train', interrupted_after_first_epoch)
    return real_train


def test_an_interrupted_build_resumes_and_a_changed_recipe_starts_over(tmp_path, monkeypatch, capsys):
    recipe = tiny_recipe(epochs=2, max_iterations=1)
    real_train = interrupt_training_after_first_epoch(monkeypatch)
    out, work = tmp_path / 'demo.onnx', tmp_path / 'work'
    with pytest.raises(KeyboardInterrupt):
        build_demo_model(out, work=work, device='cpu', recipe=recipe)
    assert (work / 'run' / 'checkpoint.pt').is_file() and not out.exists()
    first = torch.load(work / 'run' / 'checkpoint.pt', weights_only=True)
    assert first['epoch'] == 0
    monkeypatch.setattr(demo_model, 'train', real_train)
    capsys.readouterr()
    build_demo_model(out, work=work, device='cpu', recipe=recipe)
    log = capsys.readouterr().out
    assert 'reusing the training data' in log and 'reusing the held-out frames' in log
    assert f'resuming {work / "run" / "checkpoint.pt"} after its epoch 0' in log
    epochs = [json.loads(line)['epoch'] for line in (work / 'run' / 'metrics.jsonl').read_text().splitlines()]
    assert epochs == [0, 1], 'epoch 0 was not trained again'
    assert 'epoch 1/1: elapsed' in log and 'ETA 0.0 min' in log
    # Another recipe over the same work folder: no resume, and it says so.
    out.unlink()
    build_demo_model(out, work=work, device='cpu', recipe=tiny_recipe(learning_rate=0.01))
    log = capsys.readouterr().out
    assert 'training starts over' in log and 'resuming' not in log


def test_ctrl_c_says_what_was_kept(tmp_path, monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(demo_model, 'build_demo_model', interrupt)
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'checkpoint.pt').write_bytes(b'')
    assert demo_model.main(['--output', str(tmp_path / 'd.onnx'), '--work', str(tmp_path), '--offline']) == 130
    assert capsys.readouterr().err.strip() == (f'[demo_model] interrupted; kept {tmp_path / "run" / "checkpoint.pt"} '
                                               '(the last completed epoch): the next run resumes from there')


def test_epochs_that_fit_the_time_left():
    assert demo_model.epochs_that_fit(600, 35, most=18) == 17
    assert demo_model.epochs_that_fit(600, 95, most=18) == 6
    assert demo_model.epochs_that_fit(600, 10, most=18) == 18, 'never more than the recipe'
    assert demo_model.epochs_that_fit(60, 95, most=18) == demo_model.MIN_EPOCHS, 'never fewer than the least'
    assert demo_model.epochs_that_fit(-30, 95, most=18) == demo_model.MIN_EPOCHS


def freeze_the_plans_clock(monkeypatch) -> float:
    """Stop the builder's wall clock (its durations keep the real one): the plan then sees exactly the
    seconds a test gives it, however long the test's own setup took on a loaded machine."""
    now = time.time()
    monkeypatch.setattr(demo_model, 'time', SimpleNamespace(time=lambda: now, perf_counter=time.perf_counter))
    return now


def test_a_budgeted_build_trains_the_epochs_that_fit_and_a_resumed_one_keeps_them(tmp_path, monkeypatch, capsys):
    recipe = dataclasses.replace(tiny_recipe(epochs=12, max_iterations=1), fit_to_budget=True)
    step_seconds = []

    def timed_step(hp, device, *, height, width):
        step_seconds.append((hp.mini_batch_size, height, width))
        return 10.0  # 2 steps per epoch (8 frames, batches of 4), max_iterations 1: 11 s an epoch
    monkeypatch.setattr(demo_model, 'seconds_per_step', timed_step)
    real_train = interrupt_training_after_first_epoch(monkeypatch)
    out, work = tmp_path / 'demo.onnx', tmp_path / 'work'
    # 54 s for training: 4 epochs of 11 s (1.10x the timed step); 5 if an epoch were planned at its
    # timed step alone (5 x 10 s) or at up to 1.08x it.
    deadline = freeze_the_plans_clock(monkeypatch) + demo_model.AFTER_TRAINING_S + 54.0
    with pytest.raises(KeyboardInterrupt):
        build_demo_model(out, work=work, device='cpu', recipe=recipe, deadline=deadline)
    assert step_seconds == [(4, 48, 96)], 'the step was timed once, at the recipe batch and size'
    log = capsys.readouterr().out
    assert 'a training step takes 10.00 s on this CPU (4 images): 4 of at most 12 epochs fit the 0.9 min' in log
    assert 'for 4 epochs on cpu' in log
    # Resumed after the deadline has passed: the plan made when the build began stands.
    monkeypatch.setattr(demo_model, 'train', real_train)
    card = build_demo_model(out, work=work, device='cpu', recipe=recipe, deadline=deadline - 3600)
    log = capsys.readouterr().out
    assert 'resuming with the plan made when this build began: 4 epochs' in log
    assert step_seconds == [(4, 48, 96)], 'no second timing on resume'
    assert [json.loads(line)['epoch'] for line in (work / 'run' / 'metrics.jsonl').read_text().splitlines()] \
        == [0, 1, 2, 3]
    assert card['plan'] == {'epochs': 4, 'most_epochs': 12, 'seconds_per_step': 10.0, 'steps_per_epoch': 1,
                            'seconds_for_training': 54.0}
    assert card['recipe']['hyperparameters']['epochs'] == 4
    assert '- epochs: 4 of at most 12, as many as fit the time budget' in out.with_suffix('.md').read_text()


@pytest.mark.parametrize(('seconds_left', 'epochs'), [
    # 8 epochs of 11 s fit in 88.01 s and 9 do not fit in 98.99 s: only a factor within 0.02 % of 1.10 gives both.
    (88.01, 8), (98.99, 8),
    (99.01, 9),
])
def test_an_epoch_is_planned_at_its_timed_steps_plus_ten_percent(tmp_path, monkeypatch, seconds_left, epochs):
    recipe = dataclasses.replace(tiny_recipe(epochs=12, max_iterations=1), fit_to_budget=True)
    hp = Hyperparameters(**recipe.hyperparameters, use_pretrained_model=False)
    monkeypatch.setattr(demo_model, 'seconds_per_step', lambda hp, device, *, height, width: 10.0)
    deadline = freeze_the_plans_clock(monkeypatch) + demo_model.AFTER_TRAINING_S + seconds_left
    plan = demo_model._plan(recipe, hp, 'cpu', tmp_path, resuming=False, deadline=deadline)
    assert (plan.epochs, plan.steps_per_epoch, plan.seconds_for_training) == (epochs, 1, round(seconds_left, 1))


def test_too_little_time_trains_the_least_epochs_and_says_the_budget_is_exceeded(tmp_path, monkeypatch, capsys):
    recipe = dataclasses.replace(tiny_recipe(epochs=5, max_iterations=1), fit_to_budget=True)
    monkeypatch.setattr(demo_model, 'seconds_per_step', lambda hp, device, *, height, width: 30.0)
    card = build_demo_model(tmp_path / 'demo.onnx', work=tmp_path / 'work', device='cpu', recipe=recipe,
                            deadline=time.time())
    assert card['plan']['epochs'] == demo_model.MIN_EPOCHS
    assert (f'too little: training the least {demo_model.MIN_EPOCHS} epochs, so the build will take longer '
            'than its budget') in capsys.readouterr().out


def test_without_a_deadline_the_recipe_epochs_stand(tmp_path, monkeypatch):
    recipe = dataclasses.replace(tiny_recipe(epochs=2, max_iterations=1), fit_to_budget=True)
    monkeypatch.setattr(demo_model, 'seconds_per_step', lambda *a, **k: pytest.fail('no timing without a budget'))
    card = build_demo_model(tmp_path / 'demo.onnx', work=tmp_path / 'work', device='cpu', recipe=recipe)
    assert card['plan'] == {'epochs': 2, 'most_epochs': 2, 'seconds_per_step': None, 'steps_per_epoch': 0,
                            'seconds_for_training': None}


@pytest.mark.parametrize(('argv', 'reason'), [
    (['--budget-minutes', '-1'], '--budget-minutes must be a number of minutes >= 0 (0: no budget), not -1.0'),
    (['--budget-minutes', 'nan'], '--budget-minutes must be a number of minutes >= 0 (0: no budget), not nan'),
    (['--budget-minutes', 'soon'], "argument --budget-minutes: invalid float value: 'soon'"),
    (['--started-at', str(4e9)], '--started-at 4000000000.0 is in the future'),
])
def test_bad_budget_arguments_are_one_sentence(tmp_path, capsys, argv, reason):
    with pytest.raises(SystemExit) as stopped:
        demo_model.main(['--output', str(tmp_path / 'd.onnx'), '--work', str(tmp_path), '--offline', *argv])
    assert stopped.value.code == 2
    assert reason in capsys.readouterr().err
    assert not (tmp_path / 'd.onnx').exists()


def test_the_step_timing_runs_the_recipe_network():
    hp = Hyperparameters(**tiny_recipe(mini_batch_size=2, threads=1).hyperparameters, use_pretrained_model=False)
    seconds = seconds_per_step(hp, torch.device('cpu'), height=48, width=96, steps=1)
    assert 0.0 < seconds < 60.0
