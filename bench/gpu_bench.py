"""Issue #16's GPU run: engine per provider, TensorRT cache, fp16 agreement, the node over DDS.

``bench/gpu.sh`` prepares the machine and runs the ``gpu`` tests, then this module, which measures,
each as the median of many runs after warm-up:

1. engine time per frame (``SegmentationEngine.run``: uint8 frames in, class ids out, with I/O
   binding) of the ResNet50 FCN, DeepLabV3 and PSPNet heads (random weights: speed does not
   depend on them) on the CPU, CUDA and TensorRT fp16 providers, batch 1 and 4;
2. the TensorRT build with an empty cache, the load with it warm (same folder, no engine file
   rewritten) and the rebuild for a changed model (another mean: another folder);
3. fp16 vs fp32 argmax agreement: TensorRT fp16 against the CPU provider (exact fp32), >= 99 %;
4. the node end to end through DDS (``bench.run``'s cases): 1, 2 and 4 cameras of 1080p at
   30 Hz with DeepLabV3 on TensorRT, delivered fraction and latency p50/p99.

A provider that cannot run here is recorded as unavailable, with the reason, and skipped; a step
that would overrun the time budget is recorded as skipped. The JSON and the Markdown section are
rewritten after every step, so a run cut short still leaves what it measured. ``--dry-run``
(``GPU_BENCH_DRY_RUN=1``) runs every step at toy sizes: the CPU-only check of this script.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

import seg_node  # first seg_node import: telemetry is off before onnxruntime loads
from seg_node.errors import one_line

REPO = Path(__file__).resolve().parents[1]
ALGORITHMS = ('deeplab', 'fcn', 'psp')  # DeepLabV3 first: the DDS cases need it
PROVIDER_LISTS = {  # each provider as the node would run it (TensorRT with CUDA behind it)
    'cpu': ('cpu',),
    'cuda': ('cuda', 'cpu'),
    'tensorrt': ('tensorrt', 'cuda', 'cpu'),
}
AGREEMENT_BAR = 0.99


@dataclass(frozen=True)
class Settings:
    """Sizes and repeat counts of one run."""

    size: tuple[int, int]  # model input (H, W)
    batches: tuple[int, ...]
    warmup: int
    repeats_gpu: int
    repeats_cpu: int
    agreement_frames: int
    cameras: tuple[int, ...]
    dds_seconds: float
    budget_s: float  # from the start of bench/gpu.sh (GPU_BENCH_T0), installs included
    dry_run: bool = False


FULL = Settings(size=(512, 1024), batches=(1, 4), warmup=5, repeats_gpu=50, repeats_cpu=3, agreement_frames=4,
                cameras=(1, 2, 4), dds_seconds=6.0, budget_s=440.0)
DRY = Settings(size=(64, 128), batches=(1, 4), warmup=1, repeats_gpu=3, repeats_cpu=2, agreement_frames=2,
               cameras=(1, 2, 4), dds_seconds=2.0, budget_s=900.0, dry_run=True)
# Rough costs (s) on the GPU machine, to decide whether a step still fits in the budget.
DDS_CASE_S = 25.0
TRT_BUILD_S = 120.0


class Budget:
    """Seconds left until the run must have written its results."""

    def __init__(self, seconds: float) -> None:
        self.start = float(os.environ.get('GPU_BENCH_T0') or time.time())
        self.seconds = seconds

    def left(self) -> float:
        """Seconds left."""
        return self.seconds - (time.time() - self.start)

    def allows(self, cost: float, reserve: float = 0.0) -> bool:
        """True when ``cost`` seconds still fit, keeping ``reserve`` for later steps."""
        return self.left() >= cost + reserve


class Results:
    """The run's JSON, rewritten (with its Markdown) after every step."""

    def __init__(self, out: Path, settings: Settings) -> None:
        self.out = out
        self.data: dict = {'settings': asdict(settings), 'environment': {}, 'exports': {}, 'engine': {},
                           'tensorrt_cache': {}, 'agreement': {}, 'dds': {}, 'failures': [], 'log': []}

    def note(self, text: str) -> None:
        """Print a progress line and keep it in the JSON."""
        print(f'[gpu_bench] {text}', flush=True)
        self.data['log'].append(text)

    def save(self) -> None:
        """Write gpu_bench.json and gpu_bench.md."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / 'gpu_bench.json').write_text(json.dumps(self.data, indent=1, default=str))
        (self.out / 'gpu_bench.md').write_text(markdown(self.data) + '\n')


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a missing or odd distribution is just 'absent'
        return 'absent'


def environment() -> dict:
    """What this machine has: GPU, drivers, packages, providers."""
    import onnxruntime as ort

    from seg_node.runtime.engine import _tensorrt_version, usable_providers

    env = {'python': platform.python_version(), 'cores': os.cpu_count(), 'seg_node': seg_node.__version__,
           'onnxruntime': ort.__version__,
           'onnxruntime_package': 'onnxruntime-gpu' if _version('onnxruntime-gpu') != 'absent' else 'onnxruntime',
           'ort_providers_built': ort.get_available_providers(),
           'usable_providers': usable_providers(['tensorrt', 'cuda', 'cpu']),
           'tensorrt_library_version': _tensorrt_version(),
           'tensorrt_libs_package': _version('tensorrt-cu13-libs'),
           'rclpy': 'importable' if importlib.util.find_spec('rclpy') else 'absent',
           'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}
    if shutil.which('nvidia-smi'):
        query = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total',
                                '--format=csv,noheader'], capture_output=True, text=True, timeout=30, check=False)
        env['gpu'] = query.stdout.strip() or query.stderr.strip()
    else:
        env['gpu'] = 'no nvidia-smi'
    try:
        import torch

        env['torch'] = torch.__version__
        env['torch_cuda'] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device'
    except Exception as err:  # noqa: BLE001 - torch is only needed to export the models
        env['torch'] = f'unavailable ({one_line(err)})'
    return env


def export_models(settings: Settings, folder: Path, results: Results, algorithms: tuple[str, ...]) -> dict[str, Path]:
    """Export each head at the run's size with random weights, verified as ``seg_export`` does."""
    try:
        from bench.engine_micro import export_random_model
    except Exception as err:  # noqa: BLE001 - no torch: the engine steps are reported unavailable
        for algorithm in algorithms:
            results.data['exports'][algorithm] = {'status': 'unavailable', 'reason': f'no export ({one_line(err)})'}
        return {}
    paths = {}
    for algorithm in algorithms:
        start = time.perf_counter()
        try:
            _, path = export_random_model(algorithm, settings.size, folder)
        except Exception as err:  # noqa: BLE001 - one head failing must not stop the others
            results.data['exports'][algorithm] = {'status': 'failed', 'reason': one_line(err)}
            continue
        paths[algorithm] = path
        results.data['exports'][algorithm] = {
            'status': 'ok', 'seconds': time.perf_counter() - start, 'bytes': path.stat().st_size,
            'sha256': hashlib.sha256(path.read_bytes()).hexdigest()}
        results.note(f'exported {algorithm} at {settings.size[0]}x{settings.size[1]} '
                     f'in {time.perf_counter() - start:.1f} s')
    results.save()
    return paths


