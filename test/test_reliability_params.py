"""Runtime parameter changes and model switches, in-process with the node spinning.

A new model loads beside the running one and takes over only once it loaded and passed its test
inference; until then, and whenever it fails, the running model keeps segmenting.
"""

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
from rclpy.parameter import Parameter
from reliability_helpers import FRONT, image_msg, node_in_process, save_model, spinning, values

from seg_node.model.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from seg_node.model.known_answer import palette_scene
from seg_node.ros import model_switch
from seg_node.ros import node_base as core
from seg_node.ros.diagnostics import OK, WARN
from seg_node.ros.harness import wait_for
from seg_node.runtime.loader import BackgroundLoad
from seg_node.runtime.render import resize_image

REVERSED = CITYSCAPES_PALETTE[::-1]  # a model that calls colour i class 18 - i


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp('models')
    corrupt = folder / 'corrupt.onnx'
    corrupt.write_bytes(b'not an onnx file at all')
    return {
        'palette': save_model(folder / 'palette.onnx'),
        'reversed': save_model(folder / 'reversed.onnx', palette=REVERSED, classes=CITYSCAPES_CLASSES[::-1]),
        'strided': save_model(folder / 'strided.onnx', downsample=2),
        'corrupt': str(corrupt),
    }


def frame(stamp):
    rgb, label = palette_scene(stamp, 24, 32, min_block=4)
    return image_msg(rgb, stamp, 'front_optical'), label, rgb


def set_one(node, name, value):
    return node.set_parameters([Parameter(name, value=value)])[0]


def test_outputs_alpha_resolution_and_limits_change_at_runtime(context, models):
    with node_in_process(context, model_path=models['strided'], image_topics=[FRONT],
                         visualization_scale=1.0) as run:
        node = run.node
        msg, label, _ = frame(1)
        assert set_one(node, 'overlay_alpha', 1.0).successful
        assert set_one(node, 'publish_color_mask', False).successful
        run.send_and_settle(FRONT, msg)
        first = run.recorder.by_stamp(FRONT)[1]
        assert first.color_mask is None and first.mask.shape == label.shape
        palette = np.asarray(CITYSCAPES_PALETTE, np.uint8)
        np.testing.assert_array_equal(first.overlay, palette[first.mask])  # alpha 1: all colour

        assert set_one(node, 'mask_resolution', 'model').successful
        assert set_one(node, 'overlay_alpha', 0.0).successful
        run.send_and_settle(FRONT, frame(2)[0])
        second = run.recorder.by_stamp(FRONT)[2]
        assert second.mask.shape == (12, 16), 'masks now come at the model output size'
        np.testing.assert_array_equal(second.overlay, frame(2)[2])  # alpha 0: the input itself
        assert node.cameras[FRONT].info_publisher is not None

        # Visualizations at the model's size, then at most one per 1000 s: the mask still comes
        # with every frame.
        assert set_one(node, 'visualization_scale', 0.5).successful  # 24x32 -> 12x16, the model's size
        run.send_and_settle(FRONT, frame(3)[0])
        third = run.recorder.by_stamp(FRONT)[3]
        np.testing.assert_array_equal(third.overlay, resize_image(frame(3)[2], (12, 16)))
        assert set_one(node, 'visualization_max_rate_hz', 0.001).successful
        for stamp in (4, 5):
            run.send_and_settle(FRONT, frame(stamp)[0])
        outputs = run.recorder.by_stamp(FRONT)
        assert outputs[4].overlay is not None and outputs[5].overlay is None
        assert outputs[5].mask.shape == (12, 16)
        for name, value in (('visualization_scale', 0.0), ('visualization_max_rate_hz', -1.0)):
            refused = set_one(node, name, value)
            assert not refused.successful and name in refused.reason

        assert set_one(node, 'diagnostics_period_s', 0.5).successful
        assert node._diagnostics_timer.timer_period_ns == 500_000_000
        assert set_one(node, 'cpu_fallback_after', 4).successful
        assert node.supervisor.fallback_after == 4
        refused = set_one(node, 'drop_warn_fraction', 1.5)
        assert not refused.successful and 'drop_warn_fraction' in refused.reason
        for name, value in (('image_topics', ['/x/image']), ('input_reliability', 'reliable'), ('data_path', 'plain')):
            assert not set_one(node, name, value).successful, f'{name} changes QoS or topics: restart'


class GatedLoad(BackgroundLoad):
    """A model load that waits for the test to open the gate, to hold the switch in 'loading'."""

    gate = threading.Event()

    def _run(self):
        assert self.gate.wait(10)
        super()._run()


