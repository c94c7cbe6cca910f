"""The fleet driver: plan the shards, run them on Ray Data, merge each bag, resume, summarize.

The driver never decodes an image. It reads bag metadata to plan shards, streams the shards
through a Ray Data actor pool (``ActorPoolStrategy``: one engine per actor), and as soon as every
shard of a bag is back it finishes the bag: a bag of one shard is renamed into place, the partial
bags of a longer one are merged into one bag in log-time order (a raw byte copy, no
deserialization) by a zero-CPU Ray task on any node, while the workers go on. Every output is written
under a temporary name and renamed into place; the bag's completion record is written last, so
an interrupted run never leaves an output that looks complete, and a re-run skips exactly the
bags whose record still matches the input, the models and the settings.

Failures: a bag that cannot be opened, or a shard that meets corrupt data, fails that bag with
its reason and nothing else. A worker process that dies (segfault, OOM killer, lost node) is
restarted by Ray and its shard retried up to ``retries`` times; the summary counts the retries,
and a shard that keeps killing its worker fails its bag.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from seg_node.bag.bagio import STORAGES, TYPESTORE, BagError, BagWriter
from seg_node.bag.label import DEFAULT_OUTPUTS
from seg_node.errors import one_line
from seg_node.fleet import require_ray
from seg_node.fleet.plan import (
    DEFAULT_SHARD_FRAMES,
    RECORD_VERSION,
    BagPlan,
    Layout,
    bag_files,
    expand_inputs,
    load_record,
    output_names,
    plan_bag,
    record_is_current,
    remove_outputs,
    settings_key,
    stale_partials,
    write_json_atomic,
)
from seg_node.fleet.report import write_report
from seg_node.fleet.summary import FleetSummary, metrics_json
from seg_node.fleet.worker import MODES, ShardWorker, WorkerConfig, frame_schema, part_bag
from seg_node.model.classes import ClassTable
from seg_node.model.contract import ModelContractError, read_model_spec
from seg_node.model.file import ModelFileError, read_verified, resolve_model_path
from seg_node.msg import topics
from seg_node.privacy import OPT_IN, opted_in, telemetry_environment
from seg_node.runtime.config import DEFAULT_PROVIDERS


@dataclass(frozen=True)
class FleetOptions:
    """A fleet run: what to compute, where, and on how many workers."""

    model: str
    out: Path
    mode: str = 'label'  # label: labelled bags + per-frame results; eval: scores only, no bags
    reference: str = ''  # a second model to compare with (per-class agreement, most-disagreeing frames)
    model_sha256: str = ''  # expected SHA-256 of the model (checked once on the driver, then on every worker)
    reference_sha256: str = ''
    topics: tuple[str, ...] = ()
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS  # written (label); with 'confidence' also the confidence summary
    overlay_alpha: float = 0.5
    batch: int = 8
    providers: tuple[str, ...] = ()  # empty: TensorRT, CUDA, CPU with --gpus-per-worker, else CPU only
    storage: str = 'sqlite3'
    address: str = ''  # Ray cluster; empty: RAY_ADDRESS, else a local cluster for this run
    workers: int = 0  # 0: as many as the cluster's CPUs (and GPUs) hold
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    shard_frames: int = DEFAULT_SHARD_FRAMES
    retries: int = 2  # how often a shard whose worker died is tried again
    worst: int = 12  # worst frames shown in the report
    progress: bool | None = None  # None: a progress bar when stderr is a terminal
    crash_once: str = ''  # testing only: kill the worker on the first attempt of this bag's first shard

    def check(self) -> None:
        """Raise BagError naming the first invalid option."""
        problems = [
            (self.mode not in MODES, f'mode must be one of {", ".join(MODES)}, got {self.mode!r}'),
            (self.batch < 1, f'--batch must be at least 1, got {self.batch}'),
            (self.workers < 0, f'--workers must be 0 (as many as fit) or more, got {self.workers}'),
            (self.cpus_per_worker <= 0, f'--cpus-per-worker must be positive, got {self.cpus_per_worker}'),
            (self.gpus_per_worker < 0, f'--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}'),
            (self.shard_frames < 1, f'--shard-frames must be at least 1, got {self.shard_frames}'),
            (self.retries < 0, f'--retries must be 0 or more, got {self.retries}'),
            (self.storage not in STORAGES, f'unknown storage {self.storage!r}; choose {" or ".join(STORAGES)}'),
        ]
        unknown = sorted(set(self.outputs) - set(topics.OUTPUTS))
        problems.append((bool(unknown), f'unknown output {unknown[0]!r}; choose from {", ".join(topics.OUTPUTS)}'
                         if unknown else ''))
        for bad, msg in problems:
            if bad:
                raise BagError(msg)


# --- models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Model:
    path: str  # resolved, absolute: what every worker loads
    sha256: str
    table: ClassTable


def _model(text: str, expected_sha256: str, role: str) -> _Model:
    """Read and check a model once on the driver: its hash (the workers check it again) and its contract."""
    try:
        path = resolve_model_path(text)
        data = read_verified(path, expected_sha256)
    except ModelFileError as err:
        raise BagError(f'{role}: {err}') from None
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and others for a file that is no model
        msg = f'{role} {str(path)!r} is not a valid ONNX file ({one_line(err)})'
        raise BagError(msg) from None
    try:
        spec = read_model_spec(proto)
    except ModelContractError as err:
        msg = f'{role} {str(path)!r} does not meet the model contract: {err}'
        raise BagError(msg) from None
    return _Model(str(path.resolve()), hashlib.sha256(data).hexdigest(), ClassTable(spec.classes, spec.palette))


def class_set_mismatch(model: _Model, reference: _Model) -> str | None:
    """One sentence saying how two models' class tables differ (None when they have the same classes)."""
    a, b = model.table.names, reference.table.names
    if a == b:
        return None
    advice = ('comparing two models needs the same class set, so export both with the same classes '
              '(seg_node.classes metadata), or compare models trained on the same label map')
    if len(a) != len(b):
        return (f'the model {Path(model.path).name} has {len(a)} classes (ids 0..{len(a) - 1}) and the reference '
                f'model {Path(reference.path).name} has {len(b)} (ids 0..{len(b) - 1}): {advice}')
    first = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    return (f'the model {Path(model.path).name} and the reference model {Path(reference.path).name} both have '
            f'{len(a)} classes but name them differently (id {first}: {a[first]!r} and {b[first]!r}): {advice}')