def load(path: Path, provider: str, cache: Path, *, fp16: bool = True, mean: list[float] | None = None):  # noqa: ANN201
    """The engine the node would build for ``provider`` (TensorRT behind CUDA, as by default)."""
    from seg_node.model.contract import ModelOverrides
    from seg_node.runtime.config import EngineConfig
    from seg_node.runtime.loader import ModelRequest, load_model

    config = EngineConfig(providers=PROVIDER_LISTS[provider], trt_fp16=fp16, trt_cache_dir=str(cache))
    return load_model(ModelRequest(str(path), config=config, overrides=ModelOverrides(mean=mean))).engine


def timed(run: Callable[[], object], warmup: int, repeats: int) -> dict:
    """Median (and spread) ms of ``run`` after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return {'median_ms': float(np.median(times)), 'p10_ms': float(np.percentile(times, 10)),
            'p90_ms': float(np.percentile(times, 90)), 'runs': repeats, 'warmup': warmup}


def frames_at(size: tuple[int, int], count: int) -> np.ndarray:
    """``count`` distinct uint8 RGB frames of the model size (palette scenes), as one batch."""
    from seg_node.model.known_answer import palette_scene

    return np.stack([palette_scene(seed, *size, blocks=20)[0] for seed in range(count)])


def _engine_files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix == '.engine'}


def measure_engine(algorithm: str, path: Path, settings: Settings, cache: Path, *, results: Results,
                   budget: Budget, reserve: float) -> dict:
    """Per-provider engine times of one head; returns the engines kept for the agreement step."""
    from seg_node.runtime.engine import usable_providers

    rows, engines = {}, {}
    results.data['engine'][algorithm] = rows
    for provider in ('cpu', 'cuda', 'tensorrt'):
        if not usable_providers([provider]):
            rows[provider] = {'status': 'unavailable', 'reason': f'the {provider} provider cannot run here '
                              '(see environment.usable_providers)'}
            continue
        if provider == 'tensorrt' and not settings.dry_run and not budget.allows(TRT_BUILD_S, reserve):
            rows[provider] = {'status': 'skipped', 'reason': f'time budget ({budget.left():.0f} s left)'}
            continue
        start = time.perf_counter()
        try:
            engine = load(path, provider, cache)
        except Exception as err:  # noqa: BLE001 - report and go on with the next provider
            rows[provider] = {'status': 'failed', 'reason': one_line(err)}
            results.save()
            continue
        row = {'status': 'ok', 'provider_in_use': engine.provider, 'load_s': time.perf_counter() - start,
               'session_providers': engine.session.get_providers()}
        if engine.provider != provider:
            row['status'] = 'fell back'
            row['reason'] = f'asked for {provider}, the engine runs on {engine.provider}'
        if engine.trt_cache is not None:
            row['trt_cache'] = str(engine.trt_cache)
        repeats = settings.repeats_cpu if provider == 'cpu' else settings.repeats_gpu
        warmup = 1 if provider == 'cpu' else settings.warmup
        for batch in settings.batches:
            frames = frames_at(settings.size, batch)
            runs = repeats if batch == 1 else max(1, repeats // 2 + 1)
            stats = timed(lambda f=frames, e=engine: e.run(f), warmup, runs)
            stats['ms_per_frame'] = stats['median_ms'] / batch
            row[f'batch{batch}'] = stats
        rows[provider] = row
        engines[provider] = engine
        results.note(f'{algorithm} {provider}: ' + ', '.join(
            f'batch {b} {row[f"batch{b}"]["ms_per_frame"]:.2f} ms/frame' for b in settings.batches)
            + f' (load {row["load_s"]:.1f} s, on {engine.provider})')
        results.save()
    return engines


def measure_trt_warm_load(path: Path, cache: Path, cold: dict, results: Results) -> None:
    """Load the same model again with the cache warm: same folder, no engine file rewritten."""
    record = results.data['tensorrt_cache']
    folder = Path(cold['trt_cache'])
    before = _engine_files(folder)
    record.update(status='ok', model='deeplab', build_cold_s=cold['load_s'], folder=str(folder),
                  engine_files=sorted(before))
    start = time.perf_counter()
    warm = load(path, 'tensorrt', cache)
    record['load_warm_s'] = time.perf_counter() - start
    record['warm_same_folder'] = str(warm.trt_cache) == str(folder)
    record['warm_rewrote_no_engine'] = _engine_files(folder) == before
    record['warm_provider'] = warm.provider
    results.note(f'TensorRT deeplab: cold build {record["build_cold_s"]:.1f} s, warm load '
                 f'{record["load_warm_s"]:.1f} s, same folder {record["warm_same_folder"]}, '
                 f'engine files untouched {record["warm_rewrote_no_engine"]}')
    results.save()


def measure_trt_rebuild(path: Path, cache: Path, results: Results, budget: Budget, settings: Settings) -> None:
    """A changed model (another mean, baked into the wrapped graph) must build into a new folder."""
    record = results.data['tensorrt_cache']
    if record.get('status') != 'ok':
        return
    if not settings.dry_run and not budget.allows(TRT_BUILD_S):
        record['changed_model'] = {'status': 'skipped', 'reason': f'time budget ({budget.left():.0f} s left); '
                                   'test_gpu.py proves the rebuild on the known-answer model'}
        results.save()
        return
    start = time.perf_counter()
    changed = load(path, 'tensorrt', cache, mean=[0.5, 0.5, 0.5])
    record['changed_model'] = {
        'status': 'ok', 'change': 'mean override [0.5, 0.5, 0.5]', 'rebuild_s': time.perf_counter() - start,
        'provider': changed.provider, 'folder': str(changed.trt_cache),
        'new_folder': str(changed.trt_cache) != record['folder'],
        'engine_files': sorted(_engine_files(changed.trt_cache)) if changed.trt_cache else []}
    results.note(f'TensorRT deeplab with another mean: rebuilt in {record["changed_model"]["rebuild_s"]:.1f} s '
                 f'into a new folder: {record["changed_model"]["new_folder"]}')
    results.save()


def measure_agreement(engines: dict, settings: Settings, results: Results) -> None:
    """Argmax agreement of TensorRT fp16 (and CUDA) with the CPU's fp32, on synthetic 1080p frames."""
    from bench.common import frames

    record = results.data['agreement']
    if 'cpu' not in engines:
        record.update(status='unavailable', reason='no CPU reference engine')
        results.save()
        return
    images = frames(settings.agreement_frames, seed=7)
    reference = [r.class_mask for r in engines['cpu'].segment(images)]
    record.update(status='ok', model='deeplab', frames=len(images), bar=AGREEMENT_BAR, reference='cpu fp32')
    for name, key in (('tensorrt_fp16', 'tensorrt'), ('cuda', 'cuda')):
        engine = engines.get(key)
        if engine is None or engine.provider != key:
            record[name] = {'status': 'unavailable', 'reason': f'no {key} engine'}
            continue
        masks = [r.class_mask for r in engine.segment(images)]
        same = sum(int((m == r).sum()) for m, r in zip(masks, reference, strict=True))
        total = sum(r.size for r in reference)
        record[name] = {'status': 'ok', 'agreement': same / total, 'passes': same / total >= AGREEMENT_BAR}
        results.note(f'argmax agreement {name} vs CPU fp32: {same / total:.4%}')
    results.save()


