"""The segmentation engine: one ONNX Runtime session, batches of RGB frames in, class masks out.

This is the only inference code path: the node, the offline bag labeller and the evaluation
all call ``SegmentationEngine.segment`` on an engine built by ``runtime.loader.load_model``.
It imports nothing from ROS.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import importlib.util
import io
import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from seg_node.errors import one_line
from seg_node.model.contract import ModelContractError, ModelOverrides, ModelSpec, read_model_spec
from seg_node.model.wrap import CLASS_MASK, CONFIDENCE, INPUT, has_confidence, wrap_model
from seg_node.runtime.config import PROVIDERS, EngineConfig, EngineError
from seg_node.runtime.resize import resize_image
from seg_node.runtime.results import EngineTiming, Segmentation

_log = logging.getLogger(__name__)

# ONNX Runtime's library of each GPU provider; the libraries it links against are read from its
# dynamic string table (NUL-separated sonames), which sits near the start of the file.
_PROVIDER_LIBRARY = {'cuda': 'libonnxruntime_providers_cuda.so',
                     'tensorrt': 'libonnxruntime_providers_tensorrt.so'}
_NEEDED = re.compile(rb'(?<=\x00)(lib(?:nvinfer|nvonnxparser|cudnn|cublasLt|cublas|cudart)\.so\.\d+)(?=\x00)')
_HEADER_BYTES = 8 << 20  # the CUDA provider's library is ~300 MB; its string table is in the first MBs


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


def _load_library(name: str | Path) -> bool:
    try:
        # RTLD_GLOBAL: ORT's provider libraries then find it by soname when they are loaded.
        ctypes.CDLL(str(name), mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return False
    return True


@functools.cache
def _preload_gpu_libraries() -> None:
    """Load CUDA/cuDNN and TensorRT from their pip packages so that ORT's providers find them."""
    # onnxruntime-gpu[cuda,cudnn] and tensorrt-cu13-libs install their libraries inside
    # site-packages, off the loader's search path: without this the providers fail to load
    # unless LD_LIBRARY_PATH was set by hand.
    preload = getattr(ort, 'preload_dlls', None)  # onnxruntime(-gpu) >= 1.21
    if preload is not None:
        with contextlib.redirect_stdout(io.StringIO()) as said:
            try:
                preload()
            except Exception as err:  # noqa: BLE001 - best effort; the library probe decides
                _log.debug('onnxruntime.preload_dlls failed: %s', one_line(err))
        if said.getvalue().strip():
            _log.debug('onnxruntime.preload_dlls: %s', ' '.join(said.getvalue().split()))
    found = importlib.util.find_spec('tensorrt_libs')
    if found is not None and found.submodule_search_locations:
        folder = Path(next(iter(found.submodule_search_locations)))
        for stem in ('libnvinfer', 'libnvinfer_plugin', 'libnvonnxparser'):  # dependency order
            for path in sorted(folder.glob(f'{stem}.so.*')):
                _load_library(path)


@functools.cache
def _provider_libraries(key: str) -> tuple[str, ...]:
    """Sonames of the CUDA/cuDNN/TensorRT libraries ORT's library for provider ``key`` links against."""
    name = _PROVIDER_LIBRARY.get(key)
    if name is None:
        return ()
    try:
        with (Path(ort.__file__).parent / 'capi' / name).open('rb') as file:
            head = file.read(_HEADER_BYTES)
    except OSError:
        return ()
    return tuple(dict.fromkeys(m.decode() for m in _NEEDED.findall(head)))


@functools.cache
def _missing_library(key: str) -> str:
    """The first library GPU provider ``key`` needs that cannot be loaded here ('' if none)."""
    _preload_gpu_libraries()
    for soname in _provider_libraries(key):
        if not _load_library(soname):
            # Once per process: this is why the provider is skipped (ORT would say it less clearly).
            _log.warning('execution provider %s cannot run here: %s is not installed', key, soname)
            return soname
    return ''


def usable_providers(requested: Sequence[str]) -> list[str]:
    """The requested provider keys this machine can actually load, in the requested order."""
    unknown = [p for p in requested if p not in PROVIDERS]
    if unknown:
        msg = f'unknown execution provider {unknown[0]!r}; choose from {", ".join(PROVIDERS)}'
        raise EngineError(msg)
    built = set(ort.get_available_providers())
    wanted = [p for p in requested if PROVIDERS[p] in built]
    gpu = any(p != 'cpu' for p in wanted) and _cuda_driver_present()
    # A GPU provider needs the driver and the CUDA/cuDNN/TensorRT libraries its ORT library links
    # against: a GPU machine whose venv lacks TensorRT must not list 'tensorrt' as usable.
    return [p for p in wanted if p == 'cpu' or (gpu and not _missing_library(p))]