# --- the cluster ----------------------------------------------------------------------------


def providers_for(options: FleetOptions) -> tuple[str, ...]:
    """The workers' execution providers: as given, else GPU ones only for workers that reserved a GPU."""
    if options.providers:
        return tuple(options.providers)
    # A worker without a reserved GPU must not take one that Ray gave to another worker.
    return DEFAULT_PROVIDERS if options.gpus_per_worker > 0 else ('cpu',)


def worker_environment() -> dict[str, str]:
    """What every Ray worker process gets in its runtime_env: telemetry off (or the user's opt-in)."""
    env = dict(telemetry_environment())
    if opted_in():
        env[OPT_IN] = os.environ[OPT_IN]
    return env


@contextmanager
def cluster(options: FleetOptions) -> Iterator[dict[str, Any]]:
    """Connect to ``options.address`` / RAY_ADDRESS, or start a local cluster for this run and stop it after.

    A cluster this process already joined (``ray.init`` done by the caller, as the tests do) is used
    as it is and left running.
    """
    import ray  # noqa: PLC0415 - optional extra

    info: dict[str, Any] = {'started': False, 'address': ''}
    if ray.is_initialized():
        yield info
        return
    address = options.address or os.environ.get('RAY_ADDRESS', '')
    started = time.perf_counter()
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            # Sized to this machine; no dashboard, so nothing listens beyond what Ray itself needs.
            ray.init(address='local', num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False)
    except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ...
        where = f'the Ray cluster at {address!r}' if address else 'a local Ray cluster'
        msg = f'cannot start or reach {where} ({one_line(err)})'
        raise BagError(msg) from None
    info.update(started=not address, address=address or 'local', start_s=time.perf_counter() - started)
    try:
        yield info
    finally:
        ray.shutdown()