def measure_dds(model: Path, provider: str, cache: Path, settings: Settings, *, results: Results,
                budget: Budget, label: str) -> None:
    """The node through DDS at 30 Hz with 1, 2 and 4 cameras of 1080p (``bench.run``'s machinery)."""
    record = results.data['dds']
    if importlib.util.find_spec('rclpy') is None:
        record.update(status='unavailable', reason='rclpy is not importable (carry the ROS 2 wheels)')
        results.save()
        return
    import bench.run as bench_run

    record.update(status='ok', model=label, providers=list(PROVIDER_LISTS[provider]), cases=[])
    started: list = []

    class Recording(bench_run.ChildProcess):
        """Keeps each process so the node's own log line says which provider it used."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    plain = bench_run.ChildProcess
    bench_run.ChildProcess = Recording  # run_case looks the name up in its module on each call
    os.environ['BENCH_NODE_PARAMS'] = (f'providers:=[{",".join(PROVIDER_LISTS[provider])}] '
                                       f'trt_cache_dir:={cache}')
    domain = int(os.environ.get('ROS_DOMAIN_ID', '50'))
    try:
        for index, cameras in enumerate(settings.cameras):
            if not settings.dry_run and not budget.allows(DDS_CASE_S + settings.dds_seconds):
                record['cases'].append({'cameras': cameras, 'status': 'skipped',
                                        'reason': f'time budget ({budget.left():.0f} s left)'})
                continue
            started.clear()
            case = bench_run.Case(cameras, 30.0, seconds=settings.dds_seconds)
            try:
                result = bench_run.run_case('seg_node', case, model, (domain + index) % 200 + 1)
            except Exception as err:  # noqa: BLE001 - record why (with the node's last lines) and go on
                tail = started[0].output[-1500:] if started else ''
                record['cases'].append({'cameras': cameras, 'status': 'failed', 'reason': one_line(err),
                                        'node_log_tail': tail})
                results.save()
                continue
            log = started[0].output if started else ''
            used = re.findall(r' on (tensorrt|cuda|cpu)\b', log)
            result.update(status='ok', cameras=cameras, provider_in_use=used[-1] if used else 'unknown')
            record['cases'].append(result)
            results.note(f'DDS {case.name}: delivered {result["delivered_fraction"]:.1%}, p50 '
                         f'{result["latency_ms"]["p50"]:.1f} ms, p99 {result["latency_ms"]["p99"]:.1f} ms '
                         f'on {result["provider_in_use"]}')
            results.save()
    finally:
        bench_run.ChildProcess = plain
        os.environ.pop('BENCH_NODE_PARAMS', None)


def _fmt(value: float | None, digits: int = 1) -> str:
    return 'n/a' if value is None or math.isnan(value) else f'{value:.{digits}f}'


def _why(row: dict) -> str:
    if not row:
        return 'not run'
    return f'{row.get("status", "?")}: {row.get("reason", "")}'.rstrip(': ')


def markdown(data: dict) -> str:
    """The Markdown section of one run's results."""
    env, settings = data['environment'], data['settings']
    h, w = settings['size']
    lines = ['## GPU: CPU vs CUDA vs TensorRT (issue #16)', '',
             ('**Dry run (CPU-only check of the script, toy sizes): no GPU figures.** ' if settings['dry_run'] else '')
             + f'Measured by `bench/gpu.sh` on {env.get("gpu", "?")}, {env.get("cores", "?")} cores, '
               f'{env.get("date", "?")}; Python {env.get("python", "?")}, {env.get("onnxruntime_package", "?")} '
               f'{env.get("onnxruntime", "?")}, TensorRT library {env.get("tensorrt_library_version", "?")}, '
               f'torch {env.get("torch", "?")}. Providers usable here: {env.get("usable_providers", "?")}.', '',
             f'### Engine time per frame (ResNet50 heads, random weights, input {h}x{w}, median ms per frame)', '',
             'uint8 frames in, class ids out (`SegmentationEngine.run`, I/O binding); TensorRT fp16 runs behind '
             'CUDA as the node runs it; load = engine build or load.', '',
             '| head | provider | batch 1 | batch 4 | load s | runs on |', '|---|---|---|---|---|---|']
    for algorithm, export in data['exports'].items():
        if export.get('status') != 'ok':
            lines.append(f'| {algorithm} | (export) | {_why(export)} | | | |')
    for algorithm, rows in data['engine'].items():
        for provider, row in rows.items():
            if 'batch1' in row:
                b4 = row.get('batch4', {}).get('ms_per_frame')
                lines.append(f'| {algorithm} | {provider} | {_fmt(row["batch1"]["ms_per_frame"], 2)} | '
                             f'{_fmt(b4, 2)} | {_fmt(row["load_s"])} | {row["provider_in_use"]} |')
            else:
                lines.append(f'| {algorithm} | {provider} | {_why(row)} | | | |')
    cache = data['tensorrt_cache']
    lines += ['', '### TensorRT engine cache', '']
    if cache.get('status') == 'ok':
        changed = cache.get('changed_model', {})
        lines += [f'DeepLabV3: build with an empty cache {_fmt(cache["build_cold_s"])} s; load with it warm '
                  f'{_fmt(cache.get("load_warm_s"))} s (same folder: {cache.get("warm_same_folder")}, no engine '
                  f'file rewritten: {cache.get("warm_rewrote_no_engine")}); another mean: '
                  + (f'rebuilt in {_fmt(changed["rebuild_s"])} s into a new folder: {changed["new_folder"]}.'
                     if changed.get('status') == 'ok' else _why(changed) + '.')]
    else:
        lines.append(_why(cache))
    agreement = data['agreement']
    lines += ['', '### fp16 vs fp32 argmax agreement (DeepLabV3, against the CPU provider)', '']
    if agreement.get('status') == 'ok':
        for name in ('tensorrt_fp16', 'cuda'):
            row = agreement.get(name, {})
            lines.append(f'- {name}: ' + (f'{row["agreement"]:.4%} over {agreement["frames"]} frames '
                                          f'({"passes" if row["passes"] else "FAILS"} the '
                                          f'{AGREEMENT_BAR:.0%} bar)' if row.get('status') == 'ok' else _why(row)))
    else:
        lines.append(_why(agreement))
    dds = data['dds']
    lines += ['', f'### The node through DDS (1080p at 30 Hz, {dds.get("model", "?")})', '']
    if dds.get('status') == 'ok':
        lines += ['| cameras | delivered | output Hz | latency p50 / p99 ms | node CPU % | runs on |',
                  '|---|---|---|---|---|---|']
        for case in dds['cases']:
            if case.get('status') == 'ok':
                lat = case['latency_ms']
                lines.append(f'| {case["cameras"]} | {case["delivered_fraction"]:.1%} | '
                             f'{_fmt(case["output_rate_hz"])} | {_fmt(lat["p50"])} / {_fmt(lat["p99"])} | '
                             f'{_fmt(case["node_cpu_percent"], 0)} | {case["provider_in_use"]} |')
            else:
                lines.append(f'| {case["cameras"]} | {_why(case)} | | | | |')
    else:
        lines.append(_why(dds))
    if data['failures']:
        lines += ['', '### Steps that failed', '']
        lines += [f'- {f["step"]}: {f["reason"]}' for f in data['failures']]
    return '\n'.join(lines)


