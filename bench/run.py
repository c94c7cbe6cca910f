"""Run the benchmark matrix through real DDS and write bench results JSON and BENCHMARKS.md.

Each case starts the node under test (seg_node or the baseline) as its own process, a monitor
process that receives its outputs, and a playback process that publishes pre-loaded 1080p frames
at a fixed rate stamped at send time. Latency is output receipt time minus that stamp.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from bench.common import camera_topic, output_topic
from seg_node.model.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from seg_node.model.known_answer import palette_classifier
from seg_node.ros.harness import ChildProcess

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / 'out' / 'bench'
TICKS = os.sysconf('SC_CLK_TCK')


@dataclass(frozen=True)
class Case:
    """One load: how many cameras, how fast, which encoding."""

    cameras: int
    rate_hz: float
    compressed: bool = False
    seconds: float = 6.0
    outputs: tuple[str, ...] = ('mask', 'color_mask', 'overlay')  # what the monitor subscribes to
    model: str = 'tiny'  # a key of MODELS

    @property
    def name(self) -> str:
        """Short label for tables."""
        what = '' if self.outputs == Case.outputs else ' ' + '+'.join(self.outputs)
        model = '' if self.model == 'tiny' else f' {self.model}'
        return f'{self.cameras} cam {"jpeg" if self.compressed else "rgb8"} {self.rate_hz:g} Hz{what}{model}'


class ProcSampler:
    """Samples a process's CPU time and RSS from /proc twice a second."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples = pid, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                stat = Path(f'/proc/{self.pid}/stat').read_text().rsplit(')', 1)[1].split()
                status = Path(f'/proc/{self.pid}/status').read_text()
            except OSError:
                return
            cpu_s = (int(stat[11]) + int(stat[12])) / TICKS
            rss_mb = int(re.search(r'VmRSS:\s+(\d+)', status).group(1)) / 1024
            threads = int(re.search(r'Threads:\s+(\d+)', status).group(1))
            self.samples.append((time.time(), cpu_s, rss_mb, threads))

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(2)

    def cpu_percent(self, start: float, end: float) -> float:
        """Average CPU % (100 = one core) between two wall-clock times."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return float('nan')
        return 100 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


# seg_node as shipped, and the variants that say what each part of the data path buys: every
# output at the camera's resolution (``-full``), then also rclpy messages instead of serialized
# CDR (``-plain``), then also synchronous publication (``-sync``, rclpy's default before).
VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    'seg_node': ([], {}),
    'seg_node-full': (['visualization_scale:=1.0'], {}),
    'seg_node-full-plain': (['visualization_scale:=1.0', 'data_path:=plain'], {}),
    'seg_node-full-plain-sync': (['visualization_scale:=1.0', 'data_path:=plain'],
                                 {'RMW_FASTRTPS_PUBLICATION_MODE': 'SYNCHRONOUS'}),
    # The Foxglove live view on (any free port): nobody watching, then one viewer of every picture.
    'seg_node-foxglove': (['foxglove_port:=0'], {}),
    'seg_node-foxglove-viewer': (['foxglove_port:=0'], {}),
}
# Variants run with one Foxglove viewer (bench/foxglove_viewer.py) connected throughout.
WITH_VIEWER = ('seg_node-foxglove-viewer',)


def node_command(impl: str, case: Case, model: Path) -> list[str]:
    """Command line of the node under test."""
    topics = '[' + ', '.join(camera_topic(i, case.compressed) for i in range(case.cameras)) + ']'
    if impl == 'baseline':
        return [sys.executable, '-m', 'bench.baseline_node', '--ros-args', '-p', f'model_path:={model}',
                '-p', f'image_topics:={topics}']
    if impl == 'floor':
        return [sys.executable, '-m', 'bench.floor_node', '--ros-args', '-p', f'image_topics:={topics}']
    params = VARIANTS[impl][0] + os.environ.get('BENCH_NODE_PARAMS', '').split()
    extra = [arg for param in params for arg in ('-p', param)]
    return [sys.executable, '-m', 'seg_node.ros.node', '--ros-args', '-p', f'model_path:={model}',
            '-p', f'image_topics:={topics}', '-p', 'providers:=[cpu]', *extra]


def run_case(impl: str, case: Case, model: Path, domain: int) -> dict:
    """Run one case and summarize what the monitor saw."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED='1', **VARIANTS.get(impl, ([], {}))[1])
    node = ChildProcess(node_command(impl, case, model), env=env, cwd=REPO)
    processes = [node]
    viewer = None
    try:
        node.wait_for_line('segmenting', 60)
        if impl in WITH_VIEWER:
            url = re.search(r'Foxglove live view on (ws://\S+)', node.output).group(1)
            viewer = ChildProcess([sys.executable, '-m', 'bench.foxglove_viewer', '--url', url], env=env, cwd=REPO)
            processes.append(viewer)
            viewer.wait_for_line('VIEWER READY', 30)
        sampler = ProcSampler(node.proc.pid)
        monitor = ChildProcess([sys.executable, '-m', 'bench.monitor', '--cameras', str(case.cameras),
                                '--seconds', str(case.seconds + 9), '--outputs', ','.join(case.outputs)],
                               env=env, cwd=REPO)
        monitor.wait_for_line('MONITOR READY', 40)
        playback = ChildProcess([sys.executable, '-m', 'bench.playback', '--cameras', str(case.cameras),
                            '--rate', str(case.rate_hz), '--seconds', str(case.seconds)]
                           + (['--compressed'] if case.compressed else []), env=env, cwd=REPO)
        processes += [monitor, playback]
        sent = playback.result(case.seconds + 60)
        seen = monitor.result(case.seconds + 60)
        sampler.stop()
        if viewer is not None:  # watching until every output of the run was seen
            viewer.proc.send_signal(signal.SIGINT)
        watched = viewer.result(30) if viewer is not None else None
    finally:
        for process in processes:
            process.stop(timeout=5)
    result = summarize(impl, case, sent, seen, sampler)
    if watched is not None:
        result['viewer'] = watched | {'send_seconds': sent['send_seconds']}
    return result


