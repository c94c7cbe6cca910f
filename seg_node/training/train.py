"""``seg_train``: fine-tune FCN / PSPNet / DeepLabV3 with SageMaker's hyperparameters.

CPU, one GPU (mixed precision) or ``torchrun`` (DistributedDataParallel, SyncBatchNorm with
``--syncbn true``; ``mini_batch_size`` is the whole job's batch, as in SageMaker). RUN_DIR gets
``checkpoint.pt`` (last, for ``--resume``), ``model_best.pt`` (best ``validation:mIOU``),
``metrics.jsonl`` (one JSON line per epoch) and ``manifest.json``; ``--model_tar`` also packs the
best model as a ``model.tar.gz``, which ``--init_checkpoint`` and ``--resume`` read back.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from seg_node.model.contract import IMAGENET_MEAN, IMAGENET_STD
from seg_node.model.labels import IGNORE_INDEX
from seg_node.runtime.metrics import ConfusionMatrix
from seg_node.runtime.render import resize_nearest
from seg_node.training.artifact import is_artifact, read_artifact, write_artifact, write_manifest
from seg_node.training.datasets import ClassTable, class_table, get_dataset
from seg_node.training.hyperparameters import (
    OPTIMIZER_USES,
    Hyperparameters,
    RunConfig,
    as_dict,
    parse_args,
    run_notes,
    sagemaker_hyperparameters,
    saved_hyperparameters,
)
from seg_node.training.models import build_network
from seg_node.training.sagemaker import MIOU_ALL, MIOU_PRESENT, validation_scores
from seg_node.training.transforms import SegmentationPresetEval, SegmentationPresetTrain

__all__ = ['criterion', 'evaluate', 'load_checkpoint', 'main', 'seconds_per_step', 'train', 'train_one_epoch',
           'training_step']


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _log(message: str) -> None:
    if _rank() == 0:
        tqdm.write(message)


def load_checkpoint(path: str | Path, *, role: str = 'checkpoint') -> dict:
    """Read a checkpoint, or the one a model.tar.gz holds, with safe (``weights_only``) loading.

    ``role`` picks the artifact's file (``resume_checkpoint`` falls back to ``checkpoint``); every
    failure is one sentence naming the file.
    """
    source: str | Path | io.BytesIO = path
    if is_artifact(path):
        artifact = read_artifact(path)
        source = io.BytesIO(artifact.read(role if artifact.has(role) else 'checkpoint'))
    try:
        return torch.load(source, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - a bad file fails as pickle, zip, struct, OS... errors
        msg = f'cannot read checkpoint {path}: {err}'
        raise ValueError(msg) from None


def hard_pixel_loss(logits: torch.Tensor, target: torch.Tensor, threshold: float,
                    min_kept_fraction: float = 1 / 16) -> torch.Tensor:
    """OHEM cross-entropy: mean over the pixels whose true class scores below ``threshold``.

    At least ``min_kept_fraction`` of the labelled pixels (the hardest) always count, so the loss
    never runs out of pixels once most of the image is easy.
    """
    losses = nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction='none').flatten()
    losses = losses[target.flatten() != IGNORE_INDEX]
    if losses.numel() == 0:
        return logits.sum() * 0.0
    hard = losses > -math.log(threshold)  # p(true class) < threshold
    kept = max(int(hard.sum()), min(losses.numel(), math.ceil(losses.numel() * min_kept_fraction)))
    return losses.topk(kept, sorted=False).values.mean()


def criterion(outputs: dict[str, torch.Tensor], target: torch.Tensor,
              weight: torch.Tensor | None = None, ohem_threshold: float = 0.0) -> torch.Tensor:
    """Pixel-wise cross-entropy (255 ignored; class weights or OHEM); the auxiliary head counts half."""
    if ohem_threshold:
        losses = {name: hard_pixel_loss(x.float(), target, ohem_threshold) for name, x in outputs.items()}
    else:
        losses = {name: nn.functional.cross_entropy(x.float(), target, weight=weight, ignore_index=IGNORE_INDEX)
                  for name, x in outputs.items()}
    return losses['out'] + 0.5 * losses['aux'] if 'aux' in losses else losses['out']


def make_optimizer(hp: Hyperparameters, model: nn.Module) -> torch.optim.Optimizer:
    """SageMaker's optimizers, each with only the hyperparameters SageMaker applies to it.

    momentum and weight_decay act on sgd (and nag) only, gamma1 on rmsprop, gamma2 on the centered
    rmsprop only (MXNet's semantics); the heads learn ``head_lr_mult`` times faster (GluonCV's lr_mult).
    """
    base = model.module if hasattr(model, 'module') else model
    backbone = [p for p in base.backbone.parameters() if p.requires_grad]
    heads = [p for n, p in base.named_parameters() if not n.startswith('backbone.') and p.requires_grad]
    groups = [{'params': backbone, 'lr': hp.learning_rate},
              {'params': heads, 'lr': hp.learning_rate * hp.head_lr_mult}]
    lr = hp.learning_rate
    wd = hp.weight_decay if 'weight_decay' in OPTIMIZER_USES[hp.optimizer] else 0.0
    if hp.optimizer in ('sgd', 'nag'):
        return torch.optim.SGD(groups, lr=lr, momentum=hp.momentum, weight_decay=wd,
                               nesterov=hp.optimizer == 'nag')
    if hp.optimizer == 'adam':
        return torch.optim.Adam(groups, lr=lr)
    if hp.optimizer == 'adamw':
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    if hp.optimizer == 'rmsprop':
        centered = hp.rmsprop_centered
        return torch.optim.RMSprop(groups, lr=lr, alpha=hp.gamma1, centered=centered,
                                   momentum=hp.gamma2 if centered else 0.0)
    return torch.optim.Adagrad(groups, lr=lr, eps=1e-7)  # MXNet's AdaGrad epsilon


def make_scheduler(hp: Hyperparameters, optimizer: torch.optim.Optimizer,
                   iters_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration learning-rate factor: poly (power 0.9), cosine, or step at given epochs."""
    total = max(iters_per_epoch * hp.epochs, 1)
    if hp.lr_scheduler == 'poly':
        def factor(it: int) -> float:
            return max(1 - it / total, 0.0) ** 0.9
    elif hp.lr_scheduler == 'cosine':
        def factor(it: int) -> float:
            return 0.5 * (1 + math.cos(math.pi * min(it / total, 1.0)))
    else:
        steps = [s * iters_per_epoch for s in hp.step_epochs()]

        def factor(it: int) -> float:
            return hp.lr_scheduler_factor ** sum(it >= s for s in steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


_SAID_ONCE: set[str] = set()  # notes a process prints only the first time


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo flags).

    Without them PyTorch emulates bfloat16 autocast, measured many times slower than float32 (one
    ResNet-50 step: 4.5-6.7 s in fp32, not 4 steps in 300 s under bf16 on an AMD Zen 3).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path('/proc/cpuinfo').read_text()
        except OSError:
            return False
    flags = {word for line in cpuinfo.splitlines() if line.startswith('flags') for word in line.split()}
    return bool({'avx512_bf16', 'amx_bf16'} & flags)


