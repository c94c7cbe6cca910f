"""Turn bench results into BENCHMARKS.md."""

from __future__ import annotations

import math
from pathlib import Path

# What the figures above are made of: the design choices of the data path, each measured when adopted.
DATA_PATH_NOTES = """## How the data path is built (what each choice bought, measured here)

- Normalization, argmax and confidence run inside the ONNX graph (`seg_node/model/wrap.py`): one
  byte per pixel crosses into and out of ONNX Runtime, no numpy softmax or argmax.
- Common encodings are read as zero-copy views; outputs are rendered straight into reusable
  `array.array` buffers that back the outgoing messages (assigning one is O(1); building a 6 MB
  message from `bytes` costs milliseconds).
- Colours are looked up at model resolution and upsampled once (nearest neighbour commutes with the
  lookup); the overlay is blended in place.
- Only the newest frame per camera is kept, so under overload latency stays bounded while the
  baseline's grows ("Overload" above); outputs nobody subscribes to are not computed.
- ONNX Runtime's threads do not spin-wait: on 2 cores shared with DDS and the camera side, spinning
  cut delivered frames from 56 % to 25-31 %.
- Tried and not adopted: a second thread that publishes while the next frame is inferred (no
  throughput gain: rclpy holds the GIL while it copies a message, and latency grew); publishing
  pre-serialized CDR bytes (about 1 ms less per 6 MB message, but building them costs a copy into a
  fresh buffer whose page faults eat the gain).
- GPU: the TensorRT provider runs with fp16 and a persistent engine cache (`seg_build_engine MODEL`
  builds it ahead of time), the CUDA provider with I/O binding. CUDA graphs are not used yet.
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


def _targets(results: dict, by_key: dict) -> list[str]:
    """The issue's CPU targets against this run's figures."""
    head = by_key.get(('seg_node', '2 cam rgb8 30 Hz'))
    base = by_key.get(('baseline', '2 cam rgb8 30 Hz'))
    if not head:
        return []
    lat = head['latency_ms']
    stages = _stages(head)
    outside = _outside_model(stages) if stages else float('nan')
    rows = [
        ('frames with a mask, 2 cameras x 30 Hz', '>= 95 %', f'{head["delivered_fraction"]:.1%}',
         _check(head['delivered_fraction'] >= 0.95)),
        ('latency p50', '<= 25 ms', f'{lat["p50"]:.1f} ms', _check(lat['p50'] <= 25)),
        ('latency p99', '<= 50 ms', f'{lat["p99"]:.1f} ms', _check(lat['p99'] <= 50)),
        ('everything but the model, per frame', '<= 10 ms', f'{outside:.1f} ms', _check(outside <= 10)),
    ]
    if base and base['stages_ms']:
        base_outside = _outside_model(_stages(base))
        rows.append(('... compared with the baseline', '>= 4x less', f'{base_outside / outside:.1f}x less',
                     _check(base_outside / outside >= 4)))
    one = by_key.get(('seg_node', '1 cam rgb8 30 Hz'))
    if one:
        rows.append(('for scale: 1 camera x 30 Hz, frames / p50 / p99', '', f'{one["delivered_fraction"]:.1%} / '
                     f'{one["latency_ms"]["p50"]:.1f} / {one["latency_ms"]["p99"]:.1f} ms', ''))
    for r in results.get('engine_micro', []):
        batch_key = next(k for k in r if k.startswith('engine_batch'))
        rows.append((f'{r["algorithm"]}: engine vs bare ONNX Runtime', 'within 10 %',
                     f'{r["engine_vs_bare_ort"]:.2f}x', _check(r['engine_vs_bare_ort'] <= 1.10)))
        rows.append((f'{r["algorithm"]}: batch per frame vs one at a time', 'never slower',
                     f'{r[batch_key] / r["engine_ms"]:.2f}x', _check(r[batch_key] <= r['engine_ms'] * 1.03)))
    lines = ['', '## Targets (issue 5, this 2-core CPU machine) against this run', '',
             '| target | goal | this run | |', '|---|---|---|---|']
    lines += [f'| {a} | {b} | {c} | {d} |' for a, b, c, d in rows]
    lines += ['', '"Never slower" allows 3 % for timing noise.', '',
              'Why the two-camera figures fall short here: every frame moves about 20 MB through rclpy '
              '(a 6 MB input and 14 MB of mask, colour mask and overlay), and publishing those outputs costs '
              '8-10 ms per frame while holding the GIL (see "publish" above), on two cores that the playback '
              'and monitor processes share, each moving the same bytes. One camera at 30 Hz stays within the '
              'latency budget; the measured ideas that did not help (a separate publishing thread, '
              'serialized publishing) are described below, "How the data path is built".']
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
        'rendering, publishing output-sized messages for every frame; "p50 / floor" is how far a node is '
        'from that physical limit.',
        '',
        '| case | node | delivered | output Hz | latency p50 / p90 / p99 / max ms | node CPU % | RSS MB '
        '| p50 vs baseline | p50 / floor |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    by_key = {(r['impl'], r['name']): r for r in results['cases']}
    for r in results['cases']:
        lat = r['latency_ms']
        base = by_key.get(('baseline', r['name']))
        ratio = _ratio(lat['p50'], base['latency_ms']['p50']) if r['impl'] == 'seg_node' and base else ''
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
        if r['impl'] == 'seg_node' and base and base['stages_ms']:
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
    lines += _targets(results, by_key)
    for extra in results.get('sections', []):
        lines += ['', extra]
    lines += ['', DATA_PATH_NOTES.rstrip()]
    lines += ['', '## GPU', '',
              'No GPU was available to the session that produced this file, so no GPU figures are given '
              '(none are estimated). The TensorRT / CUDA paths are described in the README.', '']
    path.write_text('\n'.join(lines))
