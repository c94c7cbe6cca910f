"""seg_train: loss goes down, a short fine-tune beats chance, checkpoints, resume, early stopping."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from seg_node.synthetic import write_camvid_dataset, write_cityscapes_dataset, write_sagemaker_dataset
from seg_node.training import train as train_module
from seg_node.training.datasets import get_dataset
from seg_node.training.evaluate import evaluate_model
from seg_node.training.hyperparameters import Hyperparameters, RunConfig
from seg_node.training.models import build_network
from seg_node.training.train import (
    cpu_has_native_bf16,
    criterion,
    hard_pixel_loss,
    load_checkpoint,
    main,
    make_optimizer,
    make_scheduler,
    median_frequency_weights,
    mixed_precision,
    train,
)

torch.set_num_threads(2)


def _two_class_logits(p_true):
    # Class 0 is the true class; logits (log p, log(1 - p)) give it probability p exactly.
    p = torch.tensor(p_true, dtype=torch.float64)
    return torch.stack([p.log(), (1 - p).log()])[None, :, None, :]  # [1, 2, 1, N]


def test_hard_pixel_loss_averages_only_pixels_below_the_threshold():
    logits = _two_class_logits([0.9, 0.5, 0.2, 0.99, 0.3])
    target = torch.tensor([[[0, 0, 0, 0, 255]]])  # the last pixel is ignored however hard it is
    expected = -(np.log(0.5) + np.log(0.2)) / 2
    assert hard_pixel_loss(logits, target, threshold=0.7).item() == pytest.approx(expected, rel=1e-9)


def test_hard_pixel_loss_keeps_the_hardest_sixteenth_when_all_are_easy():
    p = [0.99] * 30 + [0.95, 0.9]
    loss = hard_pixel_loss(_two_class_logits(p), torch.zeros(1, 1, 32, dtype=torch.long), threshold=0.7)
    assert loss.item() == pytest.approx(-(np.log(0.95) + np.log(0.9)) / 2, rel=1e-9)
    empty = hard_pixel_loss(_two_class_logits([0.5]), torch.full((1, 1, 1), 255), threshold=0.7)
    assert empty.item() == 0.0


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('sm')
    return write_sagemaker_dataset(root, n_train=24, n_val=6, width=96, height=48, seed=3)


def _hp(**kw):
    base = {'num_classes': 19, 'use_pretrained_model': False, 'output_stride': 16, 'workers': 0,
            'mini_batch_size': 8, 'validation_mini_batch_size': 6, 'base_size': 96, 'crop_size': 48,
            'min_scale': 0.75, 'max_scale': 1.25, 'optimizer': 'adamw', 'learning_rate': 0.002,
            'head_lr_mult': 1.0, 'epochs': 2, 'max_iterations': 2}
    hp = Hyperparameters(**(base | kw))
    hp.validate()
    return hp


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    model = build_network(num_classes=4, output_stride=16)
    x = torch.randn(4, 3, 32, 32)
    y = (torch.arange(32)[None, None, :] // 8).expand(4, 32, 32).clone()  # four vertical bands
    x[:, 0] += y.float()  # the colour tells the band
    optimizer = make_optimizer(_hp(), model)
    losses = []
    for _ in range(12):
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_short_finetune_beats_chance(data, tmp_path):
    best = train(RunConfig(data=data, output=tmp_path, hp=_hp(epochs=5, max_iterations=0, mini_batch_size=4)))
    # Chance level: every pixel gets the most frequent validation class. Its IoU is its pixel
    # share; every other class seen scores 0.
    labels = np.stack([label for _, label in get_dataset(data, split='validation', num_classes=19)])
    counts = np.bincount(labels[labels != 255], minlength=19)
    majority_miou = counts.max() / counts.sum() / (counts > 0).sum()
    assert best['validation:mIOU'] > max(0.1, 3 * majority_miou)
    assert best['validation:pixel_accuracy'] > counts.max() / counts.sum()


def test_checkpoints_metrics_log_and_resume(data, tmp_path, monkeypatch):
    train(RunConfig(data=data, output=tmp_path, hp=_hp(epochs=2)))
    lines = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert [line['epoch'] for line in lines] == [0, 1]
    assert set(lines[0]) >= {'train:loss', 'validation:mIOU', 'validation:pixel_accuracy', 'validation:iou'}
    assert 0 <= lines[1]['validation:mIOU'] <= 1
    saved = load_checkpoint(tmp_path / 'checkpoint.pt')
    assert saved['epoch'] == 1
    assert saved['classes'][13] == 'car'
    assert saved['hyperparameters']['algorithm'] == 'fcn'
    assert set(saved) >= {'model', 'optimizer', 'lr_scheduler', 'best', 'metrics', 'palette', 'mean', 'std'}
    seen = {}
    real = train_module._train_and_validate

    def first_resumed_epoch(training, loaders, hp, classes, epoch):
        # What the resumed run starts its first epoch with, before it changes anything.
        seen.setdefault('state', (epoch, {k: v.clone() for k, v in training.model.state_dict().items()},
                                  copy.deepcopy(training.optimizer.state_dict()), training.scheduler.state_dict(),
                                  training.optimizer.param_groups[0]['lr']))
        return real(training, loaders, hp, classes, epoch)
    monkeypatch.setattr(train_module, '_train_and_validate', first_resumed_epoch)
    train(RunConfig(data=data, output=tmp_path, resume=tmp_path / 'checkpoint.pt', hp=_hp(epochs=3)))
    lines = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert [line['epoch'] for line in lines] == [0, 1, 2]
    epoch, weights, optimizer, scheduler, lr = seen['state']
    assert epoch == 2
    assert weights.keys() == saved['model'].keys()
    for name, tensor in saved['model'].items():  # the weights of epoch 1, not a fresh initialisation
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=0, msg=name)
    for index, state in saved['optimizer']['state'].items():  # the optimizer's moments too
        for key, value in state.items():
            torch.testing.assert_close(optimizer['state'][index][key], value, rtol=0, atol=0)
    # The learning-rate schedule continues from the saved step, not from its start.
    assert scheduler['last_epoch'] == saved['lr_scheduler']['last_epoch'] > 0
    assert lr == pytest.approx(saved['lr_scheduler']['_last_lr'][0])
    assert lr < _hp().learning_rate


def test_incremental_training_needs_the_same_network(data, tmp_path):
    train(RunConfig(data=data, output=tmp_path / 'a', hp=_hp(epochs=1)))
    with pytest.raises(ValueError, match="different network: algorithm: 'fcn' there, 'deeplab' here"):
        train(RunConfig(data=data, output=tmp_path / 'b', init_checkpoint=tmp_path / 'a' / 'model_best.pt',
                        hp=_hp(epochs=1, algorithm='deeplab')))


def test_logit_adjustment_offsets_scores_by_the_class_weights(data, tmp_path):
    train(RunConfig(data=data, output=tmp_path, hp=_hp(epochs=1, class_weighting='median_frequency',
                                                          logit_adjustment=0.5)))
    saved = load_checkpoint(tmp_path / 'model_best.pt')
    frequencies = get_dataset(data, split='train', num_classes=19).class_frequencies(19)
    weights = median_frequency_weights(frequencies)
    present = weights > 0
    expected = np.zeros(19, np.float32)
    expected[present] = -0.5 * np.log(weights[present].astype(np.float32))
    np.testing.assert_allclose(saved['model']['score_offset'].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (expected[present] != 0).any()


def test_early_stopping(data, tmp_path):
    # A tolerance of 1.0 asks every epoch to double the best mIOU, which a ~frozen model cannot.
    hp = _hp(epochs=6, learning_rate=1e-9, early_stopping=True, early_stopping_min_epochs=2,
             early_stopping_patience=1, early_stopping_tolerance=1.0)
    train(RunConfig(data=data, output=tmp_path, hp=hp))
    assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 2


def test_schedulers():
    param = torch.nn.Parameter(torch.zeros(1))
    for name, at_half in (('poly', 0.5 ** 0.9), ('cosine', 0.5), ('step', 0.1)):
        hp = Hyperparameters(lr_scheduler=name, lr_scheduler_step='5', epochs=10)
        optimizer = torch.optim.SGD([param], lr=1.0)
        scheduler = make_scheduler(hp, optimizer, iters_per_epoch=2)
        assert scheduler.lr_lambdas[0](10) == pytest.approx(at_half)
        assert scheduler.lr_lambdas[0](0) == pytest.approx(1.0)


def test_cli_reports_dataset_errors(tmp_path, capsys):
    assert main(['--data', str(tmp_path / 'none'), '--output', str(tmp_path / 'run'), '--num_classes', '3',
                 '--use_pretrained_model', 'false']) == 2
    assert f'dataset folder {tmp_path / "none" / "train"} does not exist' in capsys.readouterr().err


def test_torchrun_distributed_data_parallel_on_cpu(data, tmp_path):
    """Two gloo processes: rank 0 alone writes; validation sums both ranks' confusion matrices."""
    out = tmp_path / 'ddp'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m',
           'seg_node.training.train', '--data', str(data), '--output', str(out), '--num_classes', '19',
           '--use_pretrained_model', 'false', '--epochs', '1', '--max_iterations', '2', '--mini_batch_size', '4',
           '--base_size', '96', '--crop_size', '48', '--output_stride', '16', '--workers', '0', '--threads', '1']
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (out / 'metrics.jsonl').read_text().splitlines()
    assert len(lines) == 1
    logged = json.loads(lines[0])['validation:mIOU']
    whole = evaluate_model(out / 'model_best.pt', data, device='cpu')
    assert whole.frames == 6
    assert whole.matrix.compute().mean_iou == pytest.approx(logged, abs=1e-6)


