"""Hyperparameters with SageMaker's names and defaults, from a config file and ``--name value`` flags.

Precedence: defaults < config file (``--config``: YAML, or a SageMaker job's ``hyperparameters.json``
unchanged) < command line. Every field is a flag with its exact name (``--learning_rate 0.01``);
names with underscores also accept hyphens. SageMaker writes every value as a string
(``"epochs": "10"``, ``"use_pretrained_model": "True"``), which is read as the field's type; keys
SageMaker injects (``_tuning_objective_metric``, ``sagemaker_*``) are accepted and ignored, and
the run logs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

__all__ = ['SAGEMAKER_NAMES', 'Hyperparameters', 'RunConfig', 'parse_args', 'read_config_file', 'run_notes',
           'sagemaker_hyperparameters', 'saved_hyperparameters']

OPTIMIZERS = ('sgd', 'nag', 'adam', 'adamw', 'rmsprop', 'adagrad')
SCHEDULERS = ('poly', 'cosine', 'step')
CHOICES = {'algorithm': ('fcn', 'psp', 'deeplab'), 'backbone': ('resnet-50', 'resnet-101'),
           'optimizer': OPTIMIZERS, 'lr_scheduler': SCHEDULERS, 'output_stride': (8, 16, 32),
           'decoder': ('none', 'skip'),
           'format': ('sagemaker', 'cityscapes', 'camvid'), 'amp': ('auto', 'true', 'false'),
           'class_weighting': ('none', 'median_frequency'), 'miou_classes': ('present', 'all')}
# SageMaker's own hyperparameters (its 2022 documentation); the rest of Hyperparameters is ours.
SAGEMAKER_NAMES = ('backbone', 'use_pretrained_model', 'algorithm', 'num_classes', 'num_training_samples', 'base_size',
                   'crop_size', 'early_stopping', 'early_stopping_min_epochs', 'early_stopping_patience',
                   'early_stopping_tolerance', 'epochs', 'gamma1', 'gamma2', 'learning_rate', 'lr_scheduler',
                   'lr_scheduler_factor', 'lr_scheduler_step', 'mini_batch_size', 'momentum', 'optimizer', 'syncbn',
                   'validation_mini_batch_size', 'weight_decay')
# Keys SageMaker adds to a job's hyperparameters.json (tuning jobs: _tuning_objective_metric; framework
# estimators: sagemaker_program, sagemaker_job_name, ...): not hyperparameters of the algorithm.
RESERVED_PREFIXES = ('_', 'sagemaker_')
# Metrics seg_train emits, i.e. the objectives a tuning job can use.
METRICS = ('validation:mIOU', 'validation:pixel_accuracy', 'validation:mIOU_present_classes',
           'validation:mIOU_all_classes', 'train:loss')
# Which optimizer uses which optimizer-specific hyperparameter. SageMaker: momentum and weight_decay
# are for sgd only, gamma1/gamma2 for rmsprop. nag (SGD with Nesterov momentum in MXNet) is treated
# as sgd; adamw (ours) keeps its decoupled weight decay; gamma2 is MXNet's momentum of the centered
# rmsprop only.
OPTIMIZER_USES = {'sgd': {'momentum', 'weight_decay'}, 'nag': {'momentum', 'weight_decay'}, 'adam': set(),
                  'adamw': {'weight_decay'}, 'rmsprop': {'gamma1', 'gamma2', 'rmsprop_centered'}, 'adagrad': set()}


@dataclass
class Hyperparameters:
    """SageMaker's semantic-segmentation hyperparameters (2022 defaults) plus a few of ours."""

    # SageMaker's names and defaults.
    algorithm: str = 'fcn'
    backbone: str = 'resnet-50'
    use_pretrained_model: bool = True
    num_classes: int | None = None
    num_training_samples: int | None = None
    epochs: int = 10
    learning_rate: float = 0.001
    optimizer: str = 'sgd'
    momentum: float = 0.9
    weight_decay: float = 0.0001
    gamma1: float = 0.9
    gamma2: float = 0.9
    lr_scheduler: str = 'poly'
    lr_scheduler_step: str | None = None
    lr_scheduler_factor: float = 0.1
    mini_batch_size: int = 16
    validation_mini_batch_size: int = 16
    base_size: int = 520
    crop_size: int = 240
    early_stopping: bool = False
    early_stopping_min_epochs: int = 5
    early_stopping_patience: int = 4
    early_stopping_tolerance: float = 0.0
    syncbn: bool = False
    # Ours: model shape, augmentation range, evaluation size and run control.
    rmsprop_centered: bool = False  # MXNet's RMSProp(centered=...): only the centered one uses gamma2
    miou_classes: str = 'present'  # validation:mIOU over classes 'present' in labels/predictions, or 'all'
    crop_height: int = 0  # 0: square crops (SageMaker); else crop_height x crop_size, for wide frames
    output_stride: int = 8
    decoder: str = 'none'  # 'skip': refine scores with stride-4/2 features and the image
    aux_loss: bool = False
    min_scale: float = 0.5
    max_scale: float = 2.0
    color_jitter: float = 0.0
    class_weighting: str = 'none'  # 'median_frequency': SegNet's balancing of rare classes
    ohem_threshold: float = 0.0  # >0: loss only over pixels whose true class scores below it (OHEM)
    logit_adjustment: float = 0.0  # tau: scores - tau * log(class weight) in validation and export
    eval_size: list[int] | None = None
    backbone_weights: str | None = None
    head_lr_mult: float = 10.0
    amp: str = 'auto'
    workers: int = 2
    threads: int = 0
    seed: int = 0
    max_iterations: int = 0  # stop each epoch early (0: whole epoch); for quick runs and tests

    def validate(self) -> None:
        """Raise ValueError naming the first bad value."""
        for name, allowed in CHOICES.items():
            if hasattr(self, name) and getattr(self, name) not in allowed:
                msg = f'{name} must be one of {allowed}, got {getattr(self, name)!r}'
                raise ValueError(msg)
        if self.num_classes is not None and not 2 <= self.num_classes <= 254:
            msg = f'num_classes must be 2..254, got {self.num_classes}'
            raise ValueError(msg)
        for name in ('base_size', 'crop_size'):
            if getattr(self, name) <= 16:
                msg = f'{name} must be > 16, got {getattr(self, name)}'
                raise ValueError(msg)
        if not 0 <= self.ohem_threshold < 1:
            msg = f'ohem_threshold must be in [0, 1), got {self.ohem_threshold}'
            raise ValueError(msg)
        if self.ohem_threshold and self.class_weighting != 'none':
            msg = 'ohem_threshold and class_weighting both rebalance the loss: choose one'
            raise ValueError(msg)
        if not 0 <= self.logit_adjustment <= 2:
            msg = f'logit_adjustment must be in [0, 2], got {self.logit_adjustment}'
            raise ValueError(msg)
        if self.logit_adjustment and self.class_weighting == 'none':
            msg = 'logit_adjustment corrects class-weighted training: it needs class_weighting median_frequency'
            raise ValueError(msg)
        if not 0 < self.learning_rate <= 1:
            msg = f'learning_rate must be in (0, 1], got {self.learning_rate}'
            raise ValueError(msg)
        self._validate_ranges()
        if self.lr_scheduler == 'step' and not self.lr_scheduler_step:
            msg = 'lr_scheduler step needs lr_scheduler_step, e.g. "10, 20"'
            raise ValueError(msg)
        if not 0 < self.min_scale <= self.max_scale:
            msg = f'need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}'
            raise ValueError(msg)
        if self.eval_size is not None and (len(self.eval_size) != 2 or min(self.eval_size) < 1):
            msg = f'eval_size must be two positive integers H W, got {self.eval_size}'
            raise ValueError(msg)
        if self.crop_height and self.crop_height <= 16:
            msg = f'crop_height must be 0 (square crops) or > 16, got {self.crop_height}'
            raise ValueError(msg)
        # SageMaker rounds the crop up to a multiple of 8.
        self.crop_size = math.ceil(self.crop_size / 8) * 8
        self.crop_height = math.ceil(self.crop_height / 8) * 8

    def _validate_ranges(self) -> None:
        # AWS's valid ranges, except weight_decay 0 (off), which is ours: AWS asks for 0 < weight_decay < 1.
        checks = {'momentum': (0 < self.momentum <= 1, '(0, 1]'),
                  'weight_decay': (0 <= self.weight_decay < 1, '[0, 1)')}
        for name in ('gamma1', 'gamma2', 'early_stopping_tolerance', 'lr_scheduler_factor'):
            checks[name] = (0 <= getattr(self, name) <= 1, '[0, 1]')
        for name, (ok, interval) in checks.items():
            if not ok:
                msg = f'{name} must be in {interval}, got {getattr(self, name)}'
                raise ValueError(msg)
        for name in ('epochs', 'mini_batch_size', 'validation_mini_batch_size', 'num_training_samples'):
            value = getattr(self, name)
            if value is not None and value < 1:
                msg = f'{name} must be a positive integer, got {value}'
                raise ValueError(msg)

    def step_epochs(self) -> list[int]:
        """Epochs at which the step scheduler multiplies the rate by lr_scheduler_factor."""
        return [int(s) for s in str(self.lr_scheduler_step or '').replace(' ', '').split(',') if s]