def _worker_count(options: FleetOptions, shards: int, local: bool) -> int:
    import ray  # noqa: PLC0415

    resources = ray.cluster_resources()
    fit = math.floor(resources.get('CPU', 0) / options.cpus_per_worker + 1e-9)
    if options.gpus_per_worker > 0:
        fit = min(fit, math.floor(resources.get('GPU', 0) / options.gpus_per_worker + 1e-9))
    wanted = options.workers or fit
    if local and wanted > fit:
        wanted = fit  # nothing will add nodes to a local cluster: more actors would wait forever
    if wanted < 1:
        msg = (f'one worker needs {options.cpus_per_worker:g} CPU and {options.gpus_per_worker:g} GPU, but the '
               f'Ray cluster has {resources.get("CPU", 0):g} CPU and {resources.get("GPU", 0):g} GPU')
        raise BagError(msg)
    return max(1, min(wanted, shards))


# --- the run --------------------------------------------------------------------------------


@contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    layout.out.mkdir(parents=True, exist_ok=True)
    with layout.lock.open('w') as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            msg = f'another fleet run is writing into {str(layout.out)!r}; wait for it or choose another --out'
            raise BagError(msg) from None
        yield


def run_fleet(inputs: Sequence[str | Path], options: FleetOptions) -> FleetSummary:
    """Label (or evaluate) every input bag on Ray; write outputs, summary.json and report.html under ``options.out``."""
    require_ray()
    options.check()
    paths = expand_inputs(inputs)
    model = _model(options.model, options.model_sha256, 'the model')
    reference = None
    if options.reference:
        reference = _model(options.reference, options.reference_sha256, 'the reference model')
    if reference is not None and (mismatch := class_set_mismatch(model, reference)):
        raise BagError(mismatch)
    layout = Layout(options.out)
    summary = FleetSummary(options.mode, str(layout.out), model.path, model.sha256,
                           reference.path if reference else '', model.table.names, model.table.palette,
                           started=datetime.now(timezone.utc).isoformat(timespec='seconds'))
    settings = settings_key(mode=options.mode, model=model.sha256, reference=reference.sha256 if reference else '',
                            topics=options.topics, storage=options.storage, alpha=options.overlay_alpha,
                            outputs=options.outputs)
    with _locked(layout):
        layout.make()
        for partial in stale_partials(layout):
            shutil.rmtree(partial)  # a merge that a crash interrupted: never complete, never kept
        work: list[BagPlan] = []
        for path, name in zip(paths, output_names(paths), strict=True):
            if record_is_current(load_record(layout, name), layout, path, settings):
                summary.bags[name] = {'status': 'skipped', 'input': str(path), 'reason': 'complete and verified'}
                continue
            plan = plan_bag(path, name, layout, topics_wanted=options.topics, shard_frames=options.shard_frames,
                            need_truth=options.mode == 'eval' and reference is None)
            if plan.error:
                # Earlier outputs stay: an input that is only unreachable now is not a reason to delete them.
                summary.bags[name] = {'status': 'failed', 'input': str(path), 'reason': plan.error}
            else:
                remove_outputs(layout, name, bags=options.mode == 'label')  # stale or unfinished: redone
                summary.bags[name] = {'status': 'pending', 'input': str(path)}
                work.append(plan)
        if work:
            run = _Run(options, model, reference, layout, settings, summary)
            with cluster(options) as info:
                summary.cluster_start_s = info.get('start_s', 0.0)
                _execute(run, work, local=info['address'] == 'local')
        _collect(layout, summary)
        write_json_atomic(layout.summary, summary.to_json())
        write_report(layout, summary, worst=options.worst)
    return summary


