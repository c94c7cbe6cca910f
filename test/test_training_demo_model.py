"""The demo model builder, on a tiny recipe: data, training, verified export, card, engine mIoU."""

import json

import onnx
import torch

from seg_node.training.demo_model import DemoRecipe, build_demo_model, recipe_for

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
                                                'base_size': 96, 'crop_size': 48, 'eval_size': [48, 96]})
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
