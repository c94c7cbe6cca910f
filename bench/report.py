"""Turn bench results into BENCHMARKS.md."""

from __future__ import annotations

import math
from pathlib import Path

# What the figures above are made of: the design choices of the data path, each measured when adopted.
DATA_PATH_NOTES = """## How the data path is built (what each choice bought, measured here)

- Frames are taken as their serialized CDR bytes (`raw=True` subscriptions) and read by
  `seg_node/msg/cdr.py` into a zero-copy view: no Python message is built (the "convert" stage is
  under 0.1 ms for a 6 MB frame). A payload the reader refuses (big-endian CDR, say) goes through
  rclpy's deserializer and is counted (`frames_deserialized` in /diagnostics).
- Outputs are rendered straight into persistent CDR buffers (header, fields, then the pixels the
  renderer writes) and published with `rcl_publish_serialized_message` through ctypes, which
  releases the GIL for the call (`seg_node/ros/transport.py`). rclpy's `publish` copies a message
  three times with the GIL held. Where the rcl library or the publisher's handle pointer cannot be
  found, the plain rclpy path runs instead; `data_path: plain` forces it. The ablation table above
  shows what this bought ("-plain" against "-full"). An earlier try published pre-serialized bytes
  through rclpy's `publish(bytes)` and lost the gain to a copy into a fresh buffer; rendering into
  buffers that live as long as the publisher removes both.
- Fast DDS publishes asynchronously (`RMW_FASTRTPS_PUBLICATION_MODE=ASYNCHRONOUS`, set by the node
  unless the environment already chose): `publish` returns once the sample is queued and Fast DDS's
  own thread moves it into shared memory ("-plain-sync" against "-plain").
- The colour mask and overlay are published at half the camera's size by default
  (`visualization_scale: 0.5`, a quarter of their bytes; an exact 2x shrink costs 0.3 ms at 1080p),
  and optionally at a capped rate (`visualization_max_rate_hz`); the class mask that planning
  reads stays at the camera's size and rate ("seg_node" against "seg_node-full").
- Normalization, argmax and confidence run inside the ONNX graph (`seg_node/model/wrap.py`): one
  byte per pixel crosses into and out of ONNX Runtime, and masks come from a graph without the
  confidence branch unless some camera publishes confidence.
- Colours are looked up at model resolution and upsampled once (nearest neighbour commutes with the
  lookup); the overlay is blended in place.
- glibc's mmap and trim thresholds are raised at start-up (`seg_node/runtime/memory.py`), so 6 MB
  buffers are reused instead of returned to the OS and faulted in again (about 1,500 page faults,
  3-4 ms, per fresh 6 MB buffer otherwise; `SEG_NODE_MALLOC_TUNING=0` turns it off).
- Only the newest frame per camera is kept, so under overload latency stays bounded while the
  baseline's grows ("Overload" above); outputs nobody subscribes to are not computed.
- ONNX Runtime's threads do not spin-wait: on 2 cores shared with DDS and the camera side, spinning
  cut delivered frames from 56 % to 25-31 %. One intra-op thread instead of two made no difference
  beyond the noise here.
- Tried and not adopted: a second thread that publishes while the next frame is inferred (no
  throughput gain while rclpy held the GIL to copy messages, and latency grew).
- GPU: nothing in this path assumes the CPU provider: the same buffers and threads serve CUDA and
  TensorRT (the engine hands back uint8 masks whatever runs the model). The TensorRT provider runs
  with fp16 and a persistent engine cache (`seg_build_engine MODEL` builds it ahead of time), the
  CUDA provider with I/O binding. CUDA graphs are not used yet.
"""