@dataclass(frozen=True)
class _Run:
    """What every step of one run needs."""

    options: FleetOptions
    model: _Model
    reference: _Model | None
    layout: Layout
    settings: dict[str, Any]
    summary: FleetSummary


def _execute(run: _Run, work: list[BagPlan], *, local: bool) -> None:
    """Run every shard of ``work`` on a Ray Data actor pool and finish each bag as its last shard returns."""
    import ray  # noqa: PLC0415
    import ray.data  # noqa: PLC0415

    options, model, reference, summary = run.options, run.model, run.reference, run.summary

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver shows its own: frames, bags, ETA
    items = [{'shard': shard.to_json()} for plan in work for shard in plan.shards]
    # A shard whose worker keeps dying must fail its bag, not the whole run.
    context.max_errored_blocks = len(items)
    logging.getLogger('ray.data').setLevel(logging.CRITICAL)
    workers = _worker_count(options, len(items), local)
    config = WorkerConfig(
        model=model.path, model_sha256=model.sha256, mode=options.mode,
        reference=reference.path if reference else '', reference_sha256=reference.sha256 if reference else '',
        outputs=tuple(options.outputs), overlay_alpha=options.overlay_alpha, batch=options.batch,
        providers=providers_for(options), cpu_threads=max(1, math.floor(options.cpus_per_worker)),
        storage=options.storage, topics=tuple(options.topics), crash_once=options.crash_once)
    gpu = {'num_gpus': options.gpus_per_worker} if options.gpus_per_worker > 0 else {}
    with warnings.catch_warnings():
        # Ray 2.60 bounds the retries of a task whose actor died only through these remote
        # arguments, which it marks deprecated (for removal in 2.64): revisit when upgrading.
        warnings.filterwarnings('ignore', message='.*ray_remote_args.*deprecated', category=DeprecationWarning)
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardWorker, batch_size=1, batch_format='numpy', fn_constructor_kwargs={'config': config},
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=options.cpus_per_worker, **gpu,
            # Restart a dead worker process as often as needed, but retry one shard only so often.
            max_restarts=-1, max_task_retries=options.retries,
            runtime_env={'env_vars': worker_environment()})
    # Merging a bag's parts is a byte copy bound by storage, not CPU: a zero-CPU task, spread over
    # the nodes, so bags merge in parallel beside the workers instead of one by one on the driver.
    merge = ray.remote(merge_task).options(num_cpus=0, scheduling_strategy='SPREAD', max_retries=options.retries,
                                           runtime_env={'env_vars': worker_environment()})
    tracker = _Tracker(run, work, merge)
    started = time.perf_counter()
    try:
        for row in dataset.iter_rows():
            if not summary.workers:
                summary.startup_s = time.perf_counter() - started - float(row['seconds'])
            tracker.add(row)
            tracker.poll(wait=False)
        tracker.poll(wait=True)
    except Exception as err:  # noqa: BLE001 - a lost cluster fails the unfinished bags, not the summary
        tracker.abort(f'the Ray run stopped ({one_line(err)})')
    finally:
        summary.wall_s = time.perf_counter() - started
        tracker.close()
    tracker.finish_missing()


@dataclass
class _Collected:
    """A bag whose shards are all back: its record so far, and the partial bags still to place."""

    record: dict[str, Any]
    parts: list[Path]
    messages: list[int]  # per part


