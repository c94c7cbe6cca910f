"""CPU time per frame of each ``seg_export --pretrained`` model at its input size (random weights).

Speed does not depend on the weight values, so each model's network is saved with random weights
under its published file name in a temporary TORCH_HOME and exported by ``export_pretrained``
(the one export path, verification included). Timed: ``SegmentationEngine.segment`` on one camera
frame (resize, normalization, inference, argmax), median of ``--repeats`` after a warm-up run.
Writes out/bench/pretrained_models.json. ``--size NAME=HxW`` overrides a model's input size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from seg_node.runtime.config import EngineConfig
from seg_node.runtime.loader import ModelRequest, load_model
from seg_node.training.export import ExportOptions
from seg_node.training.pretrained import PRETRAINED, build_pretrained, export_pretrained


def _cpu() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def time_model(name: str, size: tuple[int, int], repeats: int, work: Path) -> dict:
    """Export ``name`` at ``size`` from random weights, then time the engine on a 640x480 frame."""
    model = PRETRAINED[name]
    network = build_pretrained(model)
    weights = work / 'hub' / 'checkpoints' / model.file_name
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = network.state_dict()
    torch.save({'state_dict': state} if model.family == 'mmseg' else state, weights)
    out = work / f'{name.replace(":", "_")}.onnx'
    if model.family == 'torchvision':  # random weights are not the published file: skip its hash check
        PRETRAINED[name] = dataclasses.replace(model, url=model.url.rsplit("-", 1)[0] + ".pth")
        weights = weights.rename(weights.with_name(PRETRAINED[name].file_name))
    start = time.perf_counter()
    export_pretrained(name, out, ExportOptions(height=size[0], width=size[1]), checkpoint=weights)
    export_s = time.perf_counter() - start
    PRETRAINED[name] = model
    engine = load_model(ModelRequest(str(out), config=EngineConfig(providers=('cpu',)))).engine
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    engine.segment([frame])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.segment([frame])
        times.append(time.perf_counter() - t0)
    return {'model': name, 'input_size': list(size), 'ms_per_frame': 1e3 * float(np.median(times)),
            'repeats': repeats, 'export_and_verify_s': export_s}


def main(argv: Sequence[str] | None = None) -> int:
    """Time every pretrained model (or those named) and print a table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('names', nargs='*', default=list(PRETRAINED), help='models to time (default: all)')
    p.add_argument('--size', action='append', default=[], help='NAME=HxW: another input size for NAME')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--output', default='out/bench/pretrained_models.json')
    args = p.parse_args(argv)
    sizes = {name: PRETRAINED[name].input_size for name in args.names}
    for item in args.size:
        name, _, hw = item.partition('=')
        sizes[name] = tuple(int(v) for v in hw.lower().split('x'))
    results = []
    report = {'cpu': _cpu(), 'threads': torch.get_num_threads(), 'results': results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ['TORCH_HOME'] = tmp
        for name in args.names:
            result = time_model(name, sizes[name], args.repeats, Path(tmp))
            result['load_average'] = os.getloadavg()[0]  # others' work on a shared machine slows these
            print(f'{name:38s} {result["input_size"][0]}x{result["input_size"][1]}: '
                  f'{result["ms_per_frame"]:.0f} ms/frame (load average {result["load_average"]:.1f})', flush=True)
            results.append(result)
            Path(args.output).write_text(json.dumps(report, indent=1))  # after each model: a long run keeps its part
    print(f'{report["cpu"]} -> {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
