"""The one way to load a model: read and verify the file, build the engine, run a test frame.

The node (at start-up, in a runtime switch and in the CPU fallback), ``seg_bag label``,
``seg_eval``, ``seg_build_engine``, the demo and the benchmarks all call ``load_model``, so each
gets the same SHA-256 check, contract validation and test inference. No ROS imports: the node
decides when to load and what to do with the result.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from seg_node.errors import one_line
from seg_node.model.contract import ModelOverrides
from seg_node.model.file import ModelFileError, read_verified, resolve_model_path
from seg_node.runtime.config import EngineConfig, EngineError
from seg_node.runtime.engine import SegmentationEngine
from seg_node.runtime.render import palette_lut

# Size of the test frame run through a model with dynamic spatial size.
_TEST_FRAME = (64, 64)


# Every failure ``load_model`` reports: the message is one sentence naming the file.
LOAD_ERRORS = (ModelFileError, EngineError)


@dataclass(frozen=True)
class ModelRequest:
    """What to load: the file, its expected hash (empty: not checked) and how to run it."""

    path: str
    sha256: str = ''
    config: EngineConfig = field(default_factory=EngineConfig)
    overrides: ModelOverrides = field(default_factory=ModelOverrides)
    key: tuple = ()  # the node parameter values this request came from (NodeSettings.model_key)


@dataclass(frozen=True)
class ActiveModel:
    """An engine that loaded and passed its test run, with what the worker needs beside it."""

    engine: SegmentationEngine
    lut: np.ndarray
    request: ModelRequest
    path: str  # the file the engine was built from (request.path resolved, see model.file)


def check_inference(engine: SegmentationEngine) -> None:
    """Run one black frame and check the result is a class mask; raise EngineError if not."""
    height, width = engine.spec.input_size or _TEST_FRAME
    try:
        # Masks only: the confidence session is built when a frame first asks for confidence.
        result = engine.segment([np.zeros((height, width, 3), np.uint8)])[0]
    except Exception as err:  # noqa: BLE001 - ONNX Runtime raises bare RuntimeError/Fail types
        msg = f'the model failed its test inference ({one_line(err)})'
        raise EngineError(msg) from None
    mask = result.class_mask
    if mask.dtype != np.uint8 or mask.ndim != 2 or int(mask.max()) >= engine.spec.num_classes:
        msg = f'the model test inference gave no valid class mask ({mask.dtype} {mask.shape})'
        raise EngineError(msg)


def load_model(request: ModelRequest) -> ActiveModel:
    """Read, verify, load and test-run a model; raise one of ``LOAD_ERRORS`` (one sentence)."""
    file = resolve_model_path(request.path)
    data = read_verified(file, request.sha256)
    engine = SegmentationEngine(data, request.config, request.overrides, name=str(file))
    check_inference(engine)
    return ActiveModel(engine, palette_lut(engine.spec.palette), request, str(file))


def cpu_request(model: ActiveModel) -> ModelRequest:
    """The request that rebuilds ``model`` on the CPU provider from the very same file content."""
    config = dataclasses.replace(model.request.config, providers=('cpu',))
    # Pin the hash of what is running, so a file replaced on disk is not picked up silently.
    return dataclasses.replace(model.request, path=model.path, config=config, sha256=model.engine.model_sha256)


class BackgroundLoad:
    """Builds one model on its own thread (after ``start``), then calls ``done`` from that thread."""

    def __init__(self, request: ModelRequest, done: Callable[[], None],
                 build: Callable[[ModelRequest], ActiveModel] = load_model) -> None:
        self.request = request
        self.model: ActiveModel | None = None
        self.error = ''
        self._build = build
        self._done = done
        self._thread = threading.Thread(target=self._run, name='seg_node_model_load', daemon=True)

    def start(self) -> None:
        """Start loading."""
        self._thread.start()

    def _run(self) -> None:
        try:
            self.model = self._build(self.request)
        except LOAD_ERRORS as err:
            self.error = str(err)
        except Exception as err:  # noqa: BLE001 - any failure must reach the node as a reason
            self.error = f'loading failed ({one_line(err)})'
        self._done()

    @property
    def finished(self) -> bool:
        """True once the model was built or failed."""
        return self.model is not None or bool(self.error)