class _Tracker:
    """Collects shard rows, shows progress, and finishes or fails each bag when all its shards are in."""

    def __init__(self, run: _Run, work: list[BagPlan], merge: Any) -> None:
        self.run, self.merge = run, merge
        self.plans = {plan.name: plan for plan in work}
        self.rows: dict[str, dict[int, dict]] = {plan.name: {} for plan in work}
        self.merging: dict[Any, tuple[BagPlan, _Collected]] = {}  # merge task -> its bag
        self.summary, self.layout = run.summary, run.layout
        options = run.options
        self.done = 0
        self.verbose = options.progress is not False  # one line per bag, also in logs without a terminal
        self.bar = tqdm(total=sum(p.frames for p in work), unit='frame', desc=f'fleet {options.mode}',
                        disable=None if options.progress is None else not options.progress, dynamic_ncols=True)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f'bags {self.done}/{len(self.plans)}')

    def add(self, row: dict[str, Any]) -> None:
        """Take one shard's status row; finish its bag when it was the last one."""
        name, index = str(row['bag']), int(row['shard'])
        plan = self.plans[name]
        self.rows[name][index] = row
        self.bar.update(int(row['frames']) if row['ok'] else plan.shards[index].frames)
        worker = self.summary.workers.setdefault(str(row['worker']), {'frames': 0, 'seconds': 0.0, 'shards': 0})
        worker['frames'] += int(row['frames'])
        worker['seconds'] += float(row['seconds'])
        worker['shards'] += 1
        worker.update(json.loads(str(row['info'])))  # environment, ROS loaded or not, provider, threads
        self.summary.frames += int(row['frames'])
        if len(self.rows[name]) == len(plan.shards):
            self._finish(plan)

    def _finish(self, plan: BagPlan, missing_reason: str = '') -> None:
        rows = [self.rows[plan.name].get(shard.index) for shard in plan.shards]
        self.summary.retries += _retries(plan)
        failed = next((r for r in rows if r is not None and not r['ok']), None)
        if failed is not None or missing_reason:
            self._failed(plan, failed['error'] if failed is not None else missing_reason)
            return
        try:
            collected = collect_bag(self.run, plan, rows)
            if len(collected.parts) > 1:
                partial = self.layout.partial_bag(plan.name)
                parts = [str(p) for p, n in zip(collected.parts, collected.messages, strict=True) if n]
                self.merging[self.merge.remote(parts, str(partial), self.run.options.storage)] = (plan, collected)
                return  # placed when the merge task is done (poll)
            place_bag(self.run, plan, collected)
        except Exception as err:  # noqa: BLE001 - a bag that cannot be finished must not stop the others
            self._failed(plan, str(err) if isinstance(err, BagError)
                         else f'finishing its outputs failed ({type(err).__name__}: {one_line(err)})')
        else:
            self._done(plan, collected.record)

    def poll(self, *, wait: bool) -> None:
        """Place the bags whose merge task is done (``wait``: all of them, waiting as long as it takes)."""
        import ray  # noqa: PLC0415

        while self.merging:
            ready, _ = ray.wait(list(self.merging), num_returns=len(self.merging), timeout=None if wait else 0,
                                fetch_local=True)
            if not ready:
                return
            for ref in ready:
                plan, collected = self.merging.pop(ref)
                try:
                    messages, seconds = ray.get(ref)
                    self.summary.merge_s += seconds
                    place_bag(self.run, plan, collected, merged=messages)
                except Exception as err:  # noqa: BLE001 - the merge task's error, as one sentence
                    self._failed(plan, f'merging its {len(collected.parts)} shards failed ({one_line(err)})')
                else:
                    self._done(plan, collected.record)

    def _done(self, plan: BagPlan, record: dict[str, Any]) -> None:
        self.summary.bags[plan.name] = {'status': 'done', 'input': str(plan.path), 'frames': record['frames_total']}
        if self.verbose:
            self.bar.write(f'{plan.name}: {record["frames_total"]} frames')
        self._closed(plan)

    def _failed(self, plan: BagPlan, reason: str) -> None:
        self.summary.bags[plan.name] = {'status': 'failed', 'input': str(plan.path), 'reason': reason}
        if self.verbose:
            self.bar.write(f'{plan.name}: failed: {reason}')
        self._closed(plan)

    def _closed(self, plan: BagPlan) -> None:
        shutil.rmtree(self.layout.part(plan.name), ignore_errors=True)
        self.done += 1
        self._postfix()

    def abort(self, reason: str) -> None:
        """Fail every unfinished bag with ``reason``."""
        for plan, _ in list(self.merging.values()):
            self._failed(plan, reason)
        self.merging.clear()
        for name, plan in self.plans.items():
            if self.summary.bags[name]['status'] == 'pending':
                self._finish(plan, reason)

    def finish_missing(self) -> None:
        """Fail the bags with shards that never came back: their workers died more often than retried."""
        for name, plan in self.plans.items():
            if self.summary.bags[name]['status'] != 'pending':
                continue
            lost = [s for s in plan.shards if s.index not in self.rows[name]] or plan.shards
            attempts = len(list(Path(lost[0].part_dir).glob('attempt-*')))
            self._finish(plan, f'the worker process died {attempts} time(s) running shard {lost[0].index} '
                               f'(log time {lost[0].start or "start"}..{lost[0].stop or "end"}); see the Ray '
                               'logs of its node (/tmp/ray/session_latest/logs)')

    def close(self) -> None:
        """Close the progress bar."""
        self.bar.close()


