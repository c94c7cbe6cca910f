"""The segmentation engine: one ONNX Runtime session, batches of RGB frames in, class masks out.

This is the only inference code path: the node, the offline bag labeller and the evaluation
all call ``SegmentationEngine.segment`` on an engine built by ``runtime.loader.load_model``.
It imports nothing from ROS.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from seg_node.errors import one_line
from seg_node.model.contract import ModelContractError, ModelOverrides, ModelSpec, read_model_spec
from seg_node.model.wrap import CLASS_MASK, CONFIDENCE, INPUT, wrap_model
from seg_node.runtime.config import PROVIDERS, EngineConfig, EngineError
from seg_node.runtime.resize import resize_image
from seg_node.runtime.results import EngineTiming, Segmentation

_log = logging.getLogger(__name__)

def _cuda_driver_present() -> bool:
    # onnxruntime-gpu lists the CUDA/TensorRT providers even on machines without a GPU;
    # asking for them there logs errors or raises, so look for the driver first.
    for name in ('libcuda.so.1', 'libcuda.so'):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def usable_providers(requested: Sequence[str]) -> list[str]:
    """The requested provider keys this machine can actually load, in the requested order."""
    unknown = [p for p in requested if p not in PROVIDERS]
    if unknown:
        msg = f'unknown execution provider {unknown[0]!r}; choose from {", ".join(PROVIDERS)}'
        raise EngineError(msg)
    built = set(ort.get_available_providers())
    gpu = _cuda_driver_present()
    return [p for p in requested
            if PROVIDERS[p] in built and (p == 'cpu' or gpu)]


def _provider_options(key: str, config: EngineConfig, spec: ModelSpec, model_sha: str) -> dict:
    if key == 'cuda':
        return {'device_id': config.device_id}
    if key == 'tensorrt':
        # One cache directory per model content and precision: a changed model never reuses a
        # stale engine; ORT adds the GPU's compute capability to the engine file names.
        cache = Path(config.trt_cache_dir) / f'{model_sha[:16]}-{"fp16" if config.trt_fp16 else "fp32"}'
        cache.mkdir(parents=True, exist_ok=True)
        options = {
            'device_id': config.device_id,
            'trt_fp16_enable': config.trt_fp16,
            'trt_engine_cache_enable': True,
            'trt_engine_cache_path': str(cache),
            'trt_timing_cache_enable': True,
            'trt_timing_cache_path': str(cache),
        }
        if spec.input_size is not None:
            h, w = spec.input_size
            max_batch = spec.batch_size or config.trt_max_batch
            options['trt_profile_min_shapes'] = f'{INPUT}:1x{h}x{w}x3'
            options['trt_profile_opt_shapes'] = f'{INPUT}:{max_batch}x{h}x{w}x3'
            options['trt_profile_max_shapes'] = f'{INPUT}:{max_batch}x{h}x{w}x3'
        return options
    return {}


def _create_session(model_bytes: bytes, spec: ModelSpec, config: EngineConfig,
                    model_sha: str) -> tuple[ort.InferenceSession, str]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if config.cpu_threads > 0:
        options.intra_op_num_threads = config.cpu_threads
    # ORT's worker threads spin while waiting for work by default. Next to camera drivers and
    # DDS on a small CPU that spinning starves everything else: measured on 2 cores with two
    # 1080p cameras at 30 Hz, 56 % of frames delivered without spinning vs 25-31 % with it.
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    candidates = usable_providers(config.providers)
    if not candidates:
        msg = (f'none of the execution providers {list(config.providers)} can run on this '
               f'machine (available: {ort.get_available_providers()})')
        raise EngineError(msg)
    last_error = ''
    while candidates:
        providers = [(PROVIDERS[k], _provider_options(k, config, spec, model_sha)) for k in candidates]
        try:
            session = ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
        except Exception as err:  # noqa: BLE001 - ORT raises bare RuntimeErrors/Fail subclasses
            last_error = one_line(err)
            _log.warning('execution provider %s failed to load (%s); trying the next one',
                         candidates[0], last_error)
            candidates = candidates[1:]
            continue
        active = session.get_providers()[0]
        key = next(k for k, v in PROVIDERS.items() if v == active)
        return session, key
    msg = f'no execution provider could load the model ({last_error})'
    raise EngineError(msg)


class SegmentationEngine:
    """Runs a contract model on batches of RGB frames."""

    def __init__(self, model_bytes: bytes, config: EngineConfig | None = None,
                 overrides: ModelOverrides | None = None, *, name: str = '<bytes>') -> None:
        """Load ``model_bytes`` (read and verified by ``runtime.loader``); ``name`` appears in errors."""
        self.config = config or EngineConfig()
        self.model_name = name
        self.model_sha256 = hashlib.sha256(model_bytes).hexdigest()
        try:
            proto = onnx.load_from_string(model_bytes)
        except (DecodeError, ValueError) as err:
            msg = f'model {self.model_name!r} is not a valid ONNX file ({err})'
            raise EngineError(msg) from None
        try:
            self.spec = read_model_spec(proto, overrides)
        except ModelContractError as err:
            msg = f'model {self.model_name!r} does not meet the model contract: {err}'
            raise EngineError(msg) from None
        wrapped = wrap_model(proto, self.spec).SerializeToString()
        self.session, self.provider = _create_session(wrapped, self.spec, self.config,
                                                      self.model_sha256)
        self.has_confidence = CONFIDENCE in {o.name for o in self.session.get_outputs()}
        self.last_timing = EngineTiming()
        self._batch_buffers: dict[tuple[int, ...], np.ndarray] = {}

    @property
    def max_batch(self) -> int | None:
        """Largest batch one runtime call takes (None: any)."""
        if self.spec.batch_size:
            return self.spec.batch_size
        return self.config.trt_max_batch if self.provider == 'tensorrt' else None

    def input_size_for(self, image_shape: tuple[int, ...]) -> tuple[int, int]:
        """(H, W) a frame of ``image_shape`` is resized to before inference."""
        return self.spec.input_size or (int(image_shape[0]), int(image_shape[1]))

    def segment(self, images: Sequence[np.ndarray], *, want_confidence: bool = False) -> list[Segmentation]:
        """Segment RGB uint8 frames (any sizes); results keep the order of ``images``."""
        results: list[Segmentation | None] = [None] * len(images)
        timing = EngineTiming(batch_size=len(images))
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(self.input_size_for(image.shape), []).append(index)
        for size, indices in groups.items():
            step = self.max_batch or len(indices)
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                t0 = time.perf_counter()
                batch = self._batch([images[i] for i in chunk], size)
                t1 = time.perf_counter()
                masks, confidence = self.run(batch, want_confidence=want_confidence)
                t2 = time.perf_counter()
                timing.preprocess_ms += (t1 - t0) * 1e3
                timing.inference_ms += (t2 - t1) * 1e3
                for row, index in enumerate(chunk):
                    conf = confidence[row] if confidence is not None else None
                    results[index] = Segmentation(masks[row], conf)
        self.last_timing = timing
        return results  # type: ignore[return-value]

    def _batch(self, images: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        rows = self.spec.batch_size or len(images)
        shape = (rows, size[0], size[1], 3)
        # Reused per shape: a fresh multi-megabyte array per frame costs page faults.
        batch = self._batch_buffers.get(shape)
        if batch is None:
            batch = self._batch_buffers[shape] = np.zeros(shape, np.uint8)
        for row, image in enumerate(images):
            resize_image(image, size, dst=batch[row])
        return batch

    def run(self, batch: np.ndarray, *,
            want_confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Run one uint8 [N,H,W,3] batch; return class masks (and confidence) [N,h,w]."""
        names = [CLASS_MASK]
        if want_confidence and self.has_confidence:
            names.append(CONFIDENCE)
        # I/O binding lets GPU providers copy the uint8 input to the device once and the uint8
        # outputs back once; on the CPU provider it costs nothing extra.
        binding = self.session.io_binding()
        binding.bind_cpu_input(INPUT, np.ascontiguousarray(batch))
        for name in names:
            binding.bind_output(name, 'cpu')
        self.session.run_with_iobinding(binding)
        outputs = binding.copy_outputs_to_cpu()
        return outputs[0], (outputs[1] if len(outputs) > 1 else None)
