"""Small contract models whose right answer is known, for tests, benchmarks and smoke runs.

``palette_classifier`` labels each pixel with the nearest palette colour: a 1x1 convolution
with weights ``2 p_c`` and bias ``-|p_c|^2`` scores ``-|x - p_c|^2 + |x|^2``, so its argmax is
exact for any frame painted in palette colours. It is built with onnx.helper (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from seg_node.model.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from seg_node.model.contract import IMAGENET_MEAN, IMAGENET_STD, KEY_SCORES, metadata_props, set_metadata

# Scales the scores so the softmax of an exact palette colour is confidently peaked.
SHARPNESS = 40.0


def palette_classifier(palette: Sequence[Sequence[int]] = CITYSCAPES_PALETTE, *,
                       classes: Sequence[str] | None = CITYSCAPES_CLASSES,
                       input_format: str = 'float', output: str = 'scores',
                       confidence: bool = False, downsample: int = 1,
                       input_size: tuple[int, int] | None = None, batch: int | None = None,
                       mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                       with_metadata: bool = True, opset: int = 17) -> onnx.ModelProto:
    """Build a nearest-palette-colour segmentation model in any form of the contract.

    ``input_format``: 'float' ([N,3,H,W] normalized) or 'uint8' ([N,H,W,3]); ``output``:
    'scores' ([N,C,h,w] logits) or 'class_ids' ([N,h,w] int64, plus a float confidence when
    ``confidence``); ``downsample``: output stride (average pooling before classifying).
    """
    p = np.asarray(palette, np.float32).reshape(-1, 3) / 255.0
    num_classes = p.shape[0]
    h, w = input_size if input_size else ('height', 'width')
    n = batch if batch else 'batch'
    mean_a, std_a = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    if input_format == 'float':
        graph_input = helper.make_tensor_value_info('input', TensorProto.FLOAT, [n, 3, h, w])
        # Fold (x * std + mean) into the convolution: the model sees normalized input.
        weight = 2.0 * p * std_a[None, :]
        bias = 2.0 * (p @ mean_a) - (p * p).sum(axis=1)
        x = 'input'
    elif input_format == 'uint8':
        graph_input = helper.make_tensor_value_info('input', TensorProto.UINT8, [n, h, w, 3])
        nodes += [helper.make_node('Cast', ['input'], ['as_float'], to=TensorProto.FLOAT),
                  helper.make_node('Transpose', ['as_float'], ['nchw'], perm=[0, 3, 1, 2]),
                  helper.make_node('Mul', ['nchw', const('inv255', np.array(1 / 255, np.float32))],
                                   ['unit'])]
        weight = 2.0 * p
        bias = -(p * p).sum(axis=1)
        x = 'unit'
    else:
        msg = f'input_format must be "float" or "uint8", got {input_format!r}'
        raise ValueError(msg)
    if downsample > 1:
        nodes.append(helper.make_node('AveragePool', [x], ['pooled'],
                                      kernel_shape=[downsample, downsample],
                                      strides=[downsample, downsample]))
        x = 'pooled'
    w_name = const('weight', (SHARPNESS * weight).reshape(num_classes, 3, 1, 1).astype(np.float32))
    b_name = const('bias', (SHARPNESS * bias).astype(np.float32))
    nodes.append(helper.make_node('Conv', [x, w_name, b_name], ['scores']))
    oh = h // downsample if isinstance(h, int) else 'out_height'
    ow = w // downsample if isinstance(w, int) else 'out_width'
    if output == 'scores':
        outputs = [helper.make_tensor_value_info('scores', TensorProto.FLOAT, [n, num_classes, oh, ow])]
    elif output == 'class_ids':
        nodes.append(helper.make_node('ArgMax', ['scores'], ['class_ids'], axis=1, keepdims=0))
        outputs = [helper.make_tensor_value_info('class_ids', TensorProto.INT64, [n, oh, ow])]
        if confidence:
            nodes += [helper.make_node('Softmax', ['scores'], ['probs'], axis=1),
                      helper.make_node('ReduceMax', ['probs', const('axis1', np.array([1], np.int64))],
                                       ['confidence'], keepdims=0)]
            outputs.append(helper.make_tensor_value_info('confidence', TensorProto.FLOAT, [n, oh, ow]))
    else:
        msg = f'output must be "scores" or "class_ids", got {output!r}'
        raise ValueError(msg)
    graph = helper.make_graph(nodes, 'palette_classifier', [graph_input], outputs, inits)
    # ReduceMax takes its axes as an input only from opset 18.
    opset = max(opset, 18) if confidence else opset
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)],
                              producer_name='seg_node.model.known_answer')
    # onnx 1.23 writes IR 14, newer than ONNX Runtime 1.31 reads.
    model.ir_version = 10
    if with_metadata:
        names = list(classes) if classes else [f'colour_{i}' for i in range(num_classes)]
        props = metadata_props(classes=names, palette=palette, mean=mean, std=std, input_size=input_size)
        props[KEY_SCORES] = 'logits'
        set_metadata(model, props)
    onnx.checker.check_model(model)
    return model


def palette_scene(seed: int, height: int, width: int,
                  palette: Sequence[Sequence[int]] = CITYSCAPES_PALETTE,
                  *, blocks: int = 12, min_block: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """An RGB frame of random palette-coloured rectangles and its exact class mask."""
    rng = np.random.default_rng(seed)
    colours = np.asarray(palette, np.uint8)
    label = np.full((height, width), rng.integers(len(colours)), np.uint8)
    for _ in range(blocks):
        bh = int(rng.integers(min_block, max(min_block + 1, height // 2)))
        bw = int(rng.integers(min_block, max(min_block + 1, width // 2)))
        y = int(rng.integers(0, max(1, height - bh)))
        x = int(rng.integers(0, max(1, width - bw)))
        label[y:y + bh, x:x + bw] = rng.integers(len(colours))
    return colours[label], label


def boundary_mask(label: np.ndarray, radius: int) -> np.ndarray:
    """True where a pixel lies within ``radius`` pixels of a class boundary."""
    edges = np.zeros(label.shape, bool)
    edges[:-1, :] |= label[:-1, :] != label[1:, :]
    edges[1:, :] |= label[:-1, :] != label[1:, :]
    edges[:, :-1] |= label[:, :-1] != label[:, 1:]
    edges[:, 1:] |= label[:, :-1] != label[:, 1:]
    if radius <= 0:
        return edges
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(edges.astype(np.uint8), kernel) > 0