# Fleet labelling on Ray (issue 14): measured by `make bench-fleet` (bench/fleet.py), which prints these
# tables; kept here so that `make bench` keeps the section when it writes BENCHMARKS.md again.
FLEET_NOTES = """## Fleet labelling

Measured by `make bench-fleet` (`bench/fleet.py`) on AMD EPYC (`/proc/cpuinfo` model name; 2 cores,
no GPU), 2026-12-01 16:59 UTC, Ray 2.60.0, ONNX Runtime 1.31.1, on a local Ray cluster of this
machine (start-up 2.6 s, not in the figures). Four synthetic one-camera bags of 512x256 rgb8 frames
(sqlite3), labelled into bags with mask, colour mask and overlay; shards of half a bag, so every bag
is split over workers and merged. Best of 3 rounds; the machine is shared, so compare ratios.
"Start-up" is the time before the first shard starts: actors and engines for the fleet, the
model load of every bag for `seg_bag label`. "No Ray" runs the fleet worker's own code on the same
shards in one process.

ResNet50 FCN (random weights, exported at 128x256 like `bench/engine_micro.py`), 4 bags x 12 frames:

| run | frames/s | frames/s after start-up | per worker while busy | start-up s |
|---|---|---|---|---|
| `seg_bag label`, bag after bag, 2 threads | 4.25 | 6.17 | - | 3.5 |
| fleet worker code, no Ray, 1 thread | 3.03 | 3.22 | - | 1.0 |
| fleet worker code, no Ray, 2 threads | 5.11 | 5.60 | - | 0.8 |
| fleet, 1 worker x 1 CPU | 2.59 | 3.65 | 3.2 | 5.3 |
| fleet, 1 worker x 2 CPU | 3.17 | 4.48 | 4.3 | 4.4 |
| fleet, 2 workers x 1 CPU | 3.31 | 4.67 | 2.4, 2.3 | 4.2 |

Tiny contract model (nearest palette colour, stride 4), 4 bags x 60 frames: `seg_bag label` 229
frames/s (232 after start-up); fleet worker code without Ray 131 (1 thread) and 137 (2 threads);
fleet 1 worker x 1 CPU 72, 1 x 2 CPU 44, 2 x 1 CPU 44 frames/s after start-up.

What this says:
- **Ray's cost per frame.** With one CPU per worker the engine runs as fast in a Ray actor as in a
  plain process (3.2 frames/s both). With both cores for one engine it loses about 20 % (4.3 against
  5.6 frames/s): Ray's own processes (raylet, GCS, Ray Data's executor, stats and autoscaling
  actors) and the merge tasks take CPU from the engine's two threads. Against `seg_bag label` with
  the same threads, the fleet adds 61 ms per ResNet50 frame (162 -> 223 ms) and 19 ms per tiny frame,
  plus a fixed start-up of about 2-5 s per run (actors, engines) and the cluster's 2-3 s.
- **Scaling on this machine.** 1 -> 2 workers (1 CPU each): 1.28x with ResNet50 (4.67 against 3.65
  frames/s; the two workers reach 73 % of twice one worker's rate, because they now share the two
  cores with Ray's processes), 0.60x with the tiny model, whose frames are all I/O and bookkeeping.
  On two cores a fleet cannot beat one process that already uses both: it is built for many cores
  and many machines, where each worker adds its own cores.
- **What a worker does besides the engine.** Per frame it also counts class pixels, scores the frame
  against the ground truth when the bag has it (these bags do), keeps worst-frame thumbnails and
  writes the Parquet row; per shard it opens the bag and writes a part. On the tiny model that is
  most of the 131 against 232 frames/s; on ResNet50 it is lost in the model's time.
- **Bytes.** Per 512x256 frame, 0.53 MB read and 1.45 MB written (the input copied, mask, colour
  mask, overlay); at 1080p rgb8, 6.2 MB read and about 21 MB written. The merge copies each bag of
  more than one shard once more (120-200 MB/s here, in zero-CPU Ray tasks); a bag of one shard
  (`--shard-frames`, default 300 camera frames) is renamed into place without a copy.

**Projection for a cluster of G GPUs (not measured: no GPU was lent to this session).** The workers
share nothing but storage: each reads its own time range of a bag and writes its own part, and the
driver gets one small status row per shard and plans from bag metadata. So the fleet's rate is
G x (one GPU worker's frames/s), until the shared storage saturates:
frames/s ≈ min(G x f_worker, read bandwidth / bytes read per frame, write bandwidth / bytes written
per frame). f_worker is the engine's rate on one GPU (TensorRT fp16, see "GPU"; `bench/gpu_bench.py`
measures it) less the per-frame work above, which runs on the worker's CPUs, so give each GPU
worker a few (`--cpus-per-worker`). For example, storage that sustains 2 GB/s of writes bounds
`fleet label` at 1080p to about 2000 / 21 ≈ 95 frames/s (about 48 for bags merged from several
shards, whose outputs are written twice), however many GPUs there are; `fleet eval`
writes no bags and is bounded by reads: about 2000 / 8.3 ≈ 240 frames/s at 2 GB/s for 1080p images
with their ground truth. Beyond that, more GPUs only help with faster storage, fewer outputs
(`fleet eval`, or a label run without overlay), or compressed inputs. Each GPU worker also pays its
engine's start-up once per run (minutes for a TensorRT build, unless the engine cache on that node
is warm: `seg_build_engine`).
"""


