"""Rewrite a contract model so ONNX Runtime does the pre- and post-processing.

Every model the node loads is wrapped the same way: a uint8 ``[N,H,W,3]`` RGB input named
``image`` (cast, transposed and normalized inside the graph when the model wants floats) and
uint8 ``[N,h,w]`` outputs ``class_mask`` and ``confidence``. Only one byte per pixel crosses
into and out of the runtime, and argmax/softmax run in optimized kernels instead of numpy.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from seg_node.model.contract import CLASS_IDS, FLOAT_NCHW, ModelSpec

INPUT = 'image'
CLASS_MASK = 'class_mask'
CONFIDENCE = 'confidence'
_PREFIX = 'seg_node__'


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), 1)


class _Builder:
    """Appends uniquely named nodes and constants to a graph."""

    def __init__(self, graph: onnx.GraphProto, opset: int) -> None:
        self.graph, self.opset, self._count = graph, opset, 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f'{_PREFIX}{hint}_{self._count}'

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs: object) -> str:
        output = output or self.name(op.lower())
        self.graph.node.append(helper.make_node(op, inputs, [output], name=self.name(op), **attrs))
        return output

    def reduce(self, op: str, x: str, axis: int, *, keepdims: int) -> str:
        # ReduceSum takes axes as an input from opset 13, the other reductions from 18.
        axes_as_input = self.opset >= (13 if op == 'ReduceSum' else 18)
        if axes_as_input:
            axes = self.const('axes', np.array([axis], np.int64))
            return self.node(op, [x, axes], keepdims=keepdims)
        return self.node(op, [x], axes=[axis], keepdims=keepdims)

    def to_uint8(self, x: str, output: str, *, scale: float = 1.0) -> str:
        # Round to nearest instead of truncating; the clip keeps float noise inside 0..255.
        if scale != 1.0:
            x = self.node('Mul', [x, self.const('scale', np.array(scale, np.float32))])
        x = self.node('Add', [x, self.const('half', np.array(0.5, np.float32))])
        x = self.node('Clip', [x, self.const('lo', np.array(0.0, np.float32)),
                               self.const('hi', np.array(255.0, np.float32))])
        return self.node('Cast', [x], output, to=TensorProto.UINT8)


def _replace_input(model: onnx.ModelProto, spec: ModelSpec, b: _Builder) -> list[onnx.NodeProto]:
    """Make ``image`` (uint8 NHWC) the graph input; return the nodes that feed the old one."""
    graph = model.graph
    old = next(i for i in graph.input if i.name == spec.input_name)
    dims = [d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
            for d in old.type.tensor_type.shape.dim]
    nhwc = [dims[0], dims[2], dims[3], 3] if spec.input_layout == FLOAT_NCHW else dims
    nhwc = [d if d else f'{_PREFIX}dim{i}' for i, d in enumerate(nhwc)]
    new_input = helper.make_tensor_value_info(INPUT, TensorProto.UINT8, nhwc)
    graph.input.remove(old)
    graph.input.insert(0, new_input)
    first = len(graph.node)
    if spec.input_layout == FLOAT_NCHW:
        mean = np.array(spec.mean, np.float32).reshape(1, 3, 1, 1) * 255.0
        inv_std = 1.0 / (np.array(spec.std, np.float32).reshape(1, 3, 1, 1) * 255.0)
        # Transpose the bytes, then widen them: the transpose moves 1 byte per value, not 4.
        x = b.node('Transpose', [INPUT], perm=[0, 3, 1, 2])
        x = b.node('Cast', [x], to=TensorProto.FLOAT)
        x = b.node('Sub', [x, b.const('mean', mean)])
        if spec.input_dtype == np.float16:
            x = b.node('Mul', [x, b.const('inv_std', inv_std)])
            b.node('Cast', [x], spec.input_name, to=TensorProto.FLOAT16)
        else:
            b.node('Mul', [x, b.const('inv_std', inv_std)], spec.input_name)
    else:
        b.node('Identity', [INPUT], spec.input_name)
    added = list(graph.node[first:])
    for node in added:
        graph.node.remove(node)
    return added


def has_confidence(spec: ModelSpec) -> bool:
    """Whether a wrapped model of ``spec`` can output confidence (scores, or a confidence output of its own)."""
    return spec.output_kind != CLASS_IDS or spec.confidence_name is not None


def _add_outputs(model: onnx.ModelProto, spec: ModelSpec, b: _Builder, *, confidence: bool) -> None:
    graph = model.graph
    out_dims = [d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
                for d in graph.output[0].type.tensor_type.shape.dim]
    if spec.output_kind == CLASS_IDS:
        b.node('Cast', [spec.output_name], CLASS_MASK, to=TensorProto.UINT8)
        mask_dims = out_dims
        if confidence and spec.confidence_name is not None:
            if spec.confidence_dtype == np.uint8:
                b.node('Identity', [spec.confidence_name], CONFIDENCE)
            else:
                conf = b.node('Cast', [spec.confidence_name], to=TensorProto.FLOAT)
                b.to_uint8(conf, CONFIDENCE, scale=255.0)
    else:
        scores = spec.output_name
        if spec.output_dtype != np.float32:
            scores = b.node('Cast', [scores], to=TensorProto.FLOAT)
        ids = b.node('ArgMax', [scores], axis=1, keepdims=0)
        b.node('Cast', [ids], CLASS_MASK, to=TensorProto.UINT8)
        mask_dims = [out_dims[0], out_dims[2], out_dims[3]]
        if confidence and spec.scores == 'logits':
            # max softmax probability = 1 / sum(exp(l - max l)); no full softmax needed.
            top = b.reduce('ReduceMax', scores, 1, keepdims=1)
            shifted = b.node('Exp', [b.node('Sub', [scores, top])])
            b.to_uint8(b.node('Reciprocal', [b.reduce('ReduceSum', shifted, 1, keepdims=0)]), CONFIDENCE,
                       scale=255.0)
        elif confidence:
            b.to_uint8(b.reduce('ReduceMax', scores, 1, keepdims=0), CONFIDENCE, scale=255.0)
    mask_dims = [d if d else f'{_PREFIX}out{i}' for i, d in enumerate(mask_dims)]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(CLASS_MASK, TensorProto.UINT8, mask_dims))
    if confidence and has_confidence(spec):
        graph.output.append(helper.make_tensor_value_info(CONFIDENCE, TensorProto.UINT8, mask_dims))


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.name == old:
            info.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new


def wrap_model(model: onnx.ModelProto, spec: ModelSpec, *, confidence: bool = True) -> onnx.ModelProto:
    """Return a copy of ``model`` with uint8 NHWC input and uint8 mask (and ``confidence``) outputs.

    ONNX Runtime computes every graph output whether it is bound or not, so a graph without the
    confidence branch is what makes a mask-only call cheap (the softmax reduction cost ~7 ms of
    13 ms on a 960x540 float model here).
    """
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    graph = wrapped.graph
    # The wrapper's own tensor names must not collide with the model's.
    renames = {name: f'{_PREFIX}model_{name}' for name in (INPUT, CLASS_MASK, CONFIDENCE)}
    for old, new in renames.items():
        _rename(graph, old, new)
    spec = replace(spec, input_name=renames.get(spec.input_name, spec.input_name),
                   output_name=renames.get(spec.output_name, spec.output_name),
                   confidence_name=renames.get(spec.confidence_name, spec.confidence_name))
    b = _Builder(graph, _opset(wrapped))
    head = _replace_input(wrapped, spec, b)
    _add_outputs(wrapped, spec, b, confidence=confidence)
    # Nodes must stay topologically sorted: the input adapter goes first.
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(head + body)
    return wrapped


PROBABILITIES = 'probabilities'


def wrap_probabilities(model: onnx.ModelProto, spec: ModelSpec) -> onnx.ModelProto:
    """A copy of ``model`` with the uint8 NHWC input and one float32 output ``probabilities`` [N,C,h,w].

    Softmax over the classes of logits (probability scores pass through). A model that outputs
    class ids has no scores to give: ValueError.
    """
    if spec.output_kind == CLASS_IDS:
        msg = 'the model outputs class ids, not scores, so it has no probabilities (export it without --argmax)'
        raise ValueError(msg)
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    graph = wrapped.graph
    renames = {name: f'{_PREFIX}model_{name}' for name in (INPUT, PROBABILITIES)}
    for old, new in renames.items():
        _rename(graph, old, new)
    spec = replace(spec, input_name=renames.get(spec.input_name, spec.input_name),
                   output_name=renames.get(spec.output_name, spec.output_name))
    b = _Builder(graph, _opset(wrapped))
    head = _replace_input(wrapped, spec, b)
    out_dims = [d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
                for d in graph.output[0].type.tensor_type.shape.dim]
    scores = spec.output_name
    if spec.output_dtype != np.float32:
        scores = b.node('Cast', [scores], to=TensorProto.FLOAT)
    if spec.scores == 'logits':
        # exp(l - max l) / sum: Softmax's axis semantics changed at opset 13; this works at any opset.
        top = b.reduce('ReduceMax', scores, 1, keepdims=1)
        shifted = b.node('Exp', [b.node('Sub', [scores, top])])
        b.node('Div', [shifted, b.reduce('ReduceSum', shifted, 1, keepdims=1)], PROBABILITIES)
    else:
        b.node('Identity', [scores], PROBABILITIES)
    dims = [d if d else f'{_PREFIX}out{i}' for i, d in enumerate(out_dims)]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, dims))
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(head + body)
    return wrapped
