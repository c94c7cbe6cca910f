"""The model contract: what an ONNX segmentation model must look like for seg_node.

Input: one tensor, float32/float16 ``[N,3,H,W]`` RGB normalized as
``(pixel/255 - mean) / std``, or uint8 ``[N,H,W,3]`` RGB (normalization inside the graph).
Output 0: float scores ``[N,C,h,w]`` or integer class ids ``[N,h,w]``; optional output 1:
confidence ``[N,h,w]`` (float in [0, 1] or uint8). Metadata keys (all optional) are the
``KEY_*`` constants below; node parameters override them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from seg_node.model.classes import default_class_table

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

KEY_CLASSES = 'seg_node.classes'
KEY_PALETTE = 'seg_node.palette'
KEY_MEAN = 'seg_node.mean'
KEY_STD = 'seg_node.std'
KEY_INPUT_SIZE = 'seg_node.input_size'
# 'logits' (default) or 'probabilities': decides how confidence is computed from scores.
KEY_SCORES = 'seg_node.scores'

FLOAT_NCHW = 'float_nchw'
UINT8_NHWC = 'uint8_nhwc'
SCORES = 'scores'
CLASS_IDS = 'class_ids'

_FLOAT_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16}
_INT_TYPES = {
    onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT64: np.int64,
}
MAX_CLASSES = 255  # class ids travel as mono8 and 255 is kept free for "ignore"


class ModelContractError(ValueError):
    """The model (or an override) does not meet the seg_node model contract."""


@dataclass(frozen=True)
class ModelOverrides:
    """Values that replace the model's metadata; ``None`` keeps the model's own."""

    classes: Sequence[str] | None = None
    palette: Sequence[Sequence[int]] | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    input_size: Sequence[int] | None = None


@dataclass(frozen=True)
class ModelSpec:
    """Everything the engine needs to know about a model, validated."""

    input_name: str
    input_layout: str
    input_dtype: np.dtype
    batch_size: int | None  # None: dynamic batch
    input_size: tuple[int, int] | None  # (H, W) frames are resized to; None: native size
    output_name: str
    output_kind: str
    output_dtype: np.dtype
    confidence_name: str | None
    confidence_dtype: np.dtype | None
    scores: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes the model predicts."""
        return len(self.classes)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField('dim_value') else None for d in shape.dim]


def _elem_type(value_info: onnx.ValueInfoProto) -> int:
    return value_info.type.tensor_type.elem_type


def _json(metadata: Mapping[str, str], key: str) -> object | None:
    if key not in metadata:
        return None
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as err:
        msg = f'model metadata {key} is not valid JSON ({err.msg})'
        raise ModelContractError(msg) from None


def _triple(value: object, what: str) -> tuple[float, float, float]:
    if not (isinstance(value, Sequence) and len(value) == 3
            and all(isinstance(v, (int, float)) for v in value)):
        msg = f'{what} must be a list of 3 numbers, got {value!r}'
        raise ModelContractError(msg)
    return (float(value[0]), float(value[1]), float(value[2]))


def _input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        msg = f'the model must have exactly one input tensor, it has {len(inputs)}'
        raise ModelContractError(msg)
    return inputs[0]


def _input_layout(value_info: onnx.ValueInfoProto) -> tuple[str, np.dtype]:
    dims, elem = _dims(value_info), _elem_type(value_info)
    if len(dims) != 4:
        msg = (f'model input {value_info.name!r} must have rank 4 ([N,3,H,W] float or '
               f'[N,H,W,3] uint8), it has rank {len(dims)}')
        raise ModelContractError(msg)
    if elem in _FLOAT_TYPES:
        if dims[1] != 3:
            msg = f'float model input {value_info.name!r} must be [N,3,H,W], got {dims}'
            raise ModelContractError(msg)
        return FLOAT_NCHW, np.dtype(_FLOAT_TYPES[elem])
    if elem == onnx.TensorProto.UINT8:
        if dims[3] != 3:
            msg = f'uint8 model input {value_info.name!r} must be [N,H,W,3], got {dims}'
            raise ModelContractError(msg)
        return UINT8_NHWC, np.dtype(np.uint8)
    type_name = onnx.TensorProto.DataType.Name(elem)
    msg = f'model input {value_info.name!r} has type {type_name}; expected float, float16 or uint8'
    raise ModelContractError(msg)


def _input_size(dims: list[int | None], layout: str, metadata: Mapping[str, str],
                override: Sequence[int] | None) -> tuple[int, int] | None:
    fixed = (dims[2], dims[3]) if layout == FLOAT_NCHW else (dims[1], dims[2])
    requested = override if override else _json(metadata, KEY_INPUT_SIZE)
    if requested is not None:
        if not (isinstance(requested, Sequence) and len(requested) == 2
                and all(isinstance(v, int) and v > 0 for v in requested)):
            msg = f'input_size must be two positive integers [H, W], got {requested!r}'
            raise ModelContractError(msg)
        size = (int(requested[0]), int(requested[1]))
        if all(fixed) and size != fixed:
            msg = f'input_size {list(size)} contradicts the model input size {list(fixed)}'
            raise ModelContractError(msg)
        return size
    if all(fixed):
        return (int(fixed[0]), int(fixed[1]))
    return None


