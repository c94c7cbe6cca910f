"""What the Foxglove live view costs the node: the headline load without it, with it and nobody
watching, and with one viewer of every picture (``python -m bench.run --foxglove``; part of ``make bench``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.run import Case, machine, run_case

HEADLINE = Case(2, 30.0)
IMPLS = (('seg_node', 'live view off (foxglove_port -1)'),
         ('seg_node-foxglove', 'live view on, no viewer'),
         ('seg_node-foxglove-viewer', 'live view on, one viewer of every picture'))


def report(rows: list[dict], case: Case = HEADLINE) -> str:
    """The BENCHMARKS.md section for these runs."""
    lines = [f'## Foxglove live view ({case.name}, mask + colour mask + overlay subscribed over ROS)', '',
             '| node | delivered | mask p50 ms | mask p99 ms | overlay p50 ms | node CPU % | node RSS MB '
             '| viewer: pictures/s | viewer: kB/s |',
             '|---|---|---|---|---|---|---|---|---|']
    for (_, label), row in zip(IMPLS, rows, strict=True):
        viewer = row.get('viewer')
        if viewer:
            seconds = viewer['seconds']
            pictures = sum(c['messages'] for c in viewer['channels'].values()) / seconds
            kbytes = sum(c['bytes'] for c in viewer['channels'].values()) / seconds / 1e3
            seen = f'{pictures:.0f} | {kbytes:.0f}'
        else:
            seen = '- | -'
        lat = row['latency_ms']
        lines.append(f'| {label} | {row["delivered_fraction"]:.1%} | {lat["p50"]:.1f} | {lat["p99"]:.1f} | '
                     f'{row["overlay_latency_ms"].get("p50", float("nan")):.1f} | {row["node_cpu_percent"]:.0f} | '
                     f'{row["node_rss_mb"]:.0f} | {seen} |')
    return '\n'.join(lines) + '\n'


def run_foxglove(model: Path, domain: int, output: Path) -> str:
    """Run the three cases, write ``foxglove.json`` under ``output`` and return the report section."""
    seconds = float(os.environ.get('BENCH_FOXGLOVE_SECONDS', HEADLINE.seconds))
    case = Case(HEADLINE.cameras, HEADLINE.rate_hz, seconds=seconds)
    rows = []
    for impl, label in IMPLS:
        domain = domain % 200 + 1
        rows.append(run_case(impl, case, model, domain))
        print(f'{label:45s} delivered {rows[-1]["delivered_fraction"]:6.1%}  '
              f'p50 {rows[-1]["latency_ms"]["p50"]:7.1f} ms  cpu {rows[-1]["node_cpu_percent"]:5.0f} %', flush=True)
    section = report(rows, case)
    (output / 'foxglove.json').write_text(json.dumps({'machine': machine(), 'cases': rows}, indent=1))
    print(section, flush=True)
    return section