def mixed_precision(requested: str, device: torch.device, *, native_bf16: bool | None = None) -> bool:
    """Whether to train under autocast: fp16 on a GPU ('auto', 'true'); bf16 on a CPU if 'true' and native."""
    if requested == 'false':
        return False
    if device.type == 'cuda':
        return True
    if requested == 'auto':
        return False
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    if not native and requested == 'true' and 'no native bf16' not in _SAID_ONCE:
        _SAID_ONCE.add('no native bf16')
        _log('amp: this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag), where emulated bf16 '
             'autocast is many times slower than float32: training in float32')
    return native


def _autocast(device: torch.device, enabled: bool) -> object:
    if not enabled:
        return nullcontext()
    # bfloat16 on CPUs (no loss scaling needed), float16 with a GradScaler on GPUs.
    dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def median_frequency_weights(frequencies: np.ndarray, max_weight: float = 10.0) -> np.ndarray:
    """SegNet's balancing: median frequency / class frequency, capped; absent classes get 0."""
    present = frequencies > 0
    weights = np.zeros_like(frequencies)
    weights[present] = np.median(frequencies[present]) / frequencies[present]
    return np.minimum(weights, max_weight)


def _grad_scaler(amp: bool, device: torch.device) -> torch.amp.GradScaler | None:
    # float16 on a GPU needs loss scaling; bfloat16 on a CPU does not.
    return torch.amp.GradScaler('cuda') if amp and device.type == 'cuda' else None


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                  targets: torch.Tensor, *, amp: bool, scaler: torch.amp.GradScaler | None,
                  weight: torch.Tensor | None = None, ohem_threshold: float = 0.0) -> torch.Tensor:
    """One optimizer step on a batch already on the model's device; returns the loss."""
    with _autocast(images.device, amp):
        loss = criterion(model(images), targets, weight, ohem_threshold)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: object,
                    loader: DataLoader, device: torch.device, *, epoch: int, amp: bool,
                    scaler: torch.amp.GradScaler | None, max_iterations: int = 0,
                    weight: torch.Tensor | None = None, ohem_threshold: float = 0.0) -> float:
    """One pass over the training data; returns the mean loss."""
    model.train()
    total, count = 0.0, 0
    steps = min(len(loader), max_iterations) if max_iterations else len(loader)
    bar = tqdm(loader, total=steps, desc=f'epoch {epoch}', disable=_rank() != 0 or None,
               leave=False, file=sys.stderr)
    for i, (images, targets) in enumerate(bar):
        if i >= steps:
            break
        loss = training_step(model, optimizer,
                             images.to(device, non_blocking=True, memory_format=torch.channels_last),
                             targets.to(device, non_blocking=True), amp=amp, scaler=scaler, weight=weight,
                             ohem_threshold=ohem_threshold)
        scheduler.step()
        total, count = total + loss.item(), count + 1
        bar.set_postfix(loss=f'{total / count:.4f}', lr=f'{optimizer.param_groups[0]["lr"]:.2e}')
    return total / max(count, 1)