def _output(model: onnx.ModelProto) -> tuple[onnx.ValueInfoProto, str, int | None]:
    outputs = list(model.graph.output)
    if not 1 <= len(outputs) <= 2:
        msg = f'the model must have 1 or 2 outputs (scores or class ids, confidence), it has {len(outputs)}'
        raise ModelContractError(msg)
    out = outputs[0]
    dims, elem = _dims(out), _elem_type(out)
    if len(dims) == 4 and elem in _FLOAT_TYPES:
        if dims[1] is None:
            msg = f'model output {out.name!r} must have a fixed class dimension C in [N,C,h,w]'
            raise ModelContractError(msg)
        return out, SCORES, dims[1]
    if len(dims) == 3 and elem in _INT_TYPES:
        return out, CLASS_IDS, None
    type_name = onnx.TensorProto.DataType.Name(elem)
    msg = (f'model output {out.name!r} is {type_name} of rank {len(dims)}; expected float '
           f'scores [N,C,h,w] or integer class ids [N,h,w]')
    raise ModelContractError(msg)


def _confidence(model: onnx.ModelProto) -> tuple[str | None, np.dtype | None]:
    if len(model.graph.output) < 2:
        return None, None
    conf = model.graph.output[1]
    dims, elem = _dims(conf), _elem_type(conf)
    if len(dims) != 3 or elem not in (*_FLOAT_TYPES, onnx.TensorProto.UINT8):
        type_name = onnx.TensorProto.DataType.Name(elem)
        msg = (f'model output {conf.name!r} must be a confidence map [N,h,w] of float or '
               f'uint8, got {type_name} of rank {len(dims)}')
        raise ModelContractError(msg)
    dtype = np.uint8 if elem == onnx.TensorProto.UINT8 else _FLOAT_TYPES[elem]
    return conf.name, np.dtype(dtype)


def _class_table(num_classes: int | None, metadata: Mapping[str, str],
                 overrides: ModelOverrides) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    classes = overrides.classes or _json(metadata, KEY_CLASSES)
    palette = overrides.palette or _json(metadata, KEY_PALETTE)
    if classes is not None and not (isinstance(classes, Sequence)
                                    and all(isinstance(c, str) for c in classes)):
        msg = f'classes must be a list of names, got {classes!r}'
        raise ModelContractError(msg)
    if num_classes is None:
        if not classes:
            msg = ('a model that outputs class ids must name its classes (metadata '
                   f'{KEY_CLASSES} or the classes parameter)')
            raise ModelContractError(msg)
        num_classes = len(classes)
    if not 1 <= num_classes <= MAX_CLASSES:
        msg = f'the model predicts {num_classes} classes; seg_node supports 1 to {MAX_CLASSES}'
        raise ModelContractError(msg)
    default = default_class_table(num_classes)
    if classes and len(classes) != num_classes:
        msg = f'{len(classes)} class names given for a model that predicts {num_classes} classes'
        raise ModelContractError(msg)
    if palette:
        if not (isinstance(palette, Sequence) and all(
                isinstance(c, Sequence) and len(c) == 3
                and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette)):
            msg = f'palette must be a list of [r, g, b] triples in 0..255, got {palette!r}'
            raise ModelContractError(msg)
        if len(palette) < num_classes:
            msg = f'palette has {len(palette)} colours for {num_classes} classes'
            raise ModelContractError(msg)
    names = tuple(classes) if classes else default.names
    colours = palette[:num_classes] if palette else default.palette
    return names, tuple((int(c[0]), int(c[1]), int(c[2])) for c in colours)


def read_model_spec(model: onnx.ModelProto, overrides: ModelOverrides | None = None) -> ModelSpec:
    """Validate ``model`` against the contract and return its spec.

    Raises ModelContractError with one sentence naming the problem.
    """
    overrides = overrides or ModelOverrides()
    metadata = {p.key: p.value for p in model.metadata_props}
    inp = _input(model)
    layout, input_dtype = _input_layout(inp)
    dims = _dims(inp)
    out, output_kind, num_classes = _output(model)
    confidence_name, confidence_dtype = _confidence(model)
    classes, palette = _class_table(num_classes, metadata, overrides)
    mean = _triple(overrides.mean or _json(metadata, KEY_MEAN) or IMAGENET_MEAN, 'mean')
    std = _triple(overrides.std or _json(metadata, KEY_STD) or IMAGENET_STD, 'std')
    if min(std) <= 0:
        msg = f'std must be positive, got {list(std)}'
        raise ModelContractError(msg)
    scores = metadata.get(KEY_SCORES, 'logits')
    if scores not in ('logits', 'probabilities'):
        msg = f'model metadata {KEY_SCORES} must be "logits" or "probabilities", got {scores!r}'
        raise ModelContractError(msg)
    out_elem = _elem_type(out)
    output_dtype = np.dtype((_FLOAT_TYPES | _INT_TYPES)[out_elem])
    return ModelSpec(
        input_name=inp.name, input_layout=layout, input_dtype=input_dtype,
        batch_size=dims[0], input_size=_input_size(dims, layout, metadata, overrides.input_size),
        output_name=out.name, output_kind=output_kind, output_dtype=output_dtype,
        confidence_name=confidence_name, confidence_dtype=confidence_dtype, scores=scores,
        classes=classes, palette=palette, mean=mean, std=std, metadata=metadata,
    )


def metadata_props(*, classes: Sequence[str], palette: Sequence[Sequence[int]],
                   mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   input_size: Sequence[int] | None = None,
                   extra: Mapping[str, object] | None = None) -> dict[str, str]:
    """Encode a class table and normalization as seg_node metadata (JSON strings)."""
    props = {
        KEY_CLASSES: json.dumps(list(classes)),
        KEY_PALETTE: json.dumps([list(map(int, c)) for c in palette]),
        KEY_MEAN: json.dumps(list(map(float, mean))),
        KEY_STD: json.dumps(list(map(float, std))),
    }
    if input_size is not None:
        props[KEY_INPUT_SIZE] = json.dumps(list(map(int, input_size)))
    for key, value in (extra or {}).items():
        props[key] = value if isinstance(value, str) else json.dumps(value)
    return props


def set_metadata(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Write ``props`` into ``model.metadata_props``, replacing keys that exist."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