def test_a_new_model_takes_over_only_once_it_loaded_and_the_old_runs_until_then(context, models, monkeypatch):
    monkeypatch.setattr(model_switch, 'BackgroundLoad', GatedLoad)
    GatedLoad.gate.clear()
    with node_in_process(context, model_path=models['palette'], image_topics=[FRONT]) as run, spinning(run.node):
        node = run.node
        assert set_one(node, 'model_path', models['reversed']).successful
        busy = set_one(node, 'model_path', models['strided'])
        assert not busy.successful and 'is still loading' in busy.reason
        msg, label, _ = frame(1)
        run.send_and_settle(FRONT, msg)  # while the new model loads, the old one segments
        np.testing.assert_array_equal(run.recorder.by_stamp(FRONT)[1].mask, label)
        assert values(run.statuses()['seg_node: engine'])['model_switch'] == f'loading {models["reversed"]}'

        GatedLoad.gate.set()
        assert wait_for(lambda: node.supervisor.model.path == models['reversed'], 10)
        msg, label, _ = frame(2)
        run.send_and_settle(FRONT, msg)
        np.testing.assert_array_equal(run.recorder.by_stamp(FRONT)[2].mask, 18 - label)
        engine = run.statuses()['seg_node: engine']
        assert engine.level == OK
        assert values(engine)['model_switch'] == f'switched to {models["reversed"]}'
        assert values(engine)['model'] == models['reversed']


@pytest.mark.parametrize(('change', 'reason'), [
    ({'model_path': 'corrupt'}, 'is not a valid ONNX file'),
    ({'model_path': 'reversed', 'model_sha256': '0' * 64}, 'not the expected 0000'),
])
def test_a_model_that_fails_to_load_is_reported_and_the_running_one_stays(context, models, change, reason):
    with node_in_process(context, model_path=models['palette'], image_topics=[FRONT]) as run, spinning(run.node):
        node = run.node
        params = [Parameter(k, value=models.get(v, v)) for k, v in change.items()]
        assert node.set_parameters_atomically(params).successful
        assert wait_for(lambda: node.get_parameter('model_path').value == models['palette'], 10), \
            'the parameters must name the running model again'
        assert node.get_parameter('model_sha256').value == ''
        engine = run.statuses()['seg_node: engine']
        assert engine.level == WARN
        assert reason in engine.message and f'still running {models["palette"]}' in engine.message
        msg, label, _ = frame(3)
        run.send_and_settle(FRONT, msg)
        np.testing.assert_array_equal(run.recorder.by_stamp(FRONT)[3].mask, label)


def test_a_missing_model_file_is_refused_at_once(context, models):
    with node_in_process(context, model_path=models['palette'], image_topics=[FRONT]) as run:
        refused = set_one(run.node, 'model_path', '/nonexistent/model.onnx')
        assert not refused.successful and "'/nonexistent/model.onnx' does not exist" in refused.reason
        assert run.node.supervisor.model.path == models['palette']


def test_the_expected_sha256_is_checked_at_start(context, models):
    digest = hashlib.sha256(Path(models['palette']).read_bytes()).hexdigest()
    with node_in_process(context, model_path=models['palette'], model_sha256=digest.upper()) as run:
        assert values(run.statuses()['seg_node: engine'])['model_sha256'] == digest
    with (pytest.raises(core.StartupError, match=f'has SHA-256 {digest}, not the expected'),
          node_in_process(context, model_path=models['palette'], model_sha256='f' * 64)):
        pass


def test_an_override_that_breaks_the_model_is_reported_once_and_not_retried(context, models):
    with node_in_process(context, model_path=models['palette'], image_topics=[FRONT]) as run, spinning(run.node):
        node = run.node
        assert set_one(node, 'classes', ['road', 'car']).successful  # 19 classes in the model
        assert wait_for(lambda: run.node._model_switch.loading is None, 10)
        engine = run.statuses()['seg_node: engine']
        assert engine.level == WARN and 'class' in engine.message, engine.message
        # An unset override cannot be set back to unset: it stays, and other sets do not retry it.
        assert set_one(node, 'overlay_alpha', 0.3).successful
        assert node._model_switch.loading is None and node.supervisor.model.path == models['palette']
        msg, label, _ = frame(5)
        run.send_and_settle(FRONT, msg)
        np.testing.assert_array_equal(run.recorder.by_stamp(FRONT)[5].mask, label)


def test_without_a_post_set_callback_sets_apply_from_the_executor(context, models, monkeypatch):
    # Humble's rclpy has no add_post_set_parameters_callback: the node then applies accepted sets
    # from a guard condition, once rclpy stored the values.
    monkeypatch.setattr(core.SegmentationCore, '_HAS_POST_SET', False)
    with node_in_process(context, model_path=models['palette'], image_topics=[FRONT]) as run, spinning(run.node):
        node = run.node
        assert set_one(node, 'overlay_alpha', 0.25).successful
        assert wait_for(lambda: node.settings.overlay_alpha == 0.25, 10)
        refused = set_one(node, 'overlay_alpha', 2.0)
        assert not refused.successful and 'overlay_alpha' in refused.reason
        assert set_one(node, 'model_path', models['reversed']).successful
        assert wait_for(lambda: node.supervisor.model.path == models['reversed'], 20)
        assert node.settings.overlay_alpha == 0.25
