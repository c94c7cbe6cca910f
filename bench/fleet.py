"""Fleet labelling throughput: seg_bag label bag after bag vs seg_bag fleet on 1 and 2 Ray workers.

N synthetic bags (one camera each) are labelled with the tiny contract model (nearest palette
colour: the figures are everything but the network) and with a ResNet50 FCN exported like
bench/engine_micro.py does (random weights, fixed input size): first with ``label_bag`` in this
process one bag after the other (ONNX Runtime's default threads), then with ``run_fleet`` on a
local Ray cluster of this machine's cores: 1 worker x 1 CPU, 1 worker x all CPUs (the same
threads as the single process: the difference is what Ray and the shard merge cost) and
N workers x 1 CPU. The cluster is started once; its start-up is reported on its own line.
Results: out/bench/fleet.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import onnx

from seg_node.bag.label import LabelOptions, label_bag
from seg_node.bag.synth import SynthOptions, write_drive
from seg_node.fleet.plan import Layout, plan_bag
from seg_node.fleet.run import FleetOptions, run_fleet
from seg_node.fleet.worker import ShardWorker, WorkerConfig
from seg_node.model.known_answer import palette_classifier
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.loader import ModelRequest, load_model

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / 'out' / 'bench'


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo."""
    for line in Path('/proc/cpuinfo').read_text().splitlines():
        if line.startswith('model name'):
            return line.split(':', 1)[1].strip()
    return platform.processor() or 'unknown'


def make_bags(folder: Path, count: int, frames: int, size: tuple[int, int]) -> list[Path]:
    """``count`` one-camera palette drives of ``frames`` frames at ``size`` (H, W)."""
    bags = []
    for i in range(count):
        path = folder / f'bag{i}'
        write_drive(path, SynthOptions(cameras=1, frames=frames, width=size[1], height=size[0], scene='palette',
                                       seed=i))
        bags.append(path)
    return bags


def folder_bytes(paths: list[Path]) -> int:
    """Bytes of every file under ``paths``."""
    return sum(f.stat().st_size for p in paths for f in p.rglob('*') if f.is_file())


def sequential(bags: list[Path], model: Path, out: Path) -> dict:
    """seg_bag label, bag after bag, in this process (engine loaded once per bag, as the command does)."""
    start = time.perf_counter()
    load_model(ModelRequest(str(model), config=EngineConfig(providers=('cpu',))))
    load = time.perf_counter() - start  # what each bag spends on its model before the first frame
    start = time.perf_counter()
    frames = 0
    for bag in bags:
        result = label_bag(bag, out / bag.name, model, LabelOptions(providers=('cpu',)))
        frames += sum(result.frames.values())
    wall = time.perf_counter() - start
    startup = load * len(bags)
    return {'run': 'seg_bag label, bag after bag', 'workers': 1, 'threads': os.cpu_count(), 'frames': frames,
            'wall_s': wall, 'fps': frames / wall, 'startup_s': startup,
            'fps_after_startup': frames / (wall - startup),
            'bytes_in_per_frame': folder_bytes(bags) / frames,
            'bytes_out_per_frame': folder_bytes([out / b.name for b in bags]) / frames}


def fleet(bags: list[Path], model: Path, out: Path, *, workers: int, cpus: int, shard_frames: int) -> dict:
    """One fleet run into a fresh folder on the already started cluster."""
    options = FleetOptions(model=str(model), out=out, workers=workers, cpus_per_worker=cpus, providers=('cpu',),
                           shard_frames=shard_frames, progress=False)
    summary = run_fleet(bags, options)
    assert summary.exit_code == 0, summary.bags
    busy = [w['frames'] / w['seconds'] for w in summary.workers.values() if w['seconds']]
    merged = folder_bytes([out / 'bags'])
    return {'merge_mb_per_s': merged / 1e6 / summary.merge_s if summary.merge_s else float('nan'),
            'run': f'fleet, {workers} worker(s) x {cpus} CPU', 'workers': workers, 'threads': cpus,
            'frames': summary.frames, 'wall_s': summary.wall_s, 'fps': summary.frames_per_second,
            'fps_per_worker_busy': busy, 'merge_s': summary.merge_s, 'startup_s': summary.startup_s,
            'fps_after_startup': summary.frames / (summary.wall_s - summary.startup_s)}


def in_process(bags: list[Path], model: Path, folder: Path, *, threads: int, shard_frames: int) -> dict:
    """The fleet worker's code on the same shards in this process, without Ray: what Ray itself costs."""
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    start = time.perf_counter()
    worker = ShardWorker(WorkerConfig(model=str(model), model_sha256=sha, providers=('cpu',), cpu_threads=threads))
    startup = time.perf_counter() - start
    frames = 0
    for bag in bags:
        for shard in plan_bag(bag, bag.name, Layout(folder), shard_frames=shard_frames).shards:
            status = worker.run(shard)
            assert status['ok'], status
            frames += int(status['frames'])
    wall = time.perf_counter() - start
    shutil.rmtree(folder)
    return {'run': f'fleet worker code, no Ray, {threads} thread(s)', 'workers': 1, 'threads': threads,
            'frames': frames, 'wall_s': wall, 'fps': frames / wall, 'startup_s': startup,
            'fps_after_startup': frames / (wall - startup)}


def resnet_model(folder: Path, size: tuple[int, int]) -> Path:
    """A random-weight ResNet50 FCN exported at ``size`` (needs torch: the train extra)."""
    from bench.engine_micro import export_random_model

    _, path = export_random_model('fcn', size, folder)
    return path