def summarize(impl: str, case: Case, sent: dict, seen: dict, sampler: ProcSampler) -> dict:
    """Delivery, latency percentiles, CPU and memory of one run."""
    latencies, delivered, timeline = [], [], []
    for cam in range(case.cameras):
        masks = seen['received'].get(output_topic(cam, 'mask'), {})
        delivered.append(len(masks))
        for stamp, receipt in masks.items():
            latencies.append((receipt - float(stamp)) * 1e3)
            timeline.append((float(stamp), (receipt - float(stamp)) * 1e3))
    expected = sent['sent_per_camera'] * case.cameras
    lat = np.array(latencies) if latencies else np.array([np.nan])
    # The overlay goes out after every mask of its batch: its latency is that of the whole frame.
    overlays = [(receipt - float(stamp)) * 1e3 for cam in range(case.cameras)
                for stamp, receipt in seen['received'].get(output_topic(cam, 'overlay'), {}).items()]
    stamps = [t for t, _ in timeline]
    window = (min(stamps), max(stamps)) if stamps else (0, 0)
    timeline.sort()
    per_second = {}
    for stamp, latency in timeline:
        per_second.setdefault(int(stamp - window[0]), []).append(latency)
    return {
        'impl': impl, 'case': asdict(case), 'name': case.name,
        'frames_sent': expected, 'frames_delivered': sum(delivered),
        'delivered_fraction': sum(delivered) / expected if expected else float('nan'),
        'output_rate_hz': sum(delivered) / sent['send_seconds'],
        'latency_ms': {q: float(np.percentile(lat, p)) for q, p in
                       (('p50', 50), ('p90', 90), ('p99', 99), ('max', 100))},
        'overlay_latency_ms': ({q: float(np.percentile(overlays, p)) for q, p in (('p50', 50), ('p99', 99))}
                               if overlays else {}),
        'latency_p50_per_second_ms': [float(np.median(v)) for _, v in sorted(per_second.items())],
        'node_cpu_percent': sampler.cpu_percent(*window),
        'node_rss_mb': max((s[2] for s in sampler.samples), default=float('nan')),
        'node_threads': max((s[3] for s in sampler.samples), default=0),
        'stages_ms': seen.get('stages_ms', {}),
        'node_counters': seen.get('node_counters', {}),
    }


def peak_rate(model: Path, domain: int, cameras: int = 1) -> tuple[float, list[dict]]:
    """Highest rate (Hz per camera) with at most 5 % of frames lost: double, then bisect."""
    runs, good, bad = [], 0.0, None
    rate = 30.0
    for _ in range(5):
        result = run_case('seg_node', Case(cameras, rate, seconds=4.0), model, domain)
        runs.append(result)
        domain += 1
        if result['delivered_fraction'] >= 0.95:
            good = rate
            rate = rate * 2 if bad is None else (rate + bad) / 2
        else:
            bad = rate
            rate = (good + rate) / 2
    return good, runs


def tiny_model(path: Path) -> Path:
    """The contract model of the targets: input half the camera size, output stride 8 like a D8 ResNet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(palette_classifier(input_size=(540, 960), downsample=8), path)
    return path


def logits_model(path: Path) -> Path:
    """A 7-class float-logits model at half resolution, output stride 1: argmax over 960x540 per frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(palette_classifier(CITYSCAPES_PALETTE[:7], classes=CITYSCAPES_CLASSES[:7],
                                 input_size=(540, 960)), path)
    return path


