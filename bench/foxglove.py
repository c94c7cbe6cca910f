"""What the Foxglove live view costs the node (``python -m bench.run --foxglove``; part of ``make bench``).

Two parts. Over DDS: the headline load with the live view off, on with nobody watching, and on with
one viewer of every picture, repeated in turn (A B C A B C ...) so that a shared machine's load falls
on all three alike. In-process: the work the worker thread does per frame for the live view when
nobody watches, and what encoding each picture costs the live view's own thread when somebody does.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from bench.common import HEIGHT, WIDTH, frames
from bench.run import Case, machine, run_case
from seg_node.model.classes import CITYSCAPES_PALETTE
from seg_node.runtime.render import blend, resize_nearest, scaled_size

HEADLINE = Case(2, 30.0)
IMPLS = (('seg_node', 'live view off (foxglove_port -1)'),
         ('seg_node-foxglove', 'live view on, no viewer'),
         ('seg_node-foxglove-viewer', 'live view on, one viewer of every picture'))


def _median(rows: list[dict], get) -> float:  # noqa: ANN001 - a small accessor
    return statistics.median(get(row) for row in rows)


def dds_report(runs: dict[str, list[dict]], case: Case) -> list[str]:
    """Table of the DDS runs: medians over the repetitions."""
    reps = len(next(iter(runs.values())))
    lines = [f'Over DDS: {case.name}, mask + colour mask + overlay subscribed over ROS, {case.seconds:g} s per run, '
             f'median of {reps} run(s) per row, run in turn.', '',
             '| node | delivered | mask p50 ms | mask p99 ms | overlay p50 ms | node CPU % | node RSS MB '
             '| viewer: pictures/s | viewer: kB/s |',
             '|---|---|---|---|---|---|---|---|---|']
    for impl, label in IMPLS:
        rows = runs[impl]
        viewer = '- | -'
        if rows[0].get('viewer'):
            # Per second of playback: the viewer is connected longer, but pictures flow only then.
            per_s = [sum(c['messages'] for c in r['viewer']['channels'].values()) / r['viewer']['send_seconds']
                     for r in rows]
            kb_s = [sum(c['bytes'] for c in r['viewer']['channels'].values()) / r['viewer']['send_seconds'] / 1e3
                    for r in rows]
            viewer = f'{statistics.median(per_s):.0f} | {statistics.median(kb_s):.0f}'
        lines.append(
            f'| {label} | {_median(rows, lambda r: r["delivered_fraction"]):.1%} '
            f'| {_median(rows, lambda r: r["latency_ms"]["p50"]):.1f} '
            f'| {_median(rows, lambda r: r["latency_ms"]["p99"]):.1f} '
            f'| {_median(rows, lambda r: r["overlay_latency_ms"].get("p50", float("nan"))):.1f} '
            f'| {_median(rows, lambda r: r["node_cpu_percent"]):.0f} | {_median(rows, lambda r: r["node_rss_mb"]):.0f} '
            f'| {viewer} |')
    return lines


def _timed(fn, repeat: int) -> float:  # noqa: ANN001 - a callable
    """Median wall ms of ``fn()``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def micro() -> dict:
    """Per-frame cost on the worker thread with nobody watching; per-picture encode cost and size."""
    from seg_node.viewer.live import LiveView, ViewOptions, view_image

    camera = frames(1, seed=3)[0]
    view_size = scaled_size((HEIGHT, WIDTH), 0.5)  # the node's default visualization_scale
    ids = (np.indices((HEIGHT // 8, WIDTH // 8)).sum(0) // 9 % 19).astype(np.uint8)
    colour = np.asarray(CITYSCAPES_PALETTE, np.uint8)[resize_nearest(ids, view_size)]
    overlay = blend(np.ascontiguousarray(camera[::2, ::2]), colour, 0.5)
    view = LiveView('127.0.0.1', 0, ['/bench0/image_raw', '/bench1/image_raw'])
    try:
        def unwatched_frame() -> None:  # what FramePipeline does per camera and frame for the view
            for topic in ('/bench0/image_raw', '/bench1/image_raw'):
                view.wanted(topic)
                view.offer_frame(topic, (1, 2), 'cam', {'image': camera, 'overlay': overlay, 'color_mask': colour})
        per_frame_us = _timed(unwatched_frame, 2000) * 1e3 / 2
    finally:
        view.close()
    options = ViewOptions()
    encode = {}
    for name, array in (('image', camera), ('overlay', overlay), ('color_mask', colour)):
        data, fmt = view_image(name, array, options)
        encode[name] = {'input': f'{array.shape[1]}x{array.shape[0]}', 'format': fmt, 'kB': len(data) / 1e3,
                        'ms': _timed(lambda n=name, a=array: view_image(n, a, options), 30)}
    return {'unwatched_us_per_camera_frame': per_frame_us, 'encode': encode, 'options': vars(options)}


def micro_report(result: dict) -> list[str]:
    """Table of the in-process figures."""
    lines = ['', f'In-process: with the live view on and nobody watching, the worker thread spends '
             f'{result["unwatched_us_per_camera_frame"]:.1f} us per camera and frame on it (asking whether '
             'anybody watches; nothing is copied or encoded). With a viewer, each picture costs the live '
             'view\'s own thread (default foxglove_* parameters, 1080p camera, visualization_scale 0.5):', '',
             '| picture | rendered size | sent as | encode ms (median) | kB per picture |', '|---|---|---|---|---|']
    for name, row in result['encode'].items():
        lines.append(f'| {name} | {row["input"]} | {row["format"]}, at most {result["options"]["max_width"]} px wide '
                     f'| {row["ms"]:.1f} | {row["kB"]:.0f} |')
    return lines


def run_foxglove(model: Path, domain: int, output: Path) -> str:
    """Run both parts, write ``foxglove.json`` under ``output`` and return the BENCHMARKS.md section."""
    seconds = float(os.environ.get('BENCH_FOXGLOVE_SECONDS', HEADLINE.seconds))
    repeats = int(os.environ.get('BENCH_FOXGLOVE_REPEATS', '2'))
    cameras, rate = (int(v) for v in os.environ.get('BENCH_FOXGLOVE_LOAD', '2x30').split('x'))
    case = Case(cameras, float(rate), seconds=seconds)
    runs: dict[str, list[dict]] = {impl: [] for impl, _ in IMPLS}
    for _ in range(repeats):
        for impl, label in IMPLS:
            domain = domain % 200 + 1
            row = run_case(impl, case, model, domain)
            runs[impl].append(row)
            print(f'{label:45s} delivered {row["delivered_fraction"]:6.1%}  '
                  f'p50 {row["latency_ms"]["p50"]:7.1f} ms  cpu {row["node_cpu_percent"]:5.0f} %', flush=True)
    in_process = micro()
    lines = [f'## Foxglove live view ({machine()["cpu"]}, {os.cpu_count()} cores)', '',
             *dds_report(runs, case), *micro_report(in_process)]
    section = '\n'.join(lines) + '\n'
    (output / 'foxglove.json').write_text(json.dumps({'machine': machine(), 'runs': runs, 'micro': in_process},
                                                     indent=1))
    print(section, flush=True)
    return section