@dataclass
class RunConfig:
    """Where a run reads and writes, plus its hyperparameters."""

    data: Path
    output: Path
    format: str = 'sagemaker'
    resume: Path | None = None
    init_checkpoint: Path | None = None
    device: str = 'auto'
    model_tar: Path | None = None  # write a model.tar.gz artifact (manifest + best checkpoint) here
    hp: Hyperparameters = field(default_factory=Hyperparameters)
    ignored: dict[str, object] = field(default_factory=dict)  # SageMaker-injected keys, logged at start


def parse_bool(value: object) -> bool:
    """SageMaker passes booleans as strings: 'True'/'False' (any case), also 1/0 and yes/no."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('true', '1', 'yes', 'on'):
        return True
    if text in ('false', '0', 'no', 'off'):
        return False
    msg = f'expected true or false, got {value!r}'
    raise ValueError(msg)


def _base_type(annotation: object) -> type:
    hint = typing.get_type_hints(Hyperparameters)[annotation] if isinstance(annotation, str) else annotation
    if isinstance(hint, types.UnionType):
        hint = next(a for a in hint.__args__ if a is not type(None))
    return typing.get_origin(hint) or hint


def _unquote(value: object) -> object:
    # Framework estimators JSON-encode each value once more: '"512"' in hyperparameters.json.
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _convert(name: str, value: object) -> object:
    value = _unquote(value)
    if value is None:
        return None
    kind = _base_type(name)
    try:
        if kind is bool:
            return parse_bool(value)
        if kind is list:
            text = str(value).replace('x', ',').replace(' ', ',')
            items = value if isinstance(value, list) else text.split(',')
            return [int(v) for v in items if str(v)]
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        msg = f'hyperparameter {name}: cannot read {value!r} as {kind.__name__}'
        raise ValueError(msg) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='seg_train', description=__doc__.splitlines()[0],
                                argument_default=argparse.SUPPRESS)
    p.add_argument('--data', help='dataset root (SageMaker channels, or see --format)')
    p.add_argument('--output', help='run directory: checkpoints and metrics.jsonl')
    p.add_argument('--config', help="YAML file with hyperparameters (and data/output/format), or a SageMaker "
                                    "job's hyperparameters.json as it is")
    p.add_argument('--format', help='dataset layout: sagemaker (default), cityscapes or camvid')
    p.add_argument('--resume', help='checkpoint.pt of an interrupted run to continue')
    p.add_argument('--init-checkpoint', '--init_checkpoint', dest='init_checkpoint',
                   help="incremental training: start from an earlier run's model_best.pt")
    p.add_argument('--device', help='auto (cuda when present), cpu, cuda or cuda:N')
    p.add_argument('--model-tar', '--model_tar', dest='model_tar',
                   help='also write the best model as a model.tar.gz artifact (manifest + checkpoint) to this path')
    for f in fields(Hyperparameters):
        names = [f'--{f.name}'] + ([f'--{f.name.replace("_", "-")}'] if '_' in f.name else [])
        nargs = '+' if f.name == 'eval_size' else None
        p.add_argument(*names, dest=f.name, nargs=nargs, metavar='VALUE',
                       help=f'(default: {f.default})')
    return p


def read_config_file(path: str | Path) -> dict[str, object]:
    """Names -> values of a YAML config or a JSON file (a SageMaker ``hyperparameters.json``)."""
    path = Path(path)
    try:
        text = path.read_text()
        loaded = json.loads(text) if path.suffix.lower() == '.json' else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as err:
        msg = f'cannot read config {path}: {err}'
        raise ValueError(msg) from None
    loaded = loaded or {}
    if not isinstance(loaded, dict):
        msg = f'config {path} must be a mapping of hyperparameter names to values'
        raise ValueError(msg)
    return {str(k).replace('-', '_') if not str(k).startswith('_') else str(k): v for k, v in loaded.items()}


def parse_args(argv: Sequence[str] | None = None) -> RunConfig:
    """Build the run configuration from defaults, an optional config file and ``argv``."""
    cli = vars(_parser().parse_args(argv))
    values: dict[str, object] = {}
    if 'config' in cli:
        values.update(read_config_file(cli.pop('config')))
    values.update(cli)
    hp_names = {f.name for f in fields(Hyperparameters)}
    run_names = {f.name for f in fields(RunConfig)} - {'hp', 'ignored'}
    ignored = {k: _unquote(v) for k, v in values.items() if k.startswith(RESERVED_PREFIXES)}
    values = {k: v for k, v in values.items() if k not in ignored}
    unknown = sorted(set(values) - hp_names - run_names)
    if unknown:
        msg = f'unknown hyperparameters {unknown}'
        raise ValueError(msg)
    if isinstance(values.get('eval_size'), list) and len(values['eval_size']) == 1:
        values['eval_size'] = values['eval_size'][0]
    hp = Hyperparameters(**{k: _convert(k, v) for k, v in values.items() if k in hp_names})
    hp.validate()
    for required in ('data', 'output'):
        if not values.get(required):
            msg = f'--{required} is required (on the command line or in the config file)'
            raise ValueError(msg)
    run = {k: values[k] for k in run_names if values.get(k) is not None}
    for key in ('data', 'output', 'resume', 'init_checkpoint', 'model_tar'):
        if key in run:
            run[key] = Path(str(run[key]))
    config = RunConfig(hp=hp, ignored=ignored, **run)
    if config.format not in CHOICES['format']:
        msg = f'format must be one of {CHOICES["format"]}, got {config.format!r}'
        raise ValueError(msg)
    return config


def as_dict(hp: Hyperparameters) -> dict[str, object]:
    """Plain-type dict (for checkpoints loaded with ``weights_only`` and for YAML)."""
    return dataclasses.asdict(hp)


def sagemaker_hyperparameters(hp: dict[str, object]) -> dict[str, str]:
    """SageMaker's names of ``hp`` as a job's hyperparameters.json holds them: strings, booleans True/False."""
    return {name: str(hp[name]) for name in SAGEMAKER_NAMES if hp.get(name) is not None}


def saved_hyperparameters(saved: dict) -> dict[str, object]:
    """A checkpoint's hyperparameters, with the default for any name added since it was written."""
    return as_dict(Hyperparameters()) | saved