def seconds_per_step(hp: Hyperparameters, device: torch.device, *, height: int, width: int,
                     steps: int = 3) -> float:
    """Median wall time of one training step of ``hp``'s network, batch and precision, on random data.

    One untimed step first (oneDNN builds its kernels then). Machines of one kind differ several
    times in this figure (a ResNet-50 step: about 0.7 s with AVX-512 BF16, 1.8 s on an AVX2-only CPU).
    """
    if hp.threads:
        torch.set_num_threads(hp.threads)
    model = build_network(algorithm=hp.algorithm, backbone=hp.backbone, num_classes=hp.num_classes,
                          use_pretrained_model=False, output_stride=hp.output_stride, aux_loss=hp.aux_loss,
                          decoder=hp.decoder).to(device, memory_format=torch.channels_last).train()
    optimizer = make_optimizer(hp, model)
    amp = mixed_precision(hp.amp, device)
    scaler = _grad_scaler(amp, device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(hp.mini_batch_size, 3, height, width, generator=generator)
    images = images.to(device, memory_format=torch.channels_last)
    targets = torch.randint(0, hp.num_classes, (hp.mini_batch_size, height, width), generator=generator).to(device)
    times = []
    for _ in range(steps + 1):
        began = time.perf_counter()
        training_step(model, optimizer, images, targets, amp=amp, scaler=scaler)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - began)
    return float(np.median(times[1:]))


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, *, amp: bool = False) -> np.ndarray:
    """Class ids uint8 [N, h, w] at the input's size."""
    with _autocast(images.device, amp):
        logits = model(images)['out']
    return logits.argmax(1).to(torch.uint8).cpu().numpy()


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, num_classes: int, *,
             amp: bool = False) -> ConfusionMatrix:
    """Confusion matrix over the loader; masks are brought to label size as the node does."""
    model.eval()
    matrix = ConfusionMatrix(num_classes)
    for batch in tqdm(loader, desc='validation', disable=_rank() != 0 or None, leave=False, file=sys.stderr):
        shapes = {tuple(image.shape) for image, _ in batch}
        groups = [batch] if len(shapes) == 1 else [[item] for item in batch]
        for group in groups:
            masks = predict(model, torch.stack([image for image, _ in group]).to(device), amp=amp)
            for mask, (_, label) in zip(masks, group, strict=True):
                matrix.update(label, resize_nearest(mask, label.shape[:2]))
    if dist.is_initialized():
        counts = torch.from_numpy(matrix.mat).to(device)
        dist.all_reduce(counts)
        matrix.mat = counts.cpu().numpy()
    return matrix


