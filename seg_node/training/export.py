"""``seg_export``: checkpoint -> ONNX model that meets seg_node's model contract, verified.

Options: uint8 NHWC input with normalization in the graph; scores as logits (default), as
per-pixel class probabilities (softmax in the graph, ``--probabilities``) or as class ids + uint8
confidence (argmax in the graph, ``--argmax``); fp16 weights; fixed H x W. PSPNet's adaptive
pooling exports only at a fixed size, so a PSP model always gets one (``seg_node.fixed_input_size``
says so). Every export ends with ONNX Runtime vs PyTorch on fresh random inputs and fails below
99.9 % (fp32) / 99 % (fp16) argmax agreement; the file is only written when it passes.
``--model-tar`` also packs the checkpoint and the ONNX model into a model.tar.gz artifact.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from seg_node.model.contract import KEY_SCORES, metadata_props, set_metadata
from seg_node.training.artifact import write_artifact
from seg_node.training.hyperparameters import sagemaker_hyperparameters, saved_hyperparameters
from seg_node.training.models import build_network
from seg_node.training.sagemaker import MIOU_ALL, MIOU_PRESENT
from seg_node.training.train import load_checkpoint

__all__ = ['ExportError', 'ExportOptions', 'ModelDescription', 'Verification', 'export_checkpoint', 'export_network',
           'load_network', 'verify']

OPSET = 17
# onnx 1.23 stamps IR version 14, which onnxruntime 1.31 refuses; 10 covers opset 17.
IR_VERSION = 10
MIN_AGREEMENT = {'fp32': 0.999, 'fp16': 0.99}


class ExportError(RuntimeError):
    """Export or its verification failed; nothing was written."""


@dataclass(frozen=True)
class ExportOptions:
    """What kind of ONNX model to write."""

    input_format: str = 'float'  # 'float' ([N,3,H,W] normalized) or 'uint8' ([N,H,W,3] RGB)
    argmax: bool = False
    probabilities: bool = False  # softmax scores [N,C,H,W] instead of logits
    fp16: bool = False
    height: int | None = None
    width: int | None = None
    opset: int = OPSET


@dataclass(frozen=True)
class Verification:
    """ONNX Runtime vs PyTorch on random inputs."""

    argmax_agreement: float
    max_relative_error: float  # relative L2 error of the logits or probabilities (NaN for argmax models)
    confidence_max_error: float  # in 1/255 steps (NaN without a confidence output)
    pixels: int

    def __str__(self) -> str:
        text = f'argmax agreement {self.argmax_agreement * 100:.3f} % over {self.pixels} pixels'
        if not np.isnan(self.max_relative_error):
            text += f', scores relative error {self.max_relative_error:.2e}'
        if not np.isnan(self.confidence_max_error):
            text += f', confidence max error {self.confidence_max_error:.0f}/255'
        return text


class DeployWrapper(nn.Module):
    """The exported graph: contract input -> network -> scores, or class ids and confidence."""

    def __init__(self, model: nn.Module, *, options: ExportOptions, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        self.model, self.uint8, self.argmax = model, options.input_format == 'uint8', options.argmax
        self.probabilities = options.probabilities
        dtype = torch.float16 if options.fp16 else torch.float32
        self.register_buffer('mean', torch.tensor(mean, dtype=dtype).view(1, 3, 1, 1) * 255)
        self.register_buffer('inv_std', 1 / (torch.tensor(std, dtype=dtype).view(1, 3, 1, 1) * 255))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits or probabilities [N,C,H,W], or (class ids uint8 [N,H,W], confidence uint8 [N,H,W])."""
        if self.uint8:
            x = (x.permute(0, 3, 1, 2).to(self.mean.dtype) - self.mean) * self.inv_std
        logits = self.model(x)['out']
        if self.probabilities:
            # In float32 even for fp16 models: probabilities of rare classes underflow in half precision.
            return logits.float().softmax(1)
        if not self.argmax:
            return logits
        top = logits.max(1, keepdim=True).values
        # max softmax probability = 1 / sum(exp(logits - max)); no full softmax needed.
        confidence = 1 / torch.exp(logits - top).sum(1)
        ids = logits.argmax(1).to(torch.uint8)
        return ids, (confidence.float() * 255 + 0.5).clamp(0, 255).to(torch.uint8)