@functools.cache
def _tensorrt_version() -> str:
    """Version of the TensorRT library ORT's provider would load, or 'none'."""
    if not _cuda_driver_present():
        return 'none'
    _preload_gpu_libraries()
    for soname in _provider_libraries('tensorrt') or ('libnvinfer.so.10',):
        if not soname.startswith('libnvinfer.so'):
            continue
        try:
            return str(ctypes.CDLL(soname).getInferLibVersion())
        except (OSError, AttributeError):
            return 'none'
    return 'none'


def _trt_profile(config: EngineConfig, spec: ModelSpec) -> dict[str, str]:
    """TensorRT optimization profile of a model with a known input size (batch 1..max)."""
    if spec.input_size is None:
        return {}
    h, w = spec.input_size
    max_batch = spec.batch_size or config.trt_max_batch
    return {'trt_profile_min_shapes': f'{INPUT}:1x{h}x{w}x3',
            'trt_profile_opt_shapes': f'{INPUT}:{max_batch}x{h}x{w}x3',
            'trt_profile_max_shapes': f'{INPUT}:{max_batch}x{h}x{w}x3'}


def _trt_cache_folder(config: EngineConfig, spec: ModelSpec, wrapped_sha: str) -> Path:
    """The engine cache folder of one wrapped model, profile, precision and TensorRT/ORT version."""
    # TensorRT builds the WRAPPED graph, with mean/std and the input size baked in, and ORT's own
    # engine file names follow the graph's structure, not its constants: the folder must be keyed
    # on the wrapped model's bytes and on everything else that shapes the engine, or a changed
    # mean/std or profile would silently reuse an engine built for other values.
    key = json.dumps({'wrapped_model_sha256': wrapped_sha, 'fp16': config.trt_fp16,
                      'profile': _trt_profile(config, spec), 'tensorrt': _tensorrt_version(),
                      'onnxruntime': ort.__version__}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(config.trt_cache_dir).expanduser() / f'{digest}-{"fp16" if config.trt_fp16 else "fp32"}'


def _provider_options(key: str, config: EngineConfig, spec: ModelSpec, wrapped_sha: str) -> dict:
    if key == 'cuda':
        return {'device_id': config.device_id}
    if key == 'tensorrt':
        cache = _trt_cache_folder(config, spec, wrapped_sha)
        cache.mkdir(parents=True, exist_ok=True)
        # Timing caches hold per-layer measurements, valid for any model on this TensorRT and GPU
        # (ORT adds the compute capability to the file name): shared, a rebuild after a small
        # change (a new mean/std) only times the layers it has not seen.
        timing = Path(config.trt_cache_dir).expanduser() / f'timing-trt{_tensorrt_version()}'
        timing.mkdir(parents=True, exist_ok=True)
        return {
            'device_id': config.device_id,
            'trt_fp16_enable': config.trt_fp16,
            'trt_engine_cache_enable': True,
            'trt_engine_cache_path': str(cache),
            'trt_timing_cache_enable': True,
            'trt_timing_cache_path': str(timing),
            **_trt_profile(config, spec),
        }
    return {}


def _create_session(model_bytes: bytes, spec: ModelSpec, config: EngineConfig,
                    wrapped_sha: str) -> tuple[ort.InferenceSession, str]:
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
        providers = [(PROVIDERS[k], _provider_options(k, config, spec, wrapped_sha)) for k in candidates]
        try:
            # enable_fallback=0: on a provider error ORT would otherwise retry by itself with its
            # own provider list and none of the options (device_id lost); this loop decides.
            session = ort.InferenceSession(model_bytes, sess_options=options, providers=providers,
                                           enable_fallback=0)
        except Exception as err:  # noqa: BLE001 - ORT raises bare RuntimeErrors/Fail subclasses
            last_error = one_line(err)
            _log.warning('execution provider %s failed to load (%s); trying the next one',
                         candidates[0], last_error)
            candidates = candidates[1:]
            continue
        # Nor may a failing run() switch providers behind the node's back: the supervisor's
        # cpu_fallback_after does that, and reports it.
        session.disable_fallback()
        active = session.get_providers()[0]
        key = next(k for k, v in PROVIDERS.items() if v == active)
        if key != candidates[0]:
            # ORT drops a provider whose libraries do not load with only a log line of its own.
            _log.warning('execution provider %s did not load (ONNX Runtime dropped it); running on %s',
                         candidates[0], key)
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
        # The session every call uses outputs class masks only; the confidence branch is a second
        # session, built when a call first asks for confidence (see wrap_model for why).
        wrapped = wrap_model(proto, self.spec, confidence=False).SerializeToString()
        wrapped_sha = hashlib.sha256(wrapped).hexdigest()
        self.session, self.provider = _create_session(wrapped, self.spec, self.config, wrapped_sha)
        # Where TensorRT keeps this engine (None on other providers): seg_build_engine and the
        # benchmarks report it.
        self.trt_cache: Path | None = (_trt_cache_folder(self.config, self.spec, wrapped_sha)
                                       if self.provider == 'tensorrt' else None)
        self.has_confidence = has_confidence(self.spec)
        self._model_proto: onnx.ModelProto | None = proto if self.has_confidence else None
        self._confidence_session: ort.InferenceSession | None = None
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
        t0 = time.perf_counter()
        for chunk, batch in self._batches(images):
            t1 = time.perf_counter()
            masks, confidence = self.run(batch, want_confidence=want_confidence)
            t2 = time.perf_counter()
            timing.preprocess_ms += (t1 - t0) * 1e3
            timing.inference_ms += (t2 - t1) * 1e3
            for row, index in enumerate(chunk):
                conf = confidence[row] if confidence is not None else None
                results[index] = Segmentation(masks[row], conf)
            t0 = time.perf_counter()
        self.last_timing = timing
        return results  # type: ignore[return-value]

    def _batches(self, images: Sequence[np.ndarray]) -> Iterator[tuple[list[int], np.ndarray]]:
        """(indices into ``images``, uint8 batch) per runtime call: frames of one input size, max_batch at most."""
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(self.input_size_for(image.shape), []).append(index)
        for size, indices in groups.items():
            step = self.max_batch or len(indices)
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                yield chunk, self._batch([images[i] for i in chunk], size)

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
        names, session = [CLASS_MASK], self.session
        if want_confidence and self.has_confidence:
            names.append(CONFIDENCE)
            session = self.confidence_session()
        # I/O binding lets GPU providers copy the uint8 input to the device once and the uint8
        # outputs back once; on the CPU provider it costs nothing extra.
        binding = session.io_binding()
        binding.bind_cpu_input(INPUT, np.ascontiguousarray(batch))
        for name in names:
            binding.bind_output(name, 'cpu')
        session.run_with_iobinding(binding)
        outputs = binding.copy_outputs_to_cpu()
        return outputs[0], (outputs[1] if len(outputs) > 1 else None)

    def confidence_session(self) -> ort.InferenceSession:
        """The session with the confidence output, built on first use on the same provider."""
        if self._confidence_session is None:
            wrapped = wrap_model(self._model_proto, self.spec, confidence=True).SerializeToString()
            config = dataclasses.replace(self.config, providers=(self.provider,))
            self._confidence_session, _ = _create_session(wrapped, self.spec, config,
                                                          hashlib.sha256(wrapped).hexdigest())
            self._model_proto = None  # the session holds what it needs
        return self._confidence_session

    def probabilities(self, images: Sequence[np.ndarray], *,
                      model_bytes: bytes | None = None) -> list[np.ndarray]:
        """Per-pixel class probabilities, float32 [C,h,w] per RGB frame (any sizes), in order.

        A second session, built on first use, ends in a softmax instead of the mask/confidence
        outputs; ``segment`` and its session are untouched. ``model_bytes`` is the model this
        engine was built from (default: the file it was loaded from, checked by SHA-256).
        """
        from seg_node.model.wrap import PROBABILITIES  # noqa: PLC0415 - kept off the fast path's imports

        session = self.probability_session(model_bytes)
        results: list[np.ndarray | None] = [None] * len(images)
        for chunk, batch in self._batches(images):
            (scores,) = session.run([PROBABILITIES], {INPUT: np.ascontiguousarray(batch)})
            for row, index in enumerate(chunk):
                results[index] = scores[row]
        return results  # type: ignore[return-value]

    def probability_session(self, model_bytes: bytes | None = None) -> ort.InferenceSession:
        """The session that outputs probabilities (built once); EngineError if the model has no scores."""
        from seg_node.model.wrap import wrap_probabilities  # noqa: PLC0415

        session = getattr(self, '_probability_session', None)
        if session is not None:
            return session
        if model_bytes is None:
            try:
                model_bytes = Path(self.model_name).read_bytes()
            except OSError as err:
                msg = f'model {self.model_name!r} cannot be read again to build its probabilities session ({err})'
                raise EngineError(msg) from None
        if hashlib.sha256(model_bytes).hexdigest() != self.model_sha256:
            msg = (f'model {self.model_name!r} is not the model this engine runs (SHA-256 differs): the '
                   'probabilities must come from the same model')
            raise EngineError(msg)
        try:
            wrapped = wrap_probabilities(onnx.load_from_string(model_bytes), self.spec).SerializeToString()
        except ValueError as err:
            msg = f'model {self.model_name!r}: {err}'
            raise EngineError(msg) from None
        session, _ = _create_session(wrapped, self.spec, self.config, hashlib.sha256(wrapped).hexdigest())
        self._probability_session = session
        return session
