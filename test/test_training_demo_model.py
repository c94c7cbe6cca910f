"""The demo model builder, on a tiny recipe: data, training, verified export, card, engine mIoU."""

import json

import onnx
import pytest
import torch

from seg_node.training import demo_model
from seg_node.training.demo_model import DemoRecipe, build_demo_model, imagenet_weights_available, recipe_for
from seg_node.training.evaluate import evaluate_model

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


def test_an_interrupted_build_resumes_and_a_changed_recipe_starts_over(tmp_path, monkeypatch, capsys):
    recipe = tiny_recipe(epochs=2, max_iterations=1)
    real_train = demo_model.train

    def interrupted_after_first_epoch(config):
        def stop(record):
            raise KeyboardInterrupt
        return real_train(config, on_epoch=stop)
    monkeypatch.setattr(demo_model, 'train', interrupted_after_first_epoch)
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