def load_network(checkpoint: dict) -> nn.Module:
    """Rebuild the network of a checkpoint (no auxiliary head, no pretrained download)."""
    hp = saved_hyperparameters(checkpoint['hyperparameters'])
    model = build_network(algorithm=hp['algorithm'], backbone=hp['backbone'], num_classes=hp['num_classes'],
                          use_pretrained_model=False, output_stride=hp['output_stride'], decoder=hp['decoder'])
    state = {k: v for k, v in checkpoint['model'].items() if not k.startswith('aux_classifier.')}
    model.load_state_dict(state)
    return model.eval()


def _export_size(hp: dict, options: ExportOptions) -> tuple[tuple[int, int], bool]:
    """(H, W) to trace at and whether the exported input size is fixed."""
    if options.height and options.width:
        return (options.height, options.width), True
    if options.height or options.width:
        msg = 'give both --height and --width, or neither'
        raise ExportError(msg)
    if hp['algorithm'] == 'psp':  # adaptive pooling needs static shapes in ONNX
        size = hp.get('eval_size') or [hp['crop_size'], hp['crop_size']]
        return (int(size[0]), int(size[1])), True
    return (hp['crop_size'], hp['crop_size']), False


def _random_batch(rng: np.random.Generator, n: int, size: tuple[int, int]) -> np.ndarray:
    # Smooth random images: noise at 1/8 resolution upsampled, plus fine noise.
    coarse = rng.integers(0, 256, (n, max(size[0] // 8, 1), max(size[1] // 8, 1), 3)).astype(np.float32)
    up = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(0, 3, 1, 2), size=size,
                                         mode='bilinear', align_corners=False)
    up = up.permute(0, 2, 3, 1).numpy()
    return np.clip(up + rng.normal(0, 20, up.shape), 0, 255).astype(np.uint8)


def verify(model_bytes: bytes, reference: nn.Module, *, options: ExportOptions, mean: Sequence[float],
           std: Sequence[float], sizes: Sequence[tuple[int, int]], seed: int = 0) -> Verification:
    """Compare ONNX Runtime with the fp32 PyTorch model on fresh random batches of ``sizes``."""
    session = ort.InferenceSession(model_bytes, providers=['CPUExecutionProvider'])
    rng = np.random.default_rng(seed)
    ref_wrapper = DeployWrapper(reference, options=ExportOptions(argmax=options.argmax,
                                                                 probabilities=options.probabilities),
                                mean=mean, std=std)
    agree = pixels = 0
    rel_err, conf_err = 0.0, 0.0
    for size in sizes:
        images = _random_batch(rng, 2, size)
        floats = (images.astype(np.float32) / 255 - np.array(mean, np.float32)) / np.array(std, np.float32)
        floats = np.ascontiguousarray(floats.transpose(0, 3, 1, 2))
        with torch.inference_mode():
            ref = ref_wrapper(torch.from_numpy(floats))
        dtype = np.float16 if options.fp16 else np.float32
        feed = images if options.input_format == 'uint8' else floats.astype(dtype)
        outputs = session.run(None, {session.get_inputs()[0].name: feed})
        if options.argmax:
            ref_ids, ref_conf = (t.numpy() for t in ref)
            agree += int((outputs[0] == ref_ids).sum())
            same = outputs[0] == ref_ids
            diff = np.abs(outputs[1].astype(np.int16) - ref_conf)[same]
            conf_err = max(conf_err, float(diff.max(initial=0)))
            pixels += ref_ids.size
            rel_err = float('nan')
        else:
            ref_logits = ref.numpy()
            got = outputs[0].astype(np.float32)
            norm = max(float(np.linalg.norm(ref_logits)), 1e-12)
            rel_err = max(rel_err, float(np.linalg.norm(got - ref_logits)) / norm)
            agree += int((got.argmax(1) == ref_logits.argmax(1)).sum())
            pixels += ref_logits.shape[0] * ref_logits.shape[2] * ref_logits.shape[3]
            conf_err = float('nan')
    return Verification(agree / pixels, rel_err, conf_err, pixels)


def _set_shape(info: onnx.ValueInfoProto, dims: Sequence[int | str]) -> None:
    shape = info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        entry = shape.dim.add()
        if isinstance(d, int):
            entry.dim_value = d
        else:
            entry.dim_param = d


def _to_onnx(wrapper: nn.Module, example: torch.Tensor, *, options: ExportOptions, fixed: bool,
             num_classes: int) -> onnx.ModelProto:
    h, w = example.shape[1:3] if options.input_format == 'uint8' else example.shape[2:4]
    hw: list[int | str] = [int(h), int(w)] if fixed else ['H', 'W']
    uint8 = options.input_format == 'uint8'
    input_dims = {0: 'N'} if fixed else ({0: 'N', 1: 'H', 2: 'W'} if uint8 else {0: 'N', 2: 'H', 3: 'W'})
    out_names = ['class_ids', 'confidence'] if options.argmax else (
        ['probabilities'] if options.probabilities else ['scores'])
    spatial = {1: 'H', 2: 'W'} if options.argmax else {2: 'H', 3: 'W'}
    out_dims = {0: 'N'} if fixed else {0: 'N', **spatial}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; torch 2.14 (pinned) still ships it and it handles these models well.
        warnings.simplefilter('ignore')
        torch.onnx.export(wrapper, (example,), buffer, dynamo=False, opset_version=options.opset,
                          input_names=['input'], output_names=out_names, do_constant_folding=True,
                          dynamic_axes={'input': input_dims, **{name: out_dims for name in out_names}})
    model = onnx.load_from_string(buffer.getvalue())
    model.ir_version = IR_VERSION
    # Shape inference loses the class dimension behind the dynamic Resize; the contract needs it.
    _set_shape(model.graph.input[0], ['N', *hw, 3] if uint8 else ['N', 3, *hw])
    for out in model.graph.output:
        _set_shape(out, ['N', *hw] if options.argmax else ['N', num_classes, *hw])
    return model


def _check_options(options: ExportOptions) -> None:
    if options.input_format not in ('float', 'uint8'):
        msg = f'input format must be float or uint8, got {options.input_format!r}'
        raise ExportError(msg)
    if options.opset < 17:
        msg = f'opset must be 17 or newer, got {options.opset}'
        raise ExportError(msg)
    if options.argmax and options.probabilities:
        msg = 'choose --argmax (class ids and confidence) or --probabilities (per-class probabilities), not both'
        raise ExportError(msg)


@dataclass(frozen=True)
class ModelDescription:
    """What the exported file says about its network: class table, normalization, metadata extras."""

    classes: Sequence[str]
    palette: Sequence[Sequence[int]]
    mean: Sequence[float]
    std: Sequence[float]
    extra: dict


def export_network(reference: nn.Module, deploy: nn.Module, output: str | Path, *, options: ExportOptions,
                   description: ModelDescription, size: tuple[int, int], fixed: bool) -> Verification:
    """Trace ``deploy`` (``{'out': logits}`` at input size) to ONNX, verify it against ``reference``, write it.

    The one export path of seg_export: trained checkpoints and converted pretrained networks both
    end here. Raises ExportError, writing nothing, when ONNX Runtime disagrees with PyTorch.
    """
    _check_options(options)
    height, width = size
    mean, std = description.mean, description.std
    if options.fp16:
        deploy = deploy.half()
    wrapper = DeployWrapper(deploy, options=options, mean=mean, std=std).eval()
    dtype = torch.float16 if options.fp16 else torch.float32
    example = (torch.zeros(1, height, width, 3, dtype=torch.uint8) if options.input_format == 'uint8'
               else torch.zeros(1, 3, height, width, dtype=dtype))
    model = _to_onnx(wrapper, example, options=options, fixed=fixed, num_classes=len(description.classes))
    extra = dict(description.extra)
    extra['seg_node.fixed_input_size'] = fixed
    extra['seg_node.precision'] = 'fp16' if options.fp16 else 'fp32'
    if not options.argmax:
        extra[KEY_SCORES] = 'probabilities' if options.probabilities else 'logits'
    props = metadata_props(classes=description.classes, palette=description.palette, mean=mean,
                           std=std, input_size=(height, width) if fixed else None, extra=extra)
    set_metadata(model, props)
    onnx.checker.check_model(model)
    model_bytes = model.SerializeToString()
    # A second, different size exercises the dynamic axes (as torchvision's ONNX tests do).
    sizes = [(height, width)] if fixed else [(height, width), (height + 32, width + 64)]
    result = verify(model_bytes, reference, options=options, mean=mean, std=std, sizes=sizes)
    needed = MIN_AGREEMENT['fp16' if options.fp16 else 'fp32']
    if not result.argmax_agreement >= needed:
        msg = f'verification failed: {result} (needs {needed * 100:.1f} %); {output} not written'
        raise ExportError(msg)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(model_bytes)
    return result


def export_checkpoint(checkpoint_path: str | Path, output: str | Path,
                      options: ExportOptions | None = None) -> Verification:
    """Export, verify, then write ``output``; raise ExportError (writing nothing) on failure."""
    options = options or ExportOptions()
    _check_options(options)
    checkpoint = load_checkpoint(checkpoint_path)
    hp, mean, std = saved_hyperparameters(checkpoint['hyperparameters']), checkpoint['mean'], checkpoint['std']
    size, fixed = _export_size(hp, options)
    metrics = checkpoint.get('metrics', {})
    extra = {
        'seg_node.algorithm': hp['algorithm'], 'seg_node.backbone': hp['backbone'],
        'seg_node.output_stride': hp['output_stride'], 'seg_node.decoder': hp['decoder'],
        'seg_node.epoch': checkpoint.get('epoch'),
        'seg_node.metrics': {k: metrics[k] for k in ('validation:mIOU', 'validation:pixel_accuracy',
                                                     MIOU_PRESENT, MIOU_ALL) if k in metrics},
    }
    description = ModelDescription(checkpoint['classes'], checkpoint['palette'], mean, std, extra)
    return export_network(load_network(checkpoint), load_network(checkpoint), output, options=options,
                          description=description, size=size, fixed=fixed)


def write_model_tar(checkpoint_path: str | Path, onnx_path: str | Path, output: str | Path,
                    options: ExportOptions | None = None) -> Path:
    """Pack a checkpoint (without optimizer state) and its exported ONNX model into a model.tar.gz."""
    checkpoint = load_checkpoint(checkpoint_path)
    best = {k: v for k, v in checkpoint.items() if k not in ('optimizer', 'lr_scheduler', 'best', 'stale_epochs')}
    buffer = io.BytesIO()
    torch.save(best, buffer)
    options = options or ExportOptions()
    hp = saved_hyperparameters(checkpoint['hyperparameters'])
    return write_artifact(output, best, {'checkpoint': ('model.pt', buffer.getvalue()),
                                         'onnx': ('model.onnx', Path(onnx_path).read_bytes())},
                          writer='seg_export', hyperparameters=sagemaker_hyperparameters(hp),
                          extra={'onnx_export': dataclasses.asdict(options)})
