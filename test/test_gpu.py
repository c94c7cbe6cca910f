"""GPU paths, run only where a GPU can run them (``pytest -m gpu``; skipped elsewhere).

The engine on the CUDA and TensorRT providers against the CPU provider on known-answer models,
the TensorRT engine cache (keyed, reused, rebuilt for a changed model; in a temporary directory),
and two training steps on the GPU: fp16 autocast with a GradScaler, and with two GPUs NCCL and
SyncBatchNorm through ``torchrun``. ``bench/gpu.sh`` runs these first on a GPU machine.
"""

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from seg_node.model.contract import ModelOverrides
from seg_node.model.known_answer import palette_classifier, palette_scene
from seg_node.runtime.config import PROVIDERS, EngineConfig
from seg_node.runtime.engine import SegmentationEngine, usable_providers

pytestmark = pytest.mark.gpu

# The corners of the RGB cube: any two colours differ by at least 1.0 in squared 0..1 distance,
# so fp16 or TF32 arithmetic cannot flip a pure-colour pixel (Cityscapes' closest pair: 0.006).
PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
           (255, 255, 255)]
SIZE = (64, 96)
FORMS = [  # input format, output, confidence, downsample
    ('float', 'scores', False, 1),
    ('uint8', 'class_ids', True, 1),
    ('float', 'scores', False, 4),
]


def _torch_cuda_devices() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


needs_cuda = pytest.mark.skipif(not usable_providers(['cuda']), reason='the CUDA provider cannot run here')
needs_tensorrt = pytest.mark.skipif(not usable_providers(['tensorrt']),
                                    reason='the TensorRT provider cannot run here')


def _model(form):
    input_format, output, confidence, downsample = form
    return palette_classifier(PALETTE, classes=None, input_format=input_format, output=output,
                              confidence=confidence, downsample=downsample, input_size=SIZE).SerializeToString()


def _frames():
    return [palette_scene(seed, *SIZE, PALETTE, blocks=10, min_block=12) for seed in range(3)]


def _pure_windows(label, downsample):
    """Output pixels whose input window holds one class: there the answer is exact on any hardware."""
    h, w = label.shape
    windows = label.reshape(h // downsample, downsample, w // downsample, downsample)
    return windows.min(axis=(1, 3)) == windows.max(axis=(1, 3))


def _assert_same_masks_as_cpu(engine, form):
    cpu = SegmentationEngine(_model(form), EngineConfig(providers=('cpu',)))
    frames = _frames()
    got = engine.segment([rgb for rgb, _ in frames])  # one batch of 3 (TensorRT profile: 1..4)
    want = cpu.segment([rgb for rgb, _ in frames])
    downsample = form[3]
    for (_, label), g, w in zip(frames, got, want, strict=True):
        pure = _pure_windows(label, downsample)
        np.testing.assert_array_equal(g.class_mask[pure], w.class_mask[pure])
        if downsample == 1:  # every pixel pure: the whole mask is the known answer
            np.testing.assert_array_equal(g.class_mask, label)


@needs_cuda
@pytest.mark.parametrize('form', FORMS, ids=lambda f: '-'.join(map(str, f)))
def test_cuda_provider_gives_the_cpu_masks(form):
    engine = SegmentationEngine(_model(form), EngineConfig(providers=('cuda', 'cpu'), device_id=0))
    assert engine.provider == 'cuda'
    assert engine.session.get_providers()[0] == PROVIDERS['cuda']
    assert engine.session.get_provider_options()[PROVIDERS['cuda']]['device_id'] == '0'
    _assert_same_masks_as_cpu(engine, form)


@needs_tensorrt
@pytest.mark.parametrize('fp16', [True, False], ids=['fp16', 'fp32'])
@pytest.mark.parametrize('form', FORMS, ids=lambda f: '-'.join(map(str, f)))
def test_tensorrt_provider_gives_the_cpu_masks(form, fp16, tmp_path):
    config = EngineConfig(providers=('tensorrt', 'cpu'), trt_fp16=fp16, trt_cache_dir=str(tmp_path / 'trt'))
    engine = SegmentationEngine(_model(form), config)
    assert engine.provider == 'tensorrt'
    assert engine.session.get_providers()[0] == PROVIDERS['tensorrt']
    assert engine.trt_cache is not None and engine.trt_cache.is_relative_to(tmp_path)
    _assert_same_masks_as_cpu(engine, form)


def _engine_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix == '.engine')


