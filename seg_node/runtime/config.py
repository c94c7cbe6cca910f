"""How the engine runs a model: providers, threads, TensorRT options (no onnxruntime import).

Kept apart from ``engine.py`` so that the node's parameters, launch logic and tools can be
validated without loading ONNX Runtime.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PROVIDERS = {
    'tensorrt': 'TensorrtExecutionProvider',
    'cuda': 'CUDAExecutionProvider',
    'cpu': 'CPUExecutionProvider',
}
DEFAULT_PROVIDERS = ('tensorrt', 'cuda', 'cpu')
# XDG: an unset or empty XDG_CACHE_HOME means ~/.cache (an empty one must not give a relative path).
DEFAULT_TRT_CACHE = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'seg_node' / 'tensorrt'
# Batch size a TensorRT optimization profile is built for when the model's batch is dynamic
# (part of the engine cache key, like the wrapped model and the precision).
DEFAULT_TRT_MAX_BATCH = 4


class EngineError(RuntimeError):
    """The engine could not be built or run; the message is one sentence for the operator."""


@dataclass(frozen=True)
class EngineConfig:
    """How to run a model; every field maps to a node parameter of the same name."""

    providers: Sequence[str] = DEFAULT_PROVIDERS
    cpu_threads: int = 0  # 0: ONNX Runtime's default (one per core)
    trt_fp16: bool = True
    trt_cache_dir: str = str(DEFAULT_TRT_CACHE)  # '~' is expanded; one sub-folder per engine key
    trt_max_batch: int = DEFAULT_TRT_MAX_BATCH
    device_id: int = 0
