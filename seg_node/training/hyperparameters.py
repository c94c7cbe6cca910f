"""Hyperparameters with SageMaker's names and defaults, from a YAML file and ``--name value`` flags.

Precedence: defaults < YAML file (``--config``) < command line. Every field is a flag with its
exact name (``--learning_rate 0.01``); names with underscores also accept hyphens.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

__all__ = ['Hyperparameters', 'RunConfig', 'parse_args', 'saved_hyperparameters']

OPTIMIZERS = ('sgd', 'nag', 'adam', 'adamw', 'rmsprop', 'adagrad')
SCHEDULERS = ('poly', 'cosine', 'step')
CHOICES = {'algorithm': ('fcn', 'psp', 'deeplab'), 'backbone': ('resnet-50', 'resnet-101'),
           'optimizer': OPTIMIZERS, 'lr_scheduler': SCHEDULERS, 'output_stride': (8, 16, 32),
           'decoder': ('none', 'skip'),
           'format': ('sagemaker', 'cityscapes', 'camvid'), 'amp': ('auto', 'true', 'false'),
           'class_weighting': ('none', 'median_frequency')}


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
    hp: Hyperparameters = field(default_factory=Hyperparameters)


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


def _convert(name: str, value: object) -> object:
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
    p.add_argument('--config', help='YAML file with hyperparameters (and data/output/format)')
    p.add_argument('--format', help='dataset layout: sagemaker (default), cityscapes or camvid')
    p.add_argument('--resume', help='checkpoint.pt of an interrupted run to continue')
    p.add_argument('--init-checkpoint', '--init_checkpoint', dest='init_checkpoint',
                   help="incremental training: start from an earlier run's model_best.pt")
    p.add_argument('--device', help='auto (cuda when present), cpu, cuda or cuda:N')
    for f in fields(Hyperparameters):
        names = [f'--{f.name}'] + ([f'--{f.name.replace("_", "-")}'] if '_' in f.name else [])
        nargs = '+' if f.name == 'eval_size' else None
        p.add_argument(*names, dest=f.name, nargs=nargs, metavar='VALUE',
                       help=f'(default: {f.default})')
    return p


def parse_args(argv: Sequence[str] | None = None) -> RunConfig:
    """Build the run configuration from defaults, an optional YAML file and ``argv``."""
    cli = vars(_parser().parse_args(argv))
    values: dict[str, object] = {}
    if 'config' in cli:
        path = Path(cli.pop('config'))
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            msg = f'cannot read config {path}: {err}'
            raise ValueError(msg) from None
        if not isinstance(loaded, dict):
            msg = f'config {path} must be a mapping of hyperparameter names to values'
            raise ValueError(msg)
        values.update({str(k).replace('-', '_'): v for k, v in loaded.items()})
    values.update(cli)
    hp_names = {f.name for f in fields(Hyperparameters)}
    run_names = {f.name for f in fields(RunConfig)} - {'hp'}
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
    for key in ('data', 'output', 'resume', 'init_checkpoint'):
        if key in run:
            run[key] = Path(str(run[key]))
    config = RunConfig(hp=hp, **run)
    if config.format not in CHOICES['format']:
        msg = f'format must be one of {CHOICES["format"]}, got {config.format!r}'
        raise ValueError(msg)
    return config


def as_dict(hp: Hyperparameters) -> dict[str, object]:
    """Plain-type dict (for checkpoints loaded with ``weights_only`` and for YAML)."""
    return dataclasses.asdict(hp)


def saved_hyperparameters(saved: dict) -> dict[str, object]:
    """A checkpoint's hyperparameters, with the default for any name added since it was written."""
    return as_dict(Hyperparameters()) | saved
