"""Frames of several cameras that wait together go through the engine in one call, at most max_batch.

A counting engine wrapper records the batch size of every engine call; a gate holds the first call
so that the test knows exactly which frames are waiting when the worker takes the next batch.
"""

import threading

import numpy as np
import pytest
from rclpy.parameter import Parameter
from reliability_helpers import image_msg, node_in_process, save_model, spinning

from seg_node.model.known_answer import palette_scene
from seg_node.ros.harness import wait_for

CAMERAS = ('/cam_a/image_raw', '/cam_b/image_raw', '/cam_c/image_raw')


class CountingEngine:
    """Wraps an engine: records the frames of each call; the first call waits for ``gate``."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.first_call_started = threading.Event()

    def segment(self, images, *, want_confidence: bool = False):
        """Like the engine's, counted (and held while the gate is shut, on the first call)."""
        self.batches.append(len(images))
        if len(self.batches) == 1:
            self.first_call_started.set()
            assert self.gate.wait(10), 'the test never opened the gate'
        return self._engine.segment(images, want_confidence=want_confidence)

    def __getattr__(self, name: str):
        return getattr(self._engine, name)


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp('batching') / 'palette.onnx')


def frame(stamp):
    rgb, label = palette_scene(stamp, 24, 32, min_block=4)
    return image_msg(rgb, stamp, 'optical'), label


def run_three_cameras(context, model, max_batch, *, change_at_runtime=False, publishes=None):
    """One frame, held in the engine; then a frame on each camera; returns (batch sizes, harness)."""
    initial = 0 if change_at_runtime else max_batch
    with node_in_process(context, model_path=model, image_topics=list(CAMERAS), max_batch=initial) as run:
        if change_at_runtime:
            assert run.node.set_parameters([Parameter('max_batch', value=max_batch)])[0].successful
        engine = CountingEngine(run.node.supervisor.model.engine)
        run.inject(engine)
        first, _ = frame(1)
        run.send(CAMERAS[0], first)
        assert engine.first_call_started.wait(10)
        labels = {}
        for camera in CAMERAS:  # all three wait while the worker is inside the first call
            msg, labels[camera] = frame(2)
            run.send(camera, msg)
        engine.gate.set()
        assert wait_for(lambda: all(run.settled(c) for c in CAMERAS), 10)
        for camera in CAMERAS:
            np.testing.assert_array_equal(run.recorder.by_stamp(camera)[2].mask, labels[camera])
            assert run.totals(camera)['dropped'] == 0
        if publishes is not None:
            publishes.extend(run.recorder.publishes)
        return engine.batches


def test_cameras_waiting_together_share_one_engine_call(context, model):
    assert run_three_cameras(context, model, max_batch=0) == [1, 3]


def test_every_mask_of_a_batch_goes_out_before_any_picture(context, model):
    publishes = []
    assert run_three_cameras(context, model, max_batch=0, publishes=publishes) == [1, 3]
    batch = [(topic, outputs) for topic, stamp, outputs in publishes if stamp == 2]
    assert batch == [(camera, ('mask',)) for camera in CAMERAS] + [
        (camera, ('color_mask', 'overlay')) for camera in CAMERAS]


def test_max_batch_splits_the_waiting_frames(context, model):
    assert run_three_cameras(context, model, max_batch=2) == [1, 2, 1]
    assert run_three_cameras(context, model, max_batch=1) == [1, 1, 1, 1]


def test_a_runtime_change_of_max_batch_applies_to_the_next_batch(context, model):
    assert run_three_cameras(context, model, max_batch=2, change_at_runtime=True) == [1, 2, 1]


def test_spinning_does_not_change_the_batching(context, model):
    # The same with the executor running (timers, guard conditions) beside the worker.
    with node_in_process(context, model_path=model, image_topics=list(CAMERAS)) as run, spinning(run.node):
        engine = CountingEngine(run.node.supervisor.model.engine)
        engine.gate.set()
        run.inject(engine)
        for stamp in (1, 2, 3):
            msg, _ = frame(stamp)
            run.send_and_settle(CAMERAS[0], msg)
        assert engine.batches == [1, 1, 1]