def _retries(plan: BagPlan) -> int:
    """Attempts beyond the first, over the bag's shards (a worker that died and was restarted)."""
    return sum(max(0, len(list(Path(s.part_dir).glob('attempt-*'))) - 1) for s in plan.shards)


# --- finishing a bag ------------------------------------------------------------------------


def _sum(matrices: list[list | None]) -> list | None:
    present = [np.asarray(m, np.int64) for m in matrices if m is not None]
    return np.sum(present, axis=0).tolist() if present else None


def collect_bag(run: _Run, plan: BagPlan, rows: list[dict]) -> _Collected:
    """Sum a bag's shard results into its record; write its per-frame Parquet and thumbnails into place."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    options, layout, settings, summary = run.options, run.layout, run.settings, run.summary
    folders = [Path(shard.part_dir) / str(row['token']) for shard, row in zip(plan.shards, rows, strict=True)]
    shards = []
    for folder, row in zip(folders, rows, strict=True):
        data = json.loads((folder / 'shard.json').read_text())
        if data['token'] != row['token']:
            msg = f'shard outputs in {folder} belong to another attempt'
            raise BagError(msg)
        shards.append(data)
    name = plan.name
    record: dict[str, Any] = {
        'version': RECORD_VERSION, 'name': name, 'input': str(plan.path), 'fingerprint': plan.fingerprint,
        'settings': settings, 'mode': options.mode, 'classes': list(summary.classes), 'cameras': list(plan.cameras),
        'frames': {}, 'shards': len(plan.shards), 'retries': _retries(plan),
        'seconds': sum(float(r['seconds']) for r in rows),
        'confusion': _sum([s['confusion'] for s in shards]),
        'reference_confusion': _sum([s['reference_confusion'] for s in shards]),
        'agreement': _sum([s['agreement'] for s in shards]),
        'providers': sorted({s['provider'] for s in shards}), 'outputs': {},
        'finished': datetime.now(timezone.utc).isoformat(timespec='seconds'),
    }
    for data in shards:
        for topic, count in data['frames'].items():
            record['frames'][topic] = record['frames'].get(topic, 0) + count
    record['frames_total'] = sum(record['frames'].values())
    # Per-frame results: the shards' tables in order, under a temporary name, then renamed.
    table = pa.concat_tables([pq.read_table(f / 'frames.parquet', schema=frame_schema()) for f in folders])
    table = table.replace_schema_metadata({'seg_node.classes': json.dumps(list(summary.classes))})
    frames_file = layout.frames_file(name)
    tmp = frames_file.with_name(f'.{frames_file.name}.tmp')
    pq.write_table(table, tmp)
    os.replace(tmp, frames_file)
    record['outputs']['frames'] = {'file': str(frames_file.relative_to(layout.out)), 'size': frames_file.stat().st_size,
                                   'rows': table.num_rows}
    record['worst'] = _keep_worst(shards, folders, layout, name, options.worst)
    parts = []
    if options.mode == 'label':
        parts = [part_bag(folder, shard) for folder, shard in zip(folders, plan.shards, strict=True)]
    return _Collected(record, parts, [int(s['messages']) for s in shards])


def place_bag(run: _Run, plan: BagPlan, collected: _Collected, *, merged: int | None = None) -> None:
    """Rename the bag into place (the one part, or the merge of ``merged`` messages); write the record last."""
    layout, record = run.layout, collected.record
    if collected.parts:
        final = layout.bag(plan.name)
        if merged is None:
            # One shard is already the whole bag, written as seg_bag label writes it: no copy.
            os.replace(collected.parts[0], final)
            merged = collected.messages[0]
        else:
            os.replace(layout.partial_bag(plan.name), final)
        record['outputs']['bag'] = {'folder': str(final.relative_to(layout.out)), 'files': bag_files(final),
                                    'messages': merged, 'merged_from': len(collected.parts)}
    write_json_atomic(layout.record(plan.name), record)  # last: the bag is complete from here on


def _keep_worst(shards: list[dict], folders: list[Path], layout: Layout, name: str, keep: int) -> list[dict]:
    entries = [(entry, folder) for data, folder in zip(shards, folders, strict=True) for entry in data['worst']]
    entries.sort(key=lambda item: -item[0]['badness'])
    target = layout.thumbs / name
    target.mkdir(parents=True, exist_ok=True)
    kept = []
    for index, (entry, folder) in enumerate(entries[:keep]):
        file = target / f'{index:03d}.png'
        shutil.copyfile(folder / entry['thumb'], file)
        kept.append({**entry, 'bag': name, 'file': str(file.relative_to(layout.out))})
    return kept


def merge_task(parts: list[str], out: str, storage: str) -> tuple[int, float]:
    """The Ray task that merges one bag's parts (any node: they are on shared storage); messages and seconds."""
    started = time.perf_counter()
    messages = merge_parts([Path(p) for p in parts], Path(out), storage)
    return messages, time.perf_counter() - started


