"""``seg_build_engine``: build a model's TensorRT engine ahead of time, as the node would.

A TensorRT build takes minutes on first start. Running this once (e.g. in the vehicle's
provisioning) fills ``trt_cache_dir`` with the engine for this model, precision and GPU, so the
node's start-up only loads it. The engine is keyed on the model as the node runs it (with its
``mean``/``std``/``input_size`` overrides baked in) and on the optimization profile, so give the
node's override values here too, or the node builds another engine. On a machine without
TensorRT it says which provider loaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np
import onnx

from seg_node.model.contract import ModelOverrides, read_model_spec
from seg_node.model.file import resolve_model_path
from seg_node.runtime.config import DEFAULT_PROVIDERS, DEFAULT_TRT_CACHE, EngineConfig
from seg_node.runtime.loader import LOAD_ERRORS, ModelRequest, load_model


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='seg_build_engine', description=__doc__.splitlines()[0])
    parser.add_argument('model', help='ONNX model meeting the seg_node model contract')
    parser.add_argument('--providers', nargs='+', default=list(DEFAULT_PROVIDERS))
    parser.add_argument('--trt-cache-dir', default=str(DEFAULT_TRT_CACHE))
    parser.add_argument('--sha256', default='', help='expected SHA-256 of the model file (as model_sha256)')
    parser.add_argument('--fp32', action='store_true', help='build without fp16 layers (trt_fp16: false)')
    parser.add_argument('--device-id', type=int, default=0, help='CUDA device index (as device_id)')
    parser.add_argument('--height', type=int, help='input height (as input_size; needed for dynamic models)')
    parser.add_argument('--width', type=int, help='input width (as input_size; needed for dynamic models)')
    parser.add_argument('--mean', type=float, nargs=3, metavar=('R', 'G', 'B'),
                        help="the node's mean override (0..1 scale), if it has one")
    parser.add_argument('--std', type=float, nargs=3, metavar=('R', 'G', 'B'),
                        help="the node's std override (0..1 scale), if it has one")
    return parser


def _dynamic_without_size(model: str, overrides: ModelOverrides) -> bool:
    """True when the model's input size is dynamic and none was given, found before any build."""
    try:
        spec = read_model_spec(onnx.load(str(resolve_model_path(model)), load_external_data=False), overrides)
    except Exception:  # noqa: BLE001 - load_model reports a missing or bad file in its own words
        return False
    return spec.input_size is None


def main(argv: Sequence[str] | None = None) -> int:
    """Build and cache the engine; exit 0 when TensorRT (or the requested provider) loaded."""
    args = _parser().parse_args(argv)
    if (args.height is None) != (args.width is None):
        print('give both --height and --width, or neither', file=sys.stderr)
        return 2
    size = [args.height, args.width] if args.height is not None else None
    overrides = ModelOverrides(mean=args.mean, std=args.std, input_size=size)
    # A dynamic model without a size would build (minutes on TensorRT) for the 64x64 test frame
    # only, an engine the node never loads: say so before building anything.
    if size is None and _dynamic_without_size(args.model, overrides):
        print('the model has a dynamic input size: give --height and --width (the node\'s input_size)',
              file=sys.stderr)
        return 2
    config = EngineConfig(providers=tuple(args.providers), trt_fp16=not args.fp32,
                          trt_cache_dir=args.trt_cache_dir, device_id=args.device_id)
    start = time.perf_counter()
    try:
        engine = load_model(ModelRequest(args.model, args.sha256, config, overrides)).engine
        if engine.spec.input_size is None:  # only when the early look at the file could not read it
            print('the model has a dynamic input size: give --height and --width', file=sys.stderr)
            return 2
        # TensorRT builds when the session is created (fixed profile) or lazily on the first run:
        # one frame of the real size makes sure the engine is built and cached.
        engine.segment([np.zeros((*engine.spec.input_size, 3), np.uint8)])
    except LOAD_ERRORS as err:
        print(err, file=sys.stderr)
        return 2
    print(f'{args.model}: {engine.provider} engine ready in {time.perf_counter() - start:.1f} s'
          + (f', cached under {engine.trt_cache}' if engine.trt_cache is not None else ''))
    return 0 if engine.provider == args.providers[0] else 1


if __name__ == '__main__':
    sys.exit(main())
