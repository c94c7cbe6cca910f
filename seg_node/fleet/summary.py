"""What a fleet run reports: bag by bag, per worker, and the fleet's confusion matrices and scores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seg_node.runtime.metrics import ConfusionMatrix

EXIT_OK = 0
EXIT_SOME_FAILED = 1


@dataclass
class FleetSummary:
    """What a run did, bag by bag, and the fleet's scores (complete bags of earlier runs included)."""

    mode: str
    out: str
    model: str
    model_sha256: str
    reference: str = ''
    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    bags: dict[str, dict[str, Any]] = field(default_factory=dict)
    frames: int = 0  # labelled in this run
    wall_s: float = 0.0  # from the first shard handed to Ray to the last result
    cluster_start_s: float = 0.0
    startup_s: float = 0.0  # from handing the shards to Ray until a worker started the first one (actors, engines)
    merge_s: float = 0.0  # time the merge tasks spent merging shards into bags (beside the workers' labelling)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    retries: int = 0
    confusion: list | None = None  # fleet confusion matrix: every bag's, summed
    reference_confusion: list | None = None
    agreement: list | None = None
    started: str = ''

    @property
    def failed(self) -> list[str]:
        """Names of the bags that failed."""
        return [name for name, bag in self.bags.items() if bag['status'] == 'failed']

    @property
    def exit_code(self) -> int:
        """0 when every bag is complete, 1 when some failed."""
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    @property
    def frames_per_second(self) -> float:
        """Frames of this run per wall-clock second."""
        return self.frames / self.wall_s if self.wall_s > 0 else float('nan')

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data, with the scores computed."""
        data = {k: v for k, v in vars(self).items()}
        data.update(failed=self.failed, exit_code=self.exit_code, frames_per_second=_finite(self.frames_per_second))
        for key in ('confusion', 'reference_confusion', 'agreement'):
            matrix = getattr(self, key)
            data[f'{key}_metrics'] = metrics_json(matrix) if matrix is not None else None
        return data


def metrics_json(matrix: list | np.ndarray) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU of a confusion matrix (NaN: class never seen)."""
    confusion = ConfusionMatrix(len(matrix))
    confusion.merge(np.asarray(matrix, np.int64))
    m = confusion.compute()
    return {'miou': _finite(m.mean_iou), 'pixel_accuracy': _finite(m.pixel_accuracy),
            'iou': [_finite(v) for v in m.iou], 'pixels': m.pixels}


def _finite(value: float) -> float | None:
    """JSON has no NaN: a class never seen (or no pixels at all) is null."""
    return None if math.isnan(value) else value


def format_summary(summary: FleetSummary) -> str:
    """The summary as the few lines a terminal shows."""
    counts = {status: sum(1 for b in summary.bags.values() if b['status'] == status)
              for status in ('done', 'skipped', 'failed')}
    lines = [f'fleet {summary.mode}: {len(summary.bags)} bags: {counts["done"]} done, {counts["skipped"]} skipped '
             f'(complete and verified), {counts["failed"]} failed']
    if summary.frames:
        per_worker = ', '.join(f'{w["frames"] / w["seconds"]:.1f}' for w in summary.workers.values() if w['seconds'])
        lines.append(f'{summary.frames} frames in {summary.wall_s:.1f} s: {summary.frames_per_second:.1f} frames/s on '
                     f'{len(summary.workers)} worker(s) ({per_worker} frames/s each while busy); '
                     f'{summary.retries} worker retries')
    data = summary.to_json()
    if data['confusion_metrics'] and data['confusion_metrics']['pixels']:
        m = data['confusion_metrics']
        lines.append(f'mIoU {m["miou"]:.4f}   pixel accuracy {m["pixel_accuracy"]:.4f}   ({m["pixels"]} pixels, '
                     'every complete bag with ground truth)')
    if data['agreement_metrics'] and data['agreement_metrics']['pixels']:
        m = data['agreement_metrics']
        lines.append(f'agreement with the reference model: {m["pixel_accuracy"]:.4f} of pixels, mean per-class IoU '
                     f'{m["miou"]:.4f}')
    for name in summary.failed:
        lines.append(f'failed: {name}: {summary.bags[name]["reason"]}')
    lines.append(f'report: {Path(summary.out) / "report.html"}; summary: {Path(summary.out) / "summary.json"}')
    return '\n'.join(lines)