def test_median_frequency_weights():
    weights = median_frequency_weights(np.array([0.5, 0.1, 0.0, 0.2, 0.001]))
    # median of the present frequencies is 0.15; capped at 10; absent classes get 0
    np.testing.assert_allclose(weights, [0.3, 1.5, 0.0, 0.75, 10.0])


@pytest.mark.parametrize(('writer', 'fmt', 'classes'), [
    (write_cityscapes_dataset, 'cityscapes', 19), (write_camvid_dataset, 'camvid', 11)])
def test_trains_on_cityscapes_and_camvid_layouts(tmp_path, writer, fmt, classes):
    root = writer(tmp_path / fmt, n_train=4, n_val=2, width=96, height=48)
    hp = _hp(epochs=1, max_iterations=1, mini_batch_size=4)
    hp.num_classes = None  # taken from the layout
    train(RunConfig(data=root, output=tmp_path / 'run', format=fmt, hp=hp))
    saved = load_checkpoint(tmp_path / 'run' / 'model_best.pt')
    assert len(saved['classes']) == saved['hyperparameters']['num_classes'] == classes
    assert saved['format'] == fmt


FLAGS = 'processor\t: 0\nflags\t\t: fpu sse sse2 avx2 avx512f {}\n'


def test_bf16_autocast_only_where_the_cpu_has_it_natively(capsys, monkeypatch):
    monkeypatch.setattr(train_module, '_SAID_ONCE', set())
    cpu = torch.device('cpu')
    assert cpu_has_native_bf16(FLAGS.format('avx512_bf16')) and cpu_has_native_bf16(FLAGS.format('amx_bf16'))
    assert not cpu_has_native_bf16(FLAGS.format('avx512vl'))  # AMD Zen 3 and older Intel: emulated
    assert mixed_precision('true', cpu, native_bf16=True)
    assert not mixed_precision('true', cpu, native_bf16=False)
    assert 'training in float32' in capsys.readouterr().out
    assert not mixed_precision('true', cpu, native_bf16=False)
    assert 'training in float32' not in capsys.readouterr().out, 'the note is said once per process'
    assert not mixed_precision('auto', cpu, native_bf16=True)  # the CPU default stays float32
    assert not mixed_precision('false', torch.device('cuda'))
    assert mixed_precision('auto', torch.device('cuda')) and mixed_precision('true', torch.device('cuda'))