def run_notes(hp: Hyperparameters, ignored: dict[str, object] | None = None) -> list[str]:
    """Log lines for what a SageMaker user could expect to act but does not: injected keys, unused settings."""
    notes = []
    for key, value in (ignored or {}).items():
        notes.append(f'ignoring {key}={value!r}: SageMaker adds it to hyperparameters.json; it is not a '
                     'hyperparameter of the algorithm')
    objective = (ignored or {}).get('_tuning_objective_metric')
    if objective and str(objective) not in METRICS:
        notes.append(f'tuning objective {objective!r} is not a metric seg_train logs ({", ".join(METRICS)})')
    defaults, used = Hyperparameters(), OPTIMIZER_USES[hp.optimizer]
    for name in ('momentum', 'weight_decay', 'gamma1', 'gamma2', 'rmsprop_centered'):
        value = getattr(hp, name)
        if name not in used and value != getattr(defaults, name):
            users = sorted(o for o, names in OPTIMIZER_USES.items() if name in names)
            notes.append(f'{name}={value} is not used by optimizer {hp.optimizer}, only by {", ".join(users)}')
    if hp.optimizer == 'rmsprop' and not hp.rmsprop_centered:
        # AWS calls gamma2 "the momentum factor for rmsprop"; MXNet's RMSProp uses it only when centered.
        notes.append(f'gamma2={hp.gamma2} is not used: MXNet\'s rmsprop applies it (as momentum) only when '
                     'centered; set rmsprop_centered true to use it')
    return notes