MODELS = {'tiny': tiny_model, 'logits7': logits_model}


def machine() -> dict:
    """Where the figures were measured."""
    import onnxruntime
    import rclpy

    cpu = next((line.split(':', 1)[1].strip() for line in Path('/proc/cpuinfo').read_text().splitlines()
                if line.startswith('model name')), platform.processor())
    return {'cpu': cpu, 'cores': os.cpu_count(), 'python': platform.python_version(),
            'onnxruntime': onnxruntime.__version__, 'rclpy': getattr(rclpy, '__version__', 'kilted wheels'),
            'rmw': os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp'),
            'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}


MATRIX = [
    Case(2, 30.0),  # the headline target
    Case(1, 10.0), Case(1, 30.0), Case(1, 60.0),
    Case(4, 30.0), Case(4, 30.0, outputs=('mask',)),
    Case(2, 30.0, outputs=('mask',), model='logits7'),
    Case(1, 30.0, compressed=True), Case(2, 30.0, compressed=True),
]
OVERLOAD = Case(2, 60.0, seconds=8.0)
# seg_node as shipped and with every output at full resolution, a typical first version (the
# baseline), and the floor: the middleware alone (bench/floor_node.py).
IMPLEMENTATIONS = ('seg_node', 'seg_node-full', 'baseline', 'floor')
# What each part of the data path buys, on the headline case only.
ABLATIONS = ('seg_node-full-plain', 'seg_node-full-plain-sync')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--quick', action='store_true', help='only the headline case')
    parser.add_argument('--foxglove', action='store_true',
                        help='only the Foxglove live view cases (bench/foxglove.py) -> out/bench/foxglove.json')
    parser.add_argument('--output', type=Path, default=OUT)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    models = {name: build(args.output / f'{name}_contract_model.onnx') for name, build in MODELS.items()}
    model = models['tiny']
    domain = int(os.environ.get('ROS_DOMAIN_ID', '50'))
    if args.foxglove:
        from bench.foxglove import run_foxglove

        run_foxglove(model, domain, args.output)
        return
    results = {'machine': machine(), 'command': 'make bench', 'cases': [], 'overload': [], 'peak': {},
               'sections': []}
    matrix = MATRIX[:1] if args.quick else MATRIX
    for case in matrix:
        impls = IMPLEMENTATIONS + (ABLATIONS if case == MATRIX[0] else ())
        for impl in impls:
            domain = domain % 200 + 1
            result = run_case(impl, case, models[case.model], domain)
            results['cases'].append(result)
            print(f'{impl:24s} {case.name:34s} delivered {result["delivered_fraction"]:6.1%}  '
                  f'p50 {result["latency_ms"]["p50"]:7.1f} ms  p99 {result["latency_ms"]["p99"]:7.1f} ms  '
                  f'cpu {result["node_cpu_percent"]:5.0f} %', flush=True)
    if not args.quick:
        for impl in ('seg_node', 'baseline'):
            domain = domain % 200 + 1
            results['overload'].append(run_case(impl, OVERLOAD, model, domain))
        domain = domain % 200 + 1
        peak, runs = peak_rate(model, domain)
        results['peak'] = {'cameras': 1, 'rate_hz': peak, 'runs': runs}
        print(f'peak rate (1 camera, <= 5 % lost): {peak:.0f} Hz', flush=True)
        from bench.engine_micro import report, run_all, tiny_model_overhead, tiny_report

        tiny = tiny_model_overhead()
        results['engine_tiny'] = tiny
        results['sections'].append(tiny_report(tiny))
        print(tiny_report(tiny), flush=True)
        rows = run_all()
        results['engine_micro'] = rows
        results['sections'].append(report(rows))
        print(report(rows), flush=True)
        from bench import ground_grid

        results['ground_grid'] = [ground_grid.measure(scale) for scale in (1, 2)]
        results['sections'].append(ground_grid.section(results['ground_grid']))
        print(results['sections'][-1], flush=True)
        from bench.foxglove import run_foxglove

        domain = domain % 200 + 1
        results['sections'].append(run_foxglove(model, domain, args.output))
    (args.output / 'results.json').write_text(json.dumps(results, indent=1))
    from bench.report import write_report

    # A quick run is a smoke test: it never replaces the figures of a full run.
    report = args.output / 'BENCHMARKS-quick.md' if args.quick else REPO / 'BENCHMARKS.md'
    write_report(results, report)
    print(f'wrote {args.output / "results.json"} and {report}')


if __name__ == '__main__':
    main()
