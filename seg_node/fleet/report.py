"""The fleet report: one self-contained HTML file next to the outputs (thumbnails embedded).

It shows what people check after a run: how many bags were done, skipped or failed (with the
reason), per-class IoU bars and per-bag mIoU against ground truth, per-class agreement with a
reference model, the worst frames as thumbnails (camera | mask | truth or reference), and
throughput per worker and in total. Plain HTML and CSS bars: no plotting library needed.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from seg_node.fleet.plan import Layout, load_record
from seg_node.fleet.summary import FleetSummary

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 2px 10px; text-align: left; }
th { border-bottom: 1px solid #999; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { background: #eee; width: 320px; height: 14px; position: relative; }
.bar span { display: block; height: 100%; background: #4a7fc1; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: middle; }
.failed { color: #b00020; } .muted { color: #777; }
figure { display: inline-block; margin: 6px; vertical-align: top; } figcaption { font-size: 12px; max-width: 576px; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _num(value: float | None, digits: int = 3) -> str:
    return '-' if value is None or (isinstance(value, float) and math.isnan(value)) else f'{value:.{digits}f}'


def _bar(value: float | None) -> str:
    width = 0.0 if value is None or math.isnan(value) else max(0.0, min(1.0, value)) * 100
    return f'<div class="bar"><span style="width:{width:.1f}%"></span></div>'


def _class_rows(metrics: dict, classes: tuple[str, ...], palette: tuple, counts: list[int]) -> list[str]:
    rows = []
    for i, name in enumerate(classes):
        colour = palette[i] if i < len(palette) else (128, 128, 128)
        iou = metrics['iou'][i] if i < len(metrics['iou']) else None
        rows.append(f'<tr><td><span class="swatch" style="background:rgb{tuple(colour)}"></span>{_e(name)}</td>'
                    f'<td>{_bar(iou)}</td><td class="num">{_num(iou)}</td><td class="num">{counts[i]}</td></tr>')
    return rows


def _class_table(title: str, note: str, matrix: list, metrics: dict, summary: FleetSummary) -> list[str]:
    counts = [sum(row) for row in matrix]
    return [f'<h2>{_e(title)}</h2>', f'<p>{note}</p>',
            f'<p><b>mIoU {_num(metrics["miou"], 4)}</b>, pixel accuracy {_num(metrics["pixel_accuracy"], 4)} '
            f'over {metrics["pixels"]} pixels</p>',
            '<table><tr><th>class</th><th></th><th>IoU</th><th>pixels</th></tr>',
            *_class_rows(metrics, summary.classes, summary.palette, counts), '</table>']


def _throughput(summary: FleetSummary) -> list[str]:
    if not summary.frames:
        return ['<h2>Throughput</h2><p class="muted">Nothing was labelled in this run (every bag was complete or '
                'failed before labelling).</p>']
    lines = ['<h2>Throughput</h2>',
             f'<p>{summary.frames} frames in {summary.wall_s:.1f} s: <b>{summary.frames_per_second:.2f} frames/s</b> '
             f'in total on {len(summary.workers)} worker(s), including {summary.startup_s:.1f} s before the first '
             f'shard started (actors and engines); cluster start {summary.cluster_start_s:.1f} s (not included). '
             f'Merge tasks spent {summary.merge_s:.1f} s merging shards into bags while the workers went on; '
             f'{summary.retries} shard retries after a worker died.</p>',
             '<table><tr><th>worker</th><th>shards</th><th>frames</th><th>busy s</th><th>frames/s while busy</th>'
             '<th>provider</th><th>threads</th></tr>']
    for worker, w in sorted(summary.workers.items()):
        fps = w['frames'] / w['seconds'] if w['seconds'] else float('nan')
        lines.append(f'<tr><td>{_e(worker)}</td><td class="num">{w["shards"]}</td><td class="num">{w["frames"]}</td>'
                     f'<td class="num">{w["seconds"]:.1f}</td><td class="num">{_num(fps, 2)}</td>'
                     f'<td>{_e(w.get("provider", ""))}</td><td class="num">{w.get("cpu_threads", "")}</td></tr>')
    lines.append('</table>')
    return lines


def _bags(summary: FleetSummary) -> list[str]:
    lines = ['<h2>Bags</h2>', '<table><tr><th>bag</th><th>status</th><th>frames</th><th>mIoU</th><th></th>'
             '<th>agreement</th><th>reason / input</th></tr>']
    for name, bag in summary.bags.items():
        miou = (bag.get('confusion_metrics') or {}).get('miou')
        agreement = (bag.get('agreement_metrics') or {}).get('pixel_accuracy')
        css = ' class="failed"' if bag['status'] == 'failed' else ''
        lines.append(f'<tr{css}><td>{_e(name)}</td><td>{_e(bag["status"])}</td>'
                     f'<td class="num">{bag.get("frames", "")}</td><td class="num">{_num(miou)}</td>'
                     f'<td>{_bar(miou) if miou is not None else ""}</td><td class="num">{_num(agreement)}</td>'
                     f'<td>{_e(bag.get("reason") or bag["input"])}</td></tr>')
    lines.append('</table>')
    return lines


def _worst(layout: Layout, summary: FleetSummary, keep: int) -> list[str]:
    entries = []
    for name, bag in summary.bags.items():
        if bag['status'] in ('done', 'skipped'):
            record = load_record(layout, name) or {}
            entries += record.get('worst', [])
    entries.sort(key=lambda e: -e['badness'])
    if not entries:
        return []
    compared = summary.agreement is not None
    truth = summary.confusion is not None
    panels = ' | '.join(['camera', 'mask', *(['reference'] if compared else []), *(['truth'] if truth else [])])
    how = ('least agreement with the reference model' if compared
           else 'lowest per-frame mIoU against the ground truth' if truth else 'lowest mean confidence')
    lines = ['<h2>Worst frames</h2>', f'<p>By {how}; each thumbnail is {panels}.</p>']
    for entry in entries[:keep]:
        data = base64.b64encode((layout.out / entry['file']).read_bytes()).decode()
        scores = [f'agreement {_num(entry.get("agreement"))}' if compared else '',
                  f'mIoU {_num(entry.get("miou"))}' if truth else '',
                  f'confidence {_num(entry.get("confidence_mean"))}']
        score = ', '.join(text for text in scores if text)
        lines.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_e(entry["topic"])}">'
                     f'<figcaption>{_e(entry["bag"])} {_e(entry["topic"])} stamp {entry["stamp_ns"]}: {score}'
                     '</figcaption></figure>')
    return lines


def write_report(layout: Layout, summary: FleetSummary, *, worst: int = 12) -> Path:
    """Write ``report.html`` under the run's output folder and return its path."""
    data = summary.to_json()
    counts = {s: sum(1 for b in summary.bags.values() if b['status'] == s) for s in ('done', 'skipped', 'failed')}
    model = Path(summary.model).name
    body = [f'<h1>seg_node fleet {_e(summary.mode)}: {len(summary.bags)} bags</h1>',
            f'<p>Model <b>{_e(model)}</b> (SHA-256 {_e(summary.model_sha256[:16])}…)'
            + (f', reference model <b>{_e(Path(summary.reference).name)}</b>' if summary.reference else '')
            + f'; run started {_e(summary.started)}. {counts["done"]} done, {counts["skipped"]} skipped (complete '
            f'and verified by an earlier run), <span class="{"failed" if counts["failed"] else ""}">'
            f'{counts["failed"]} failed</span>.</p>']
    if data['confusion_metrics'] and data['confusion_metrics']['pixels']:
        body += _class_table('Per-class IoU against the ground truth',
                             'One confusion matrix per shard, summed over every complete bag (never an average of '
                             'per-bag or per-shard scores).', summary.confusion, data['confusion_metrics'], summary)
    if data['reference_confusion_metrics'] and data['reference_confusion_metrics']['pixels']:
        body += _class_table('Reference model against the ground truth', 'The same frames, scored the same way.',
                             summary.reference_confusion, data['reference_confusion_metrics'], summary)
    if data['agreement_metrics'] and data['agreement_metrics']['pixels']:
        body += _class_table('Per-class agreement with the reference model',
                             'IoU of the two models\' masks per class (the reference taken as truth); "pixel '
                             'accuracy" is the fraction of pixels where they agree.', summary.agreement,
                             data['agreement_metrics'], summary)
    body += _bags(summary)
    body += _worst(layout, summary, worst)
    body += _throughput(summary)
    body.append(f'<p class="muted">Per-frame results: frames/*.parquet; summary: summary.json.</p>'
                f'<!-- {_e(json.dumps({"exit_code": summary.exit_code}))} -->')
    page = ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>seg_node fleet report</title>'
            f'<style>{_STYLE}</style></head><body>\n' + '\n'.join(body) + '\n</body></html>\n')
    tmp = layout.report.with_name(f'.{layout.report.name}.tmp')
    tmp.write_text(page)
    tmp.replace(layout.report)
    return layout.report