@needs_tensorrt
def test_tensorrt_engine_cache_is_reused_and_rebuilt_for_a_changed_model(tmp_path):
    config = EngineConfig(providers=('tensorrt', 'cpu'), trt_cache_dir=str(tmp_path / 'trt'))
    model = _model(FORMS[0])
    start = time.perf_counter()
    cold = SegmentationEngine(model, config)
    cold.segment([np.zeros((*SIZE, 3), np.uint8)])
    cold_s = time.perf_counter() - start
    built = _engine_files(cold.trt_cache)
    assert built, f'no engine written to {cold.trt_cache}'
    stamps = {name: (cold.trt_cache / name).stat().st_mtime_ns for name in built}
    start = time.perf_counter()
    warm = SegmentationEngine(model, config)
    warm.segment([np.zeros((*SIZE, 3), np.uint8)])
    warm_s = time.perf_counter() - start
    # The same model loads the engine it built: same folder, no new or rewritten engine file.
    assert warm.trt_cache == cold.trt_cache
    assert {name: (warm.trt_cache / name).stat().st_mtime_ns for name in _engine_files(warm.trt_cache)} == stamps
    # A runtime mean change is another wrapped graph: another folder, and an engine of its own.
    changed = SegmentationEngine(model, config, ModelOverrides(mean=[0.5, 0.5, 0.5]))
    changed.segment([np.zeros((*SIZE, 3), np.uint8)])
    assert changed.trt_cache != cold.trt_cache
    assert _engine_files(changed.trt_cache)
    print(f'TensorRT known-answer model: cold build {cold_s:.2f} s, warm load {warm_s:.2f} s')


def _training_data(root):
    from seg_node.synthetic import write_sagemaker_dataset

    return write_sagemaker_dataset(root, n_train=8, n_val=2, width=96, height=48, seed=3)


TRAIN_ARGS = ['--num_classes', '19', '--use_pretrained_model', 'false', '--epochs', '1', '--max_iterations', '2',
              '--mini_batch_size', '4', '--validation_mini_batch_size', '2', '--base_size', '96',
              '--crop_size', '48', '--output_stride', '16', '--workers', '0']


@pytest.mark.skipif(_torch_cuda_devices() < 1, reason='PyTorch sees no CUDA device')
def test_two_training_steps_on_the_gpu_in_fp16_with_a_grad_scaler(tmp_path, monkeypatch):
    import torch

    from seg_node.training.hyperparameters import parse_args
    from seg_node.training.train import train

    made, scaled = [], []

    class SpyScaler(torch.amp.GradScaler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(args[0] if args else kwargs.get('device'))

        def scale(self, outputs):
            scaled.append(outputs.detach().float().item())
            return super().scale(outputs)

    monkeypatch.setattr(torch.amp, 'GradScaler', SpyScaler)
    data = _training_data(tmp_path / 'data')
    config = parse_args(['--data', str(data), '--output', str(tmp_path / 'run'), '--device', 'cuda',
                         '--amp', 'true', *TRAIN_ARGS])
    records = []
    train(config, on_epoch=records.append)
    assert made == ['cuda'], 'fp16 on a GPU must use a GradScaler'
    assert len(scaled) == 2 and all(math.isfinite(loss) for loss in scaled)
    assert math.isfinite(records[0]['train:loss'])
    assert (tmp_path / 'run' / 'model_best.pt').exists()


@pytest.mark.skipif(_torch_cuda_devices() < 2,
                    reason='NCCL and SyncBatchNorm run only with WORLD_SIZE > 1: needs 2 GPUs')
def test_torchrun_on_two_gpus_uses_nccl_and_syncbatchnorm(tmp_path):
    data = _training_data(tmp_path / 'data')
    out = tmp_path / 'ddp'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m',
           'seg_node.training.train', '--data', str(data), '--output', str(out), '--syncbn', 'true',
           '--amp', 'true', *TRAIN_ARGS]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ, NCCL_DEBUG='INFO'))
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'NCCL INFO' in done.stdout + done.stderr, 'the process group did not use NCCL'
    lines = (out / 'metrics.jsonl').read_text().splitlines()
    assert len(lines) == 1 and math.isfinite(json.loads(lines[0])['train:loss'])
