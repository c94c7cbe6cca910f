"""The demo model builder, on a tiny recipe: data, training, verified export, card, engine mIoU."""

import json

import onnx
import torch

from seg_node.training import demo_model
from seg_node.training.demo_model import DemoRecipe, build_demo_model, imagenet_weights_available, recipe_for

torch.set_num_threads(2)


def test_cpu_recipe_fits_the_budget_shape():
    recipe = recipe_for('cpu')
    assert recipe.hyperparameters['eval_size'] == [recipe.height, recipe.width]
    assert recipe.hyperparameters['algorithm'] in ('fcn', 'psp', 'deeplab')
    assert recipe.hyperparameters['backbone'] == 'resnet-50'


def test_build_tiny_demo_model(tmp_path):
    base = recipe_for('cpu').hyperparameters
    recipe = DemoRecipe(width=96, height=48, train_frames=8, val_frames=2, held_out_frames=3,
                        hyperparameters=base | {'epochs': 1, 'max_iterations': 2, 'mini_batch_size': 4,
                                                'base_size': 96, 'crop_size': 96, 'crop_height': 48,
                                                'eval_size': [48, 96]})
    out = tmp_path / 'models' / 'demo.onnx'
    card = build_demo_model(out, work=tmp_path / 'work', device='cpu', recipe=recipe)
    saved = json.loads(out.with_suffix('.json').read_text())
    assert saved['held_out']['frames'] == 3
    assert 0 <= saved['held_out']['validation:mIOU'] <= 1
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