def guarded(results: Results, name: str, step: Callable[[], object]) -> object:
    """Run one step; a failure is recorded under ``name`` (with its traceback's last line) and the run goes on."""
    try:
        return step()
    except Exception as err:  # noqa: BLE001 - a broken step must not cost the others
        traceback.print_exc()
        results.data['failures'].append({'step': name, 'reason': one_line(err)})
        results.note(f'{name}: failed ({one_line(err)})')
        results.save()
        return None


def run(settings: Settings, out: Path) -> Results:
    """Every step in priority order; each records what it measured or why it did not."""
    results = Results(out, settings)
    budget = Budget(settings.budget_s)
    results.data['environment'] = environment()
    results.note(f'environment: {results.data["environment"]}')
    results.save()
    work = Path(tempfile.mkdtemp(prefix='seg_node_gpu_bench_'))
    cache = work / 'trt'  # empty: the first TensorRT build is a cold one
    dds_reserve = len(settings.cameras) * (DDS_CASE_S + settings.dds_seconds)
    paths = export_models(settings, work, results, ALGORITHMS[:1])
    engines: dict = {}
    if 'deeplab' in paths:
        engines = guarded(results, 'engine', lambda: measure_engine(
            'deeplab', paths['deeplab'], settings, cache, results=results, budget=budget, reserve=dds_reserve)) or {}
        guarded(results, 'agreement', lambda: measure_agreement(engines, settings, results))
        cold = results.data['engine']['deeplab'].get('tensorrt', {})
        if cold.get('provider_in_use') == 'tensorrt':
            guarded(results, 'tensorrt_cache', lambda: measure_trt_warm_load(paths['deeplab'], cache, cold, results))
        else:
            results.data['tensorrt_cache'].update(
                status='unavailable', reason='no TensorRT engine was built (see engine.deeplab.tensorrt)')
    engines.clear()  # free the GPU for the node
    if 'deeplab' in paths:
        # The best provider the engine step really ran DeepLabV3 on: its engine cache is warm.
        rows = results.data['engine']['deeplab']
        best = next((p for p in ('tensorrt', 'cuda', 'cpu') if rows.get(p, {}).get('provider_in_use') == p), 'cpu')
        model, label = paths['deeplab'], f'DeepLabV3 ResNet50 {settings.size[0]}x{settings.size[1]} on {best}'
    else:
        from bench.run import tiny_model

        best = 'cpu'
        model, label = tiny_model(work / 'tiny.onnx'), 'the tiny contract model (no DeepLabV3 export)'
    guarded(results, 'dds', lambda: measure_dds(model, best, cache, settings, results=results, budget=budget,
                                                label=label))
    rest = [a for a in ALGORITHMS[1:] if settings.dry_run or budget.allows(60.0)]
    for algorithm in ALGORITHMS[1:]:
        if algorithm not in rest:
            results.data['engine'][algorithm] = {'all': {'status': 'skipped', 'reason': 'time budget'}}
    for algorithm, path in export_models(settings, work, results, tuple(rest)).items():
        guarded(results, 'engine', lambda a=algorithm, p=path: measure_engine(
            a, p, settings, cache, results=results, budget=budget, reserve=0.0))
    if 'deeplab' in paths:  # last: a second full TensorRT build
        guarded(results, 'tensorrt_cache', lambda: measure_trt_rebuild(paths['deeplab'], cache, results, budget,
                                                                       settings))
    results.note(f'done, {budget.left():.0f} s of the budget left')
    results.save()
    shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 when every step ran or was reported unavailable or skipped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=Path(os.environ.get('GPU_BENCH_OUT') or REPO / 'out' / 'gpu'))
    parser.add_argument('--dry-run', action='store_true', default=os.environ.get('GPU_BENCH_DRY_RUN') == '1',
                        help='toy sizes, few repeats: check the script on a CPU-only machine')
    parser.add_argument('--budget-s', type=float, default=float(os.environ.get('GPU_BENCH_BUDGET_S') or 0),
                        help='seconds from GPU_BENCH_T0 (bench/gpu.sh start) to finish in')
    args = parser.parse_args(argv)
    settings = DRY if args.dry_run else FULL
    if args.budget_s:
        settings = replace(settings, budget_s=args.budget_s)
    try:
        run(settings, args.out)
    except Exception:  # noqa: BLE001 - whatever happens, the log says where
        traceback.print_exc()
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
