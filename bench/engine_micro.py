"""Engine-only micro-benchmarks of the ResNet50 models: PyTorch eager vs bare ONNX Runtime vs seg_node.

For each head (FCN, DeepLabV3, PSPNet; ResNet50, output stride 8, random weights — speed does not
depend on them) at one input size: PyTorch eager forward, a bare ONNX Runtime session on the
exported float model (normalized input, logits out), and ``SegmentationEngine.segment`` (uint8
frame in, class ids out: resize + normalization + argmax included), batch 1 and batch N per frame.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from seg_node.model.classes import CITYSCAPES
from seg_node.model.contract import IMAGENET_MEAN, IMAGENET_STD
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.loader import ModelRequest, load_model
from seg_node.training.export import ExportOptions, export_checkpoint
from seg_node.training.hyperparameters import Hyperparameters
from seg_node.training.models import build_network
from seg_node.training.train import checkpoint_payload


def _interleaved_medians_ms(runs: dict, repeats: int) -> dict[str, float]:
    """Median ms of each callable, run in turn within every repeat so load drift hits all alike."""
    for run in runs.values():
        run()  # warm-up: first runs allocate and pick kernels
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def export_random_model(algorithm: str, size: tuple[int, int], folder: Path) -> tuple[torch.nn.Module, Path]:
    """A randomly initialised ResNet50 head (eval mode) and its export, verified as seg_export would."""
    hp = Hyperparameters(algorithm=algorithm, num_classes=19, use_pretrained_model=False,
                         crop_size=size[0], eval_size=list(size))
    torch.manual_seed(0)
    model = build_network(algorithm=algorithm, num_classes=19, output_stride=8).eval()
    checkpoint = folder / f'{algorithm}.pt'
    torch.save(checkpoint_payload(model, hp, CITYSCAPES, fmt='sagemaker', epoch=0, metrics={}), checkpoint)
    path = folder / f'{algorithm}.onnx'
    export_checkpoint(checkpoint, path, ExportOptions(height=size[0], width=size[1]))
    return model, path


def measure(algorithm: str, size: tuple[int, int], *, batch: int, repeats: int, folder: Path) -> dict:
    """Median ms per frame of eager PyTorch, bare ORT and the engine for one head."""
    model, path = export_random_model(algorithm, size, folder)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    normalized = ((frame / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
    tensor = torch.from_numpy(normalized)
    options = ort.SessionOptions()
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    bare = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    name = bare.get_inputs()[0].name
    engine = load_model(ModelRequest(str(path), config=EngineConfig(providers=('cpu',)))).engine
    with torch.inference_mode():
        ms = _interleaved_medians_ms({
            'eager': lambda: model(tensor),
            'bare': lambda: bare.run(None, {name: normalized}),
            'engine': lambda: engine.segment([frame]),
            'batched': lambda: engine.segment([frame] * batch),
        }, repeats)
    return {'algorithm': algorithm, 'size': list(size), 'pytorch_eager_ms': ms['eager'],
            'onnxruntime_ms': ms['bare'], 'engine_ms': ms['engine'],
            f'engine_batch{batch}_ms_per_frame': ms['batched'] / batch,
            'engine_vs_bare_ort': ms['engine'] / ms['bare'], 'ort_speedup_vs_eager': ms['eager'] / ms['bare']}


def run_all(size: tuple[int, int] = (256, 512), batch: int = 2, repeats: int = 5) -> list[dict]:
    """Every head at ``size``."""
    with tempfile.TemporaryDirectory() as folder:
        return [measure(algorithm, size, batch=batch, repeats=repeats, folder=Path(folder))
                for algorithm in ('fcn', 'deeplab', 'psp')]


def report(rows: list[dict]) -> str:
    """A markdown table of ``run_all``'s rows."""
    batch_key = next(k for k in rows[0] if k.startswith('engine_batch'))
    batch = batch_key.removeprefix('engine_batch').removesuffix('_ms_per_frame')
    lines = [f'## ResNet50 models, engine only (CPU, input {rows[0]["size"][0]}x{rows[0]["size"][1]}, '
             'median ms per frame)', '',
             'Random weights (speed does not depend on them); exported with `seg_export`. The engine includes '
             'resize, normalization and argmax inside the graph; the bare session gets a normalized tensor and '
             'returns logits.', '',
             f'| head | PyTorch eager | bare ONNX Runtime | seg_node engine | engine / bare ORT | engine, batch '
             f'{batch}, per frame |', '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["algorithm"]} | {r["pytorch_eager_ms"]:.0f} | {r["onnxruntime_ms"]:.0f} | '
                     f'{r["engine_ms"]:.0f} | {r["engine_vs_bare_ort"]:.2f} | {r[batch_key]:.0f} |')
    return '\n'.join(lines)


if __name__ == '__main__':
    print(report(run_all()))


def tiny_model_overhead(repeats: int = 60) -> dict:
    """The bench's tiny float model (960x540 logits, stride 8): bare session vs the engine, masks and +confidence.

    Where the model itself costs milliseconds, everything the engine adds around it shows: the
    uint8 input, normalization, argmax (and the confidence branch when asked) inside the graph.
    """
    from bench.run import tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_model(Path(tmp) / 'tiny.onnx')
        options = ort.SessionOptions()
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        bare = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        name = bare.get_inputs()[0].name
        engine = load_model(ModelRequest(str(path), config=EngineConfig(providers=('cpu',)))).engine
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (1, 540, 960, 3), dtype=np.uint8)
    normalized = ((batch[0] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
    ms = _interleaved_medians_ms({
        'bare': lambda: bare.run(None, {name: normalized}),
        'engine': lambda: engine.run(batch),
        'engine_confidence': lambda: engine.run(batch, want_confidence=True),
    }, repeats)
    return {'bare_ms': ms['bare'], 'engine_ms': ms['engine'], 'engine_confidence_ms': ms['engine_confidence'],
            'engine_vs_bare': ms['engine'] / ms['bare']}


def tiny_report(row: dict) -> str:
    """The tiny-model overhead as a Markdown section."""
    return '\n'.join([
        '## Engine overhead on the tiny model (CPU, 960x540 float logits, median ms per call)', '',
        'A bare ONNX Runtime session gets a normalized float tensor and returns logits; the engine takes '
        'uint8 pixels and returns class ids (normalization and argmax in the graph), with the confidence '
        'branch only in the second column.', '',
        '| bare ONNX Runtime | engine, masks | engine, masks + confidence | engine / bare |',
        '|---|---|---|---|',
        f'| {row["bare_ms"]:.2f} | {row["engine_ms"]:.2f} | {row["engine_confidence_ms"]:.2f} | '
        f'{row["engine_vs_bare"]:.2f}x |'])
