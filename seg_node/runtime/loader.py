"""Building a verified, test-run engine for the node, in the foreground or beside a running one.

No ROS imports: the node decides when to load and what to do with the result.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from seg_node.model.contract import ModelOverrides
from seg_node.model.file import ModelFileError, read_verified
from seg_node.runtime.engine import EngineConfig, EngineError, SegmentationEngine
from seg_node.runtime.render import palette_lut

# Size of the test frame run through a model with dynamic spatial size.
_TEST_FRAME = (64, 64)


@dataclass(frozen=True)
class ModelRequest:
    """What to build: the file, its expected hash and how to run it."""

    path: str
    sha256: str
    config: EngineConfig
    overrides: ModelOverrides
    key: tuple = ()  # the parameter values this request came from (settings.model_request())


@dataclass(frozen=True)
class ActiveModel:
    """An engine that loaded and passed its test run, with what the worker needs beside it."""

    engine: SegmentationEngine
    lut: np.ndarray
    request: ModelRequest

    @property
    def path(self) -> str:
        """The model file the engine was built from."""
        return self.request.path


def check_inference(engine: SegmentationEngine) -> None:
    """Run one black frame and check the result is a class mask; raise EngineError if not."""
    height, width = engine.spec.input_size or _TEST_FRAME
    try:
        result = engine.segment([np.zeros((height, width, 3), np.uint8)],
                                want_confidence=engine.has_confidence)[0]
    except Exception as err:  # noqa: BLE001 - ONNX Runtime raises bare RuntimeError/Fail types
        msg = f'the model failed its test inference ({_one_line(err)})'
        raise EngineError(msg) from None
    mask = result.class_mask
    if mask.dtype != np.uint8 or mask.ndim != 2 or int(mask.max()) >= engine.spec.num_classes:
        msg = f'the model test inference gave no valid class mask ({mask.dtype} {mask.shape})'
        raise EngineError(msg)


def build_model(request: ModelRequest) -> ActiveModel:
    """Read, verify, load and test-run a model; raise ModelFileError or EngineError (one sentence)."""
    data = read_verified(request.path, request.sha256)
    try:
        engine = SegmentationEngine(data, request.config, request.overrides)
        check_inference(engine)
    except EngineError as err:
        raise EngineError(str(err).replace("'<bytes>'", repr(request.path))) from None
    return ActiveModel(engine, palette_lut(engine.spec.palette), request)


def cpu_request(model: ActiveModel) -> ModelRequest:
    """The request that rebuilds ``model`` on the CPU provider from the very same file content."""
    config = dataclasses.replace(model.request.config, providers=('cpu',))
    # Pin the hash of what is running, so a file replaced on disk is not picked up silently.
    return dataclasses.replace(model.request, config=config, sha256=model.engine.model_sha256)


class BackgroundLoad:
    """Builds one model on its own thread (after ``start``), then calls ``done`` from that thread."""

    def __init__(self, request: ModelRequest, done: Callable[[], None],
                 build: Callable[[ModelRequest], ActiveModel] = build_model) -> None:
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
        except (ModelFileError, EngineError) as err:
            self.error = str(err)
        except Exception as err:  # noqa: BLE001 - any failure must reach the node as a reason
            self.error = f'loading failed ({_one_line(err)})'
        self._done()

    @property
    def finished(self) -> bool:
        """True once the model was built or failed."""
        return self.model is not None or bool(self.error)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the loading thread."""
        self._thread.join(timeout)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