def merge_parts(parts: list[Path], out: Path, storage: str) -> int:
    """Write the messages of the partial bags ``parts`` into one bag at ``out`` in log-time order; the count."""
    from rosbags.highlevel import AnyReader  # noqa: PLC0415

    with BagWriter(out, force=True, storage=storage) as writer:
        if parts:
            reader = AnyReader(parts, default_typestore=TYPESTORE)
            reader.open()
            try:
                # AnyReader merges the parts by log time; the bytes are copied as they are.
                for conn, timestamp, raw in reader.messages():
                    writer.write_raw(conn.topic, conn.msgtype, raw, timestamp, typestore=reader.typestore)
            finally:
                reader.close()
        return sum(writer.counts.values())


def _collect(layout: Layout, summary: FleetSummary) -> None:
    """Per-bag scores from the records, and the fleet's matrices summed over every complete bag."""
    matrices: dict[str, list] = {'confusion': [], 'reference_confusion': [], 'agreement': []}
    for name, bag in summary.bags.items():
        if bag['status'] not in ('done', 'skipped'):
            continue
        record = load_record(layout, name)
        if record is None:
            continue
        bag['frames'] = record['frames_total']
        bag['record'] = str(layout.record(name).relative_to(layout.out))
        for key, found in matrices.items():
            if record.get(key) is not None:
                found.append(record[key])
                bag[f'{key}_metrics'] = metrics_json(record[key])
    summary.confusion = _sum(matrices['confusion'])
    summary.reference_confusion = _sum(matrices['reference_confusion'])
    summary.agreement = _sum(matrices['agreement'])