def run(args: argparse.Namespace) -> dict:
    """Every model x every way of running; cluster start-up measured once."""
    import ray

    cores = os.cpu_count() or 1
    results = {'machine': {'cpu': cpu_model(), 'cores': cores,
                           'date': datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
                           'ray': ray.__version__},
               'bags': args.bags, 'models': []}
    with tempfile.TemporaryDirectory(prefix='bench_fleet_') as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        ray.init(address='local', num_cpus=cores, include_dashboard=False, log_to_driver=False,
                 logging_level='WARNING')
        results['cluster_start_s'] = time.perf_counter() - started
        try:
            tiny = folder / 'tiny.onnx'
            onnx.save(palette_classifier(input_size=(args.height // 2, args.width // 2), downsample=4), tiny)
            setups = [('tiny contract model', tiny, args.tiny_frames)]
            if not args.skip_resnet:
                setups.append((f'ResNet50 FCN at {args.resnet_size[0]}x{args.resnet_size[1]}',
                               resnet_model(folder, tuple(args.resnet_size)), args.resnet_frames))
            for name, model, frames in setups:
                bags = make_bags(folder / f'bags_{model.stem}', args.bags, frames, (args.height, args.width))
                best: list[dict] = []
                # Every configuration once per round, rounds repeated: on a shared machine the best
                # round of each is the one least disturbed by other load.
                for _ in range(args.repeats):
                    out = folder / f'seq_{model.stem}'
                    rows = [sequential(bags, model, out)]
                    shutil.rmtree(out)
                    for threads in (1, cores):
                        rows.append(in_process(bags, model, folder / f'inproc_{model.stem}', threads=threads,
                                               shard_frames=max(1, frames // 2)))
                    for workers, cpus in ((1, 1), (1, cores), (cores, 1)):
                        out = folder / f'fleet_{model.stem}_{workers}x{cpus}'
                        rows.append(fleet(bags, model, out, workers=workers, cpus=cpus,
                                          shard_frames=max(1, frames // 2)))
                        shutil.rmtree(out)
                    best = [min(pair, key=lambda r: r['wall_s']) for pair in zip(best, rows, strict=True)] if best \
                        else rows
                results['models'].append({'model': name, 'frames_per_bag': frames, 'repeats': args.repeats,
                                          'frame_size': [args.height, args.width], 'rows': best})
        finally:
            ray.shutdown()
    return results


def report(results: dict) -> str:
    """Markdown tables of ``run``'s results."""
    m = results['machine']
    lines = [f'Measured by `make bench-fleet` on {m["cpu"]} ({m["cores"]} cores, no GPU), {m["date"]}, Ray '
             f'{m["ray"]}; local cluster start {results["cluster_start_s"]:.1f} s (not in the figures).', '']
    for entry in results['models']:
        rows = entry['rows']
        seq, _, _, one, one_all, many = rows
        frames = seq['frames']
        height, width = entry['frame_size']
        lines += [f'{entry["model"]}: {results["bags"]} bags x {entry["frames_per_bag"]} frames ({width}x{height}), '
                  f'shards of {max(1, entry["frames_per_bag"] // 2)} frames; best of {entry["repeats"]} rounds.', '',
                  '| run | frames/s | wall s | start-up s | frames/s after start-up | per worker while busy '
                  '| vs bag after bag, both after start-up |',
                  '|---|---|---|---|---|---|---|']
        for r in rows:
            busy = ', '.join(f'{v:.1f}' for v in r.get('fps_per_worker_busy', [])) or '-'
            ratio = r['fps_after_startup'] / seq['fps_after_startup']
            lines.append(f'| {r["run"]} | {r["fps"]:.2f} | {r["wall_s"]:.1f} | {r["startup_s"]:.1f} | '
                         f'{r["fps_after_startup"]:.2f} | {busy} | {ratio:.2f}x |')
        overhead = (one_all['wall_s'] - one_all['startup_s'] - (seq['wall_s'] - seq['startup_s'])) / frames * 1e3
        scaling = many['fps_after_startup'] / one['fps_after_startup']
        lines += ['', f'Scaling 1 -> {many["workers"]} workers (1 CPU each), after start-up: {scaling:.2f}x. '
                  f'Fleet start-up (actors and engines, once per run): {one_all["startup_s"]:.1f} s. Beyond it, Ray '
                  f'and the merge add {overhead:.1f} ms per frame against one process with the same threads '
                  f'(merge tasks: {one_all["merge_s"]:.1f} s in all, {one_all["merge_mb_per_s"]:.0f} MB/s). '
                  f'Per frame: {seq["bytes_in_per_frame"] / 1e6:.2f} MB read, {seq["bytes_out_per_frame"] / 1e6:.2f} '
                  'MB written.', '']
    return '\n'.join(lines)


def main() -> None:
    """Run and print; write out/bench/fleet.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--bags', type=int, default=4)
    parser.add_argument('--tiny-frames', type=int, default=60, help='frames per bag with the tiny model')
    parser.add_argument('--resnet-frames', type=int, default=12, help='frames per bag with ResNet50')
    parser.add_argument('--resnet-size', type=int, nargs=2, default=[128, 256], metavar=('H', 'W'))
    parser.add_argument('--width', type=int, default=512)
    parser.add_argument('--height', type=int, default=256)
    parser.add_argument('--skip-resnet', action='store_true', help='tiny model only (no torch needed)')
    parser.add_argument('--repeats', type=int, default=3, help='rounds; the best of each configuration counts')
    args = parser.parse_args()
    results = run(args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / 'fleet.json').write_text(json.dumps(results, indent=1))
    print(report(results))


if __name__ == '__main__':
    main()
