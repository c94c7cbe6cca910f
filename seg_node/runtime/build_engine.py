"""``seg_build_engine``: build a model's TensorRT engine ahead of time, as the node would.

A TensorRT build takes minutes on first start. Running this once (e.g. in the vehicle's
provisioning) fills ``trt_cache_dir`` with the engine for this model, precision and GPU, so the
node's start-up only loads it. On a machine without TensorRT it says which provider loaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from seg_node.runtime.config import DEFAULT_PROVIDERS, DEFAULT_TRT_CACHE, EngineConfig
from seg_node.runtime.loader import LOAD_ERRORS, ModelRequest, load_model


def main(argv: Sequence[str] | None = None) -> int:
    """Build and cache the engine; exit 0 when TensorRT (or the requested provider) loaded."""
    parser = argparse.ArgumentParser(prog='seg_build_engine', description=__doc__.splitlines()[0])
    parser.add_argument('model', help='ONNX model meeting the seg_node model contract')
    parser.add_argument('--providers', nargs='+', default=list(DEFAULT_PROVIDERS))
    parser.add_argument('--trt-cache-dir', default=str(DEFAULT_TRT_CACHE))
    parser.add_argument('--sha256', default='', help='expected SHA-256 of the model file (as model_sha256)')
    parser.add_argument('--fp32', action='store_true', help='build without fp16 layers')
    parser.add_argument('--height', type=int, help='input height for models with dynamic size')
    parser.add_argument('--width', type=int, help='input width for models with dynamic size')
    args = parser.parse_args(argv)
    config = EngineConfig(providers=tuple(args.providers), trt_fp16=not args.fp32,
                          trt_cache_dir=args.trt_cache_dir)
    start = time.perf_counter()
    try:
        engine = load_model(ModelRequest(args.model, args.sha256, config)).engine
        size = engine.spec.input_size or (args.height, args.width)
        if None in size:
            print('the model has a dynamic input size: give --height and --width', file=sys.stderr)
            return 2
        # TensorRT builds lazily on the first run; one frame of the real size triggers it.
        engine.segment([np.zeros((*size, 3), np.uint8)])
    except LOAD_ERRORS as err:
        print(err, file=sys.stderr)
        return 2
    print(f'{args.model}: {engine.provider} engine ready in {time.perf_counter() - start:.1f} s'
          + (f', cached under {args.trt_cache_dir}' if engine.provider == 'tensorrt' else ''))
    return 0 if engine.provider == args.providers[0] else 1


if __name__ == '__main__':
    sys.exit(main())