def _collate_list(batch: list) -> list:
    return batch


class JobBatchSampler(torch.utils.data.Sampler):
    """SageMaker's ``mini_batch_size`` is the job's: each step draws one batch and splits it over the processes.

    Every process sees the same shuffled order (seeded by epoch) and takes every ``world``-th image of
    each batch, so the processes together train on exactly ``batch_size`` images per step.
    """

    def __init__(self, size: int, batch_size: int, *, world: int, rank: int, seed: int = 0) -> None:
        if batch_size < world:
            msg = (f'mini_batch_size {batch_size} is the batch of the whole job (as in SageMaker) and cannot be '
                   f'split over {world} processes')
            raise ValueError(msg)
        if size < world:
            msg = f'the training set has {size} images, fewer than the {world} processes'
            raise ValueError(msg)
        self.size, self.batch_size, self.world, self.rank, self.seed = size, batch_size, world, rank, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (the same order on every process)."""
        self.epoch = epoch

    def __len__(self) -> int:
        # As the single-process loader: whole batches only, unless the set is smaller than one batch.
        return max(self.size // self.batch_size, 1)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start:start + self.batch_size][self.rank::self.world]


class _Loaders(NamedTuple):
    """The training and validation loaders, and the distributed sampler to reseed every epoch."""

    train: DataLoader
    val: DataLoader
    sampler: JobBatchSampler | None


def _loaders(config: RunConfig, classes: ClassTable, world: int) -> _Loaders:
    """Training loader (augmented, shuffled) and validation loader (this rank's slice, one list per batch)."""
    hp = config.hp
    train_tf = SegmentationPresetTrain(base_size=hp.base_size, crop_size=hp.crop_size, crop_height=hp.crop_height,
                                       min_scale=hp.min_scale, max_scale=hp.max_scale, color_jitter=hp.color_jitter)
    n = len(classes.names)
    train_set = get_dataset(config.data, fmt=config.format, split='train', num_classes=n, transform=train_tf)
    val_set = get_dataset(config.data, fmt=config.format, split='validation', num_classes=n,
                          transform=SegmentationPresetEval(size=hp.eval_size))
    for note in dict.fromkeys((train_set.note, val_set.note)):
        if note:
            _log(note)
    workers = hp.workers
    common = {'num_workers': workers, 'pin_memory': torch.cuda.is_available(), 'persistent_workers': workers > 0}
    sampler = None
    if world > 1:
        sampler = JobBatchSampler(len(train_set), hp.mini_batch_size, world=world, rank=_rank(), seed=hp.seed)
        _log(f'mini_batch_size {hp.mini_batch_size} is the batch of the whole job, as in SageMaker: about '
             f'{hp.mini_batch_size / world:g} images per process on {world} processes')
        train_loader = DataLoader(train_set, batch_sampler=sampler, **common)
        # Each rank validates a disjoint slice; the confusion matrices are summed.
        val_set = Subset(val_set, range(_rank(), len(val_set), world))
    else:
        train_loader = DataLoader(train_set, batch_size=hp.mini_batch_size, shuffle=True,
                                  drop_last=len(train_set) >= hp.mini_batch_size,
                                  generator=torch.Generator().manual_seed(hp.seed), **common)
    val_loader = DataLoader(val_set, batch_size=hp.validation_mini_batch_size, num_workers=workers,
                            collate_fn=_collate_list)
    return _Loaders(train_loader, val_loader, sampler)


def _device(name: str) -> torch.device:
    if 'LOCAL_RANK' in os.environ and torch.cuda.is_available():
        return torch.device('cuda', int(os.environ['LOCAL_RANK']))
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


# --- Setup: process, classes, model, optimizer, scheduler -----------------------------------------------


def _init_process(config: RunConfig) -> tuple[int, torch.device]:
    """Join torchrun's process group (if any), pick the device, threads and this rank's seed.

    Returns the world size and the device.
    """
    hp = config.hp
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')
    device = _device(config.device)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    if hp.threads:
        torch.set_num_threads(hp.threads)
    torch.manual_seed(hp.seed + _rank())
    return world, device


def _classes(config: RunConfig) -> ClassTable:
    """The data format's class table; fills in ``hp.num_classes`` where the format fixes it."""
    hp = config.hp
    if config.format != 'sagemaker' and hp.num_classes is None:
        hp.num_classes = len(class_table(config.format, None).names)
    classes = class_table(config.format, hp.num_classes)
    if hp.num_classes != len(classes.names):
        msg = f'num_classes {hp.num_classes} does not match the {config.format} layout ({len(classes.names)})'
        raise ValueError(msg)
    return classes


def _class_weights(hp: Hyperparameters, train_set: torch.utils.data.Dataset, classes: ClassTable,
                   device: torch.device) -> torch.Tensor | None:
    """Median-frequency loss weights of the training labels (logged), or None without class weighting."""
    if hp.class_weighting != 'median_frequency':
        return None
    frequencies = train_set.class_frequencies(hp.num_classes)
    weight = torch.tensor(median_frequency_weights(frequencies), dtype=torch.float32, device=device)
    _log('class weights: ' + ', '.join(f'{n} {w:.2f}' for n, w in zip(classes.names, weight.tolist(),
                                                                          strict=True) if w))
    return weight


def _build(config: RunConfig, num_classes: int) -> nn.Module:
    """The network; ImageNet weights only when no checkpoint will overwrite them."""
    hp = config.hp
    starts_from_checkpoint = config.resume is not None or config.init_checkpoint is not None
    try:
        return build_network(algorithm=hp.algorithm, backbone=hp.backbone, num_classes=num_classes,
                             use_pretrained_model=hp.use_pretrained_model and not starts_from_checkpoint,
                             backbone_weights=None if starts_from_checkpoint else hp.backbone_weights,
                             output_stride=hp.output_stride, aux_loss=hp.aux_loss, decoder=hp.decoder)
    except (OSError, RuntimeError) as err:  # torchvision's download fails with URLError (an OSError)
        msg = (f'could not load the ImageNet weights of {hp.backbone} ({err}); put them in torch\'s '
               'cache, pass --backbone-weights PATH, or --use_pretrained_model false')
        raise ValueError(msg) from None


def _check_compatible(hp: Hyperparameters, saved: dict, path: Path) -> None:
    # SageMaker: backbone, algorithm and num_classes define the network and must match.
    saved = saved_hyperparameters(saved)
    mismatched = [f'{k}: {saved[k]!r} there, {getattr(hp, k)!r} here'
                  for k in ('algorithm', 'backbone', 'num_classes', 'output_stride', 'decoder')
                  if saved[k] != getattr(hp, k)]
    if mismatched:
        msg = f'checkpoint {path} was trained with a different network: {"; ".join(mismatched)}'
        raise ValueError(msg)


def _prepare_model(config: RunConfig, weight: torch.Tensor | None, world: int, device: torch.device) -> nn.Module:
    """Build the network, start it from ``--init_checkpoint``, and place it on the device (DDP when distributed)."""
    hp = config.hp
    model = _build(config, hp.num_classes)
    if config.init_checkpoint is not None:
        saved = load_checkpoint(config.init_checkpoint)
        _check_compatible(hp, saved.get('hyperparameters', {}), config.init_checkpoint)
        model.load_state_dict(saved['model'], strict=False)
    if weight is not None and hp.logit_adjustment:
        # Menon et al. 2021: weighted cross-entropy learns p(c|x) scaled by w_c; subtracting
        # tau * log w_c undoes that prior (tau 1) or part of it, keeping some of the recall gained.
        present = weight > 0
        model.score_offset[present] = -hp.logit_adjustment * weight[present].log().cpu()
    if hp.syncbn and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif hp.syncbn:
        # SageMaker trains on every GPU of the instance; one process here uses one device.
        _log('syncbn has no effect in a single process: start seg_train with torchrun --nproc_per_node N '
             '(one process per GPU) to share BatchNorm statistics across GPUs as SageMaker does')
    # NHWC convolutions: a ResNet-50 training step on 2 cores took 0.48 s instead of 0.57 s (oneDNN).
    model.to(device, memory_format=torch.channels_last)
    if world > 1:
        ids = [device.index] if device.type == 'cuda' else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


@dataclass
class _Training:
    """What one training step needs besides the data: the network and how it is optimized."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    device: torch.device
    amp: bool
    scaler: torch.amp.GradScaler | None
    weight: torch.Tensor | None  # class weights of the loss


def _setup_training(config: RunConfig, train_loader: DataLoader, weight: torch.Tensor | None, world: int,
                    device: torch.device) -> _Training:
    """Model, mixed precision, optimizer and per-iteration learning-rate scheduler of this run."""
    hp = config.hp
    model = _prepare_model(config, weight, world, device)
    amp = mixed_precision(hp.amp, device)
    scaler = _grad_scaler(amp, device)
    optimizer = make_optimizer(hp, model)
    scheduler = make_scheduler(hp, optimizer, schedule_steps(hp, len(train_loader)))
    return _Training(model, optimizer, scheduler, device, amp, scaler, weight)


def schedule_steps(hp: Hyperparameters, batches: int) -> int:
    """Optimizer steps per epoch the learning-rate schedule is laid out for.

    SageMaker sets its scheduler up from ``num_training_samples`` (the job's batches per epoch:
    num_training_samples // mini_batch_size); without it, the loader's own count.
    """
    steps = batches
    if hp.num_training_samples:
        steps = max(hp.num_training_samples // hp.mini_batch_size, 1)
        if steps != batches:
            _log(f'num_training_samples {hp.num_training_samples} gives {steps} steps per epoch for the learning-rate '
                 f'schedule, but the training data gives {batches}: the schedule follows num_training_samples, as '
                 "SageMaker's does")
    return min(steps, hp.max_iterations) if hp.max_iterations else steps


# --- The epoch loop: one epoch of training, then validation ----------------------------------------------


def _train_and_validate(training: _Training, loaders: _Loaders, hp: Hyperparameters, classes: ClassTable,
                        epoch: int) -> dict:
    """One epoch of training, then validation; returns the epoch's record for ``metrics.jsonl``."""
    if loaders.sampler is not None:
        loaders.sampler.set_epoch(epoch)
    t0 = time.perf_counter()
    loss = train_one_epoch(training.model, training.optimizer, training.scheduler, loaders.train, training.device,
                           epoch=epoch, amp=training.amp, scaler=training.scaler, max_iterations=hp.max_iterations,
                           weight=training.weight, ohem_threshold=hp.ohem_threshold)
    # Validation in full precision, like the exported model, so the numbers match seg_eval.
    matrix = evaluate(training.model, loaders.val, training.device, hp.num_classes)
    # validation:mIOU is the definition miou_classes picks; both are logged under their own names.
    return {'epoch': epoch, 'train:loss': loss, **validation_scores(matrix, hp.miou_classes),
            'validation:iou': dict(zip(classes.names, matrix.compute().iou, strict=True)),
            'learning_rate': training.optimizer.param_groups[0]['lr'], 'seconds': time.perf_counter() - t0}


def _log_epoch(record: dict, *, epochs: int, elapsed_s: float, done: int) -> None:
    """The epoch's one-line summary (SageMaker's metric names, as its log parsers expect), elapsed and ETA."""
    eta = elapsed_s / max(done, 1) * (epochs - record['epoch'] - 1)
    _log(f'epoch {record["epoch"]}/{epochs - 1}: elapsed {elapsed_s / 60:.1f} min, ETA {eta / 60:.1f} min; '
         f'train:loss={record["train:loss"]:.4f} '
         f'validation:mIOU={record["validation:mIOU"]:.4f} '
         f'validation:pixel_accuracy={record["validation:pixel_accuracy"]:.4f} '
         f'{MIOU_PRESENT}={record[MIOU_PRESENT]:.4f} {MIOU_ALL}={record[MIOU_ALL]:.4f} ({record["seconds"]:.0f} s)')


@dataclass
class _Progress:
    """Early-stopping state, kept in ``checkpoint.pt``: the best record so far, epochs since it."""

    best: dict = field(default_factory=lambda: {'validation:mIOU': -1.0})
    stale: int = 0

    def update(self, record: dict, tolerance: float) -> bool:
        """Count an epoch in; True when its mIOU beats the best by more than ``tolerance`` (relative)."""
        improved = record['validation:mIOU'] > self.best['validation:mIOU'] * (1 + tolerance)
        self.stale = 0 if improved else self.stale + 1
        if improved:
            self.best = {k: v for k, v in record.items() if k != 'validation:iou'}
        return improved

    def should_stop(self, hp: Hyperparameters, epoch: int) -> bool:
        """Early stopping: past the minimum epochs and no improvement for ``patience`` epochs."""
        return (hp.early_stopping and epoch + 1 >= hp.early_stopping_min_epochs
                and self.stale >= hp.early_stopping_patience)


# --- Checkpointing: resume, save best and last ------------------------------------------------------------


def checkpoint_payload(model: nn.Module, hp: Hyperparameters, classes: ClassTable, *, fmt: str,
                       epoch: int, metrics: dict) -> dict:
    """Everything export and evaluation need, in plain types (safe to load with weights_only)."""
    base = model.module if hasattr(model, 'module') else model
    return {'model': base.state_dict(), 'epoch': epoch, 'hyperparameters': as_dict(hp), 'format': fmt,
            'classes': list(classes.names), 'palette': [list(c) for c in classes.palette],
            'mean': list(IMAGENET_MEAN), 'std': list(IMAGENET_STD), 'metrics': metrics}


def _resume(config: RunConfig, training: _Training, world: int) -> tuple[int, _Progress]:
    """Restore weights, optimizer, scheduler and progress from ``--resume``; return the first epoch to run."""
    if config.resume is None:
        return 0, _Progress()
    saved = load_checkpoint(config.resume, role='resume_checkpoint')
    if 'optimizer' not in saved:
        msg = (f'{config.resume} holds no optimizer state (a best-model checkpoint): --resume continues from a '
               "run's checkpoint.pt; start a new run from this model with --init_checkpoint")
        raise ValueError(msg)
    _check_compatible(config.hp, saved['hyperparameters'], config.resume)
    (training.model.module if world > 1 else training.model).load_state_dict(saved['model'])
    training.optimizer.load_state_dict(saved['optimizer'])
    training.scheduler.load_state_dict(saved['lr_scheduler'])
    return saved['epoch'] + 1, _Progress(saved['best'], saved['stale_epochs'])


def _save_epoch(config: RunConfig, training: _Training, classes: ClassTable, record: dict, progress: _Progress,
                *, improved: bool) -> None:
    """On rank 0: append the record to ``metrics.jsonl``; write ``model_best.pt`` if improved, ``checkpoint.pt``."""
    if _rank() != 0:
        return
    with (config.output / 'metrics.jsonl').open('a') as log:
        log.write(json.dumps(record, allow_nan=True) + '\n')
    payload = checkpoint_payload(training.model, config.hp, classes, fmt=config.format, epoch=record['epoch'],
                                 metrics=dict(record))
    if improved:
        _save_whole(payload, config.output / 'model_best.pt')
    # The last epoch also keeps what --resume needs to continue exactly where it stopped.
    _save_whole(payload | {'optimizer': training.optimizer.state_dict(),
                           'lr_scheduler': training.scheduler.state_dict(),
                           'best': progress.best, 'stale_epochs': progress.stale}, config.output / 'checkpoint.pt')


def _save_whole(payload: dict, path: Path) -> None:
    """torch.save under a temporary name, then rename: an interrupted save never leaves half a checkpoint."""
    partial = path.with_name(path.name + '.partial')
    torch.save(payload, partial)
    os.replace(partial, path)


def _write_artifacts(config: RunConfig, classes: ClassTable, best: dict) -> None:
    """On rank 0: the run folder's manifest.json and, with ``--model_tar``, the model.tar.gz artifact."""
    if _rank() != 0 or 'epoch' not in best or not (config.output / 'model_best.pt').is_file():
        return
    summary = {'hyperparameters': as_dict(config.hp), 'classes': list(classes.names), 'epoch': best['epoch'],
               'metrics': best}
    # A tarball SageMaker makes of the run folder is then an artifact that --resume can continue.
    write_manifest(config.output, summary, {'checkpoint': 'model_best.pt', 'resume_checkpoint': 'checkpoint.pt'},
                   writer='seg_train')
    if config.model_tar is not None:
        write_artifact(config.model_tar, summary, {'checkpoint': ('model_best.pt',
                                                                  (config.output / 'model_best.pt').read_bytes())},
                       writer='seg_train', hyperparameters=sagemaker_hyperparameters(as_dict(config.hp)))
        _log(f'wrote {config.model_tar}')


def _log_notes(config: RunConfig) -> None:
    """Say what a SageMaker user could expect to act but does not (each a log line, never an error)."""
    for note in run_notes(config.hp, config.ignored):
        _log(note)
    channel = config.data / 'model'
    if channel.is_dir() and config.init_checkpoint is None and config.resume is None:
        _log(f"{channel} looks like SageMaker's incremental-training channel; it is used only when passed as "
             '--init_checkpoint (a seg_node model.tar.gz or checkpoint)')


def train(config: RunConfig, *, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Run training; return the best epoch's record (metrics and checkpoint path)."""
    hp = config.hp
    for start_from in (config.init_checkpoint, config.resume):
        if start_from is not None and is_artifact(start_from):
            read_artifact(start_from)  # a foreign (e.g. MXNet) archive is refused before any data is read
    world, device = _init_process(config)
    _log_notes(config)
    classes = _classes(config)
    loaders = _loaders(config, classes, world)
    weight = _class_weights(hp, loaders.train.dataset, classes, device)
    training = _setup_training(config, loaders.train, weight, world, device)
    start, progress = _resume(config, training, world)
    if start:
        _log(f'resuming {config.resume} after its epoch {start - 1}')
    config.output.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    for epoch in range(start, hp.epochs):
        record = _train_and_validate(training, loaders, hp, classes, epoch)
        improved = progress.update(record, hp.early_stopping_tolerance)
        _save_epoch(config, training, classes, record, progress, improved=improved)
        _log_epoch(record, epochs=hp.epochs, elapsed_s=time.perf_counter() - began, done=epoch - start + 1)
        if on_epoch is not None:
            on_epoch(record)
        if progress.should_stop(hp, epoch):
            _log(f'early stopping: no mIOU improvement for {progress.stale} epochs')
            break
    _write_artifacts(config, classes, progress.best)
    return progress.best | {'checkpoint': str(config.output / 'model_best.pt')}


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``seg_train``."""
    try:
        config = parse_args(argv)
        best = train(config)
        if 'epoch' in best:
            _log(f'best epoch {best["epoch"]}: validation:mIOU={best["validation:mIOU"]:.4f} '
                 f'validation:pixel_accuracy={best["validation:pixel_accuracy"]:.4f} -> {best["checkpoint"]}')
    except ValueError as err:  # DatasetError is a ValueError: one sentence naming the file
        print(f'seg_train: error: {err}', file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == '__main__':
    sys.exit(main())
