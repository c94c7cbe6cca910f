"""What the engine returns: one frame's class mask and confidence, and the timing of a call."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Segmentation:
    """One frame's result at the model's output resolution."""

    class_mask: np.ndarray  # uint8 [h, w]
    confidence: np.ndarray | None  # uint8 [h, w], max class probability x 255


@dataclass
class EngineTiming:
    """Wall time of the last ``segment`` call, split into resize and runtime."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    batch_size: int = 0