def _fmt(value: float, digits: int = 1) -> str:
    return 'n/a' if value is None or (isinstance(value, float) and math.isnan(value)) else f'{value:.{digits}f}'


def _ratio(ours: float, theirs: float) -> str:
    if not ours or not theirs or math.isnan(ours) or math.isnan(theirs):
        return 'n/a'
    return f'{theirs / ours:.1f}x'


def _stages(case: dict) -> dict[str, float]:
    """A case's median stage times, keyed by stage name."""
    return {k.removesuffix('_ms_p50'): v for k, v in case['stages_ms'].items()}


def _outside_model(stages: dict[str, float]) -> float:
    if 'not_inference' in stages:
        return stages['not_inference']
    return sum(v for k, v in stages.items() if k != 'inference')


def _check(ok: bool) -> str:
    return 'met' if ok else '**missed**'


ABLATION_ROWS = (
    ('seg_node', 'shipped defaults: visualizations at half size'),
    ('seg_node-full', 'every output at full size'),
    ('seg_node-full-plain', '... and rclpy messages instead of serialized CDR, in and out'),
    ('seg_node-full-plain-sync', '... and synchronous publication (what the node did before)'),
    ('floor', 'the floor: middleware only, full-size outputs, serialized path'),
)


def _ablation(by_key: dict) -> list[str]:
    """What each part of the data path buys, on the headline case."""
    name = '2 cam rgb8 30 Hz'
    rows = [(impl, label, by_key[(impl, name)]) for impl, label in ABLATION_ROWS if (impl, name) in by_key]
    if len(rows) < 3:
        return []
    lines = ['', f'## What each part of the data path buys ({name}, mask + colour mask + overlay subscribed)',
             '', '| node | what differs | delivered | mask latency p50 / p99 ms | overlay latency p50 / p99 ms '
             '| publish ms per frame | node CPU ms per frame |', '|---|---|---|---|---|---|---|']
    for impl, label, case in rows:
        publish = _stages(case).get('publish', float('nan'))
        overlay = case.get('overlay_latency_ms') or {'p50': float('nan'), 'p99': float('nan')}
        lines.append(f'| {impl} | {label} | {case["delivered_fraction"]:.1%} | {_fmt(case["latency_ms"]["p50"])} / '
                     f'{_fmt(case["latency_ms"]["p99"])} | {_fmt(overlay["p50"])} / {_fmt(overlay["p99"])} | '
                     f'{_fmt(publish, 2)} | {_fmt(cpu_ms_per_frame(case))} |')
    lines += ['', '"Publish" is the worker thread\'s time in publishing a frame\'s outputs; "node CPU" counts '
              'every thread of the process (Fast DDS\'s included) per delivered frame.']
    return lines


def cpu_ms_per_frame(case: dict) -> float:
    """The node's CPU time (all threads) per delivered frame, in ms."""
    rate = case['output_rate_hz']
    return case['node_cpu_percent'] * 10 / rate if rate else float('nan')


def _targets(results: dict, by_key: dict) -> list[str]:
    """Issue 18's CPU targets against this run's figures."""
    full = by_key.get(('seg_node-full', '2 cam rgb8 30 Hz'))
    shipped = by_key.get(('seg_node', '2 cam rgb8 30 Hz'))
    floor = by_key.get(('floor', '2 cam rgb8 30 Hz'))
    if not full or not shipped:
        return []
    rows = []

    def latency_rows(case: dict, label: str, frames_goal: float) -> None:
        lat = case['latency_ms']
        rows.append((f'{label}: frames delivered', f'>= {frames_goal:.0%}', f'{case["delivered_fraction"]:.1%}',
                     _check(case['delivered_fraction'] >= frames_goal)))
        rows.append((f'{label}: latency p50 / p99', '<= 25 / 50 ms', f'{lat["p50"]:.1f} / {lat["p99"]:.1f} ms',
                     _check(lat['p50'] <= 25 and lat['p99'] <= 50)))

    latency_rows(full, '2 cameras x 30 Hz, every output at full resolution', 0.95)
    rows.append(('2 cameras x 30 Hz, shipped defaults: frames delivered', '>= 98 %',
                 f'{shipped["delivered_fraction"]:.1%}', _check(shipped['delivered_fraction'] >= 0.98)))
    if floor:
        ratio = shipped['latency_ms']['p50'] / floor['latency_ms']['p50']
        rows.append(('... latency p50 against the floor\'s', '<= 1.5x',
                     f'{shipped["latency_ms"]["p50"]:.1f} / {floor["latency_ms"]["p50"]:.1f} ms = {ratio:.2f}x',
                     _check(ratio <= 1.5)))
    four = by_key.get(('seg_node', '4 cam rgb8 30 Hz mask'))
    four_floor = by_key.get(('floor', '4 cam rgb8 30 Hz mask'))
    if four and four_floor:
        share = four['delivered_fraction'] / four_floor['delivered_fraction']
        rows.append(('4 cameras x 30 Hz, mask only: delivered against the floor', '>= 90 %',
                     f'{four["delivered_fraction"]:.1%} / {four_floor["delivered_fraction"]:.1%} = {share:.0%}',
                     _check(share >= 0.9)))
    stages = _stages(full)
    if stages:
        outside = _outside_model(stages)
        rows.append(('everything but the model per frame, full outputs (worker stages: convert + preprocess '
                     '+ render + publish)', '<= 8 ms', f'{outside:.1f} ms', _check(outside <= 8)))
        held = sum(stages.get(k, 0.0) for k in ('convert', 'preprocess', 'render'))
        rows.append(('... of it holding the GIL (upper bound: convert + preprocess + render; the rcl publish '
                     'runs without it)', '<= 4 ms', f'{held:.1f} ms', _check(held <= 4)))
        floor_cpu = f', floor {cpu_ms_per_frame(floor):.1f} ms' if floor else ''
        rows.append(('for scale: node CPU per frame, every thread (Fast DDS\'s included)', '',
                     f'{cpu_ms_per_frame(full):.1f} ms{floor_cpu}', ''))
    logits = by_key.get(('seg_node', '2 cam rgb8 30 Hz mask logits7'))
    if logits:
        latency_rows(logits, '2 cameras x 30 Hz, mask only, 7-class float logits at 960x540', 0.95)
    tiny = results.get('engine_tiny')
    if tiny:
        rows.append(('tiny model: engine (masks) against a bare ONNX Runtime session', '<= 1.5x',
                     f'{tiny["engine_ms"]:.2f} / {tiny["bare_ms"]:.2f} ms = {tiny["engine_ms"] / tiny["bare_ms"]:.2f}x',
                     _check(tiny['engine_ms'] <= 1.5 * tiny['bare_ms'])))
    lines = ['', '## Targets (issue 18, this 2-core CPU machine) against this run', '',
             '| target | goal | this run | |', '|---|---|---|---|']
    lines += [f'| {a} | {b} | {c} | {d} |' for a, b, c, d in rows]
    lines += ['', 'Stage times are the worker thread\'s wall time per frame (medians from /diagnostics). '
              'OpenCV, ONNX Runtime and the serialized publish release the GIL; the GIL figure counts the '
              'whole of each stage that calls them, so it is an upper bound. Node CPU per frame counts '
              'every thread of the process over the frames it delivered.', '',
              'Where a target is missed, why (measured here): the figures compete for two cores with the '
              'playback and monitor processes, which move the same bytes, so the tails (p99) are set by '
              'scheduling more than by the node: the floor itself, which does nothing but move bytes, '
              'has its own p99 in the table above. With every output at full size each frame is 6 MB in '
              'and 14 MB out; the shipped defaults (pictures at half size) are the configuration meant '
              'for two cameras on two cores. With the 7-class float-logits model the model is the '
              'largest stage (see "inference" in the stage table: the 960x540 convolution and the '
              'argmax over 7 x 960 x 540 scores), and the frames of a two-camera batch wait for each '
              'other\'s inference. The GIL figure is an upper bound: the stages it adds up spend most '
              'of their time in OpenCV calls that release the GIL; no direct GIL measurement is made.']
    return lines


def write_report(results: dict, path: Path) -> None:
    """Write the markdown tables of a bench run."""
    m = results['machine']
    lines = [
        '# Benchmarks',
        '',
        f'Measured by `{results["command"]}` on {m["cpu"]} ({m["cores"]} cores, no GPU), {m["date"]}; '
        f'Python {m["python"]}, ONNX Runtime {m["onnxruntime"]}, ROS 2 Kilted wheels, {m["rmw"]}, '
        'through real DDS on loopback (Fast DDS profile `config/fastdds_localhost.xml`). Frames are '
        '1920x1080; the model is the tiny contract model (nearest palette colour, input 960x540, output '
        'stride 8), so the figures isolate everything that is not the network. Latency is output receipt '
        'minus the input stamp (set at send time). "x baseline" compares with `bench/baseline_node.py` '
        'measured in the same run. The machine is shared and noisy: compare ratios, not absolutes.',
        '',
        '"floor" is `bench/floor_node.py`: the same topics, QoS and middleware, no model and no '
        'rendering, publishing output-sized messages for every frame, over the same data path as '
        'seg_node (serialized take and publish); "p50 / floor" is how far a node is from that physical '
        'limit. For JPEG input the floor does not decode the frames, so there it is the transport alone. '
        '"seg_node" runs the shipped defaults (colour mask and overlay at half size); "seg_node-full" '
        'publishes every output at the camera\'s size.',
        '',
        '| case | node | delivered | output Hz | latency p50 / p90 / p99 / max ms | node CPU % | RSS MB '
        '| p50 vs baseline | p50 / floor |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    by_key = {(r['impl'], r['name']): r for r in results['cases']}
    for r in results['cases']:
        lat = r['latency_ms']
        base = by_key.get(('baseline', r['name']))
        ratio = _ratio(lat['p50'], base['latency_ms']['p50']) if r['impl'].startswith('seg_node') and base else ''
        floor = by_key.get(('floor', r['name']))
        above = (f'{lat["p50"] / floor["latency_ms"]["p50"]:.2f}x' if floor and r['impl'] != 'floor'
                 and floor['latency_ms']['p50'] > 0 else '')
        lines.append(
            f'| {r["name"]} | {r["impl"]} | {r["delivered_fraction"]:.1%} | {_fmt(r["output_rate_hz"])} | '
            f'{_fmt(lat["p50"])} / {_fmt(lat["p90"])} / {_fmt(lat["p99"])} / {_fmt(lat["max"])} | '
            f'{_fmt(r["node_cpu_percent"], 0)} | {_fmt(r["node_rss_mb"], 0)} | {ratio} | {above} |')
    lines += ['', '## Where the time goes (median ms per frame, reported by each node on /diagnostics)', '',
              'seg_node times each stage; the baseline reports its model call and everything else.', '',
              '| case | node | convert | preprocess | inference | render | publish | all but inference '
              '| all but inference vs baseline |',
              '|---|---|---|---|---|---|---|---|---|']
    for r in results['cases']:
        stages = _stages(r)
        if not stages:
            continue
        outside = _outside_model(stages)
        base = by_key.get(('baseline', r['name']))
        ratio = ''
        if r['impl'].startswith('seg_node') and base and base['stages_ms']:
            base_outside = _outside_model(_stages(base))
            ratio = f'{base_outside / outside:.1f}x less' if outside else ''
        cells = [_fmt(stages.get(k, float('nan')), 2) for k in ('convert', 'preprocess', 'inference', 'render',
                                                               'publish')]
        lines.append(f'| {r["name"]} | {r["impl"]} | ' + ' | '.join(cells) + f' | {_fmt(outside, 2)} | {ratio} |')
    if results.get('overload'):
        lines += ['', '## Overload: input faster than the node', '',
                  'Latency p50 (ms) in each second of the run, '
                  f'{results["overload"][0]["name"]}:', '',
                  '| second | ' + ' | '.join(r['impl'] for r in results['overload']) + ' |',
                  '|---|' + '---|' * len(results['overload'])]
        series = [r['latency_p50_per_second_ms'] for r in results['overload']]
        for second in range(max(len(s) for s in series)):
            lines.append(f'| {second} | ' + ' | '.join(_fmt(s[second]) if second < len(s) else '' for s in series)
                         + ' |')
    if results.get('peak'):
        tried = ', '.join(f"{r['case']['rate_hz']:g} Hz -> {r['delivered_fraction']:.0%}"
                          for r in results['peak']['runs'])
        lines += ['', f"Peak rate, 1 camera rgb8, <= 5 % frames lost: **{results['peak']['rate_hz']:.0f} Hz** "
                  f'(rates tried: {tried}).']
    lines += _ablation(by_key)
    lines += _targets(results, by_key)
    for extra in results.get('sections', []):
        lines += ['', extra]
    lines += ['', DATA_PATH_NOTES.rstrip()]
    lines += ['', FLEET_NOTES.rstrip()]
    lines += ['', '## GPU', '',
              'No GPU was available to the session that produced this file, so no GPU figures are given '
              '(none are estimated). The TensorRT / CUDA paths are described in the README.', '']
    path.write_text('\n'.join(lines))
