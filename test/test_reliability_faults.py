"""Engine faults in-process: a call that raises (a CUDA error), CPU fallback, an engine far slower
than the camera, and the diagnostics levels each of them raises."""

import time

import numpy as np
import pytest
from rclpy.parameter import Parameter
from reliability_helpers import CUDA_ERROR, FRONT, LEFT, FaultyEngine, image_msg, node_in_process, save_model, values

from seg_node.model.known_answer import palette_scene
from seg_node.ros.diagnostics import ERROR, OK, WARN
from seg_node.ros.harness import wait_for


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp('m') / 'palette.onnx')


def frame(stamp, seed=None, size=(24, 32)):
    rgb, label = palette_scene(stamp if seed is None else seed, *size, min_block=4)
    return image_msg(rgb, stamp, 'front_optical'), label


def test_an_engine_error_drops_that_frame_only_and_is_logged_counted_and_reported(context, model, capfd):
    with node_in_process(context, model_path=model, image_topics=[FRONT]) as run:
        faulty = FaultyEngine(run.node.supervisor.model.engine, fail_calls={2, 3})
        run.inject(faulty)
        labels = {}
        for stamp in range(1, 6):
            msg, labels[stamp] = frame(stamp)
            run.send_and_settle(FRONT, msg)
            if stamp == 3:
                failing = run.statuses()
        outputs = run.recorder.by_stamp(FRONT)
        assert sorted(outputs) == [1, 4, 5], 'the failed frames 2 and 3 must be dropped, the rest published'
        for stamp, output in outputs.items():
            np.testing.assert_array_equal(output.mask, labels[stamp])
        assert run.totals(FRONT) | {'received': 5} == {'received': 5, 'processed': 3, 'failed': 2,
                                                       'dropped': 0, 'rejected': 0, 'skipped': 0,
                                                       'deserialized': 0}
        assert run.node.pipeline.unexpected_errors == 0

        camera, engine = failing['seg_node: /cam_front'], failing['seg_node: engine']
        assert camera.level == ERROR and '2 frame(s) failed in the engine' in camera.message
        assert engine.level == ERROR and 'CUDA failure 700' in engine.message
        assert values(engine)['consecutive_failures'] == '2'
        healthy = run.statuses()  # a new period: frames 4 and 5 went through
        assert healthy['seg_node: engine'].level == OK, healthy['seg_node: engine'].message
        assert values(healthy['seg_node: engine'])['engine_failures'] == '2'
    err = capfd.readouterr().err
    assert f'{FRONT}: inference failed, frame dropped ({CUDA_ERROR})' in err
    assert 'Traceback' not in err


@pytest.mark.parametrize('fallback_after', [3, 0])
def test_consecutive_failures_fall_back_to_the_cpu_provider_only_when_asked(context, model, capfd,
                                                                           fallback_after):
    with node_in_process(context, model_path=model, image_topics=[FRONT],
                         cpu_fallback_after=fallback_after) as run:
        # A CUDA engine that has gone bad for good: every call raises.
        run.inject(FaultyEngine(run.node.supervisor.model.engine, fail_always=True, provider='cuda'))
        for stamp in range(1, 4):
            run.send_and_settle(FRONT, frame(stamp)[0])
        msg, label = frame(4)
        run.send_and_settle(FRONT, msg)
        engine = run.statuses()['seg_node: engine']
        outputs = run.recorder.by_stamp(FRONT)
        if fallback_after:
            assert list(outputs) == [4], 'after the fallback the next frame must be segmented'
            np.testing.assert_array_equal(outputs[4].mask, label)
            assert run.node.supervisor.model.engine.provider == 'cpu'
            # This period saw the failures (ERROR); the next one only the fallback (WARN).
            assert engine.level == ERROR and engine.hardware_id == 'cpu'
            assert 'fell back to the CPU provider: cuda failed 3 times in a row' in engine.message
            assert CUDA_ERROR in values(engine)['cpu_fallback']
            later = run.statuses()['seg_node: engine']
            assert later.level == WARN and later.message.startswith('fell back to the CPU provider')
        else:
            assert outputs == {}
            assert run.node.supervisor.model.engine.provider == 'cuda'
            assert engine.level == ERROR and '4 in a row' in engine.message
    err = capfd.readouterr().err
    assert ('rebuilding the model on the CPU provider' in err) == bool(fallback_after)


def test_an_engine_ten_times_slower_than_the_camera_drops_only_superseded_frames(context, model):
    delay = 0.2  # the camera sends every 1/30 s: six frames arrive during one engine call
    with node_in_process(context, model_path=model, image_topics=[FRONT, LEFT]) as run:
        run.inject(FaultyEngine(run.node.supervisor.model.engine, delay_s=delay))
        sent = 45
        start = time.monotonic()
        for stamp in range(sent):
            run.send(FRONT, frame(stamp, seed=stamp % 5)[0])
            time.sleep(1 / 30)  # the camera's frame period
        elapsed = time.monotonic() - start
        assert wait_for(lambda: run.settled(FRONT), 10), run.totals(FRONT)
        diagnostics = run.statuses()['seg_node: /cam_front']

        totals = run.totals(FRONT)
        processed = sorted(run.recorder.by_stamp(FRONT))
        dropped = sorted(old for _, old, _ in run.replaced)
        # Every frame either went through the engine or was replaced by a newer one while waiting.
        assert sorted(processed + dropped) == list(range(sent))
        assert all(new > old for _, old, new in run.replaced)
        assert processed[-1] == sent - 1, 'the newest frame is never dropped'
        assert processed == sorted(set(processed)), 'outputs come in input order'
        assert (totals['processed'], totals['dropped']) == (len(processed), len(dropped))
        # Each engine call takes at least ``delay``, so at most this many could run.
        assert len(processed) <= elapsed / delay + 2
        assert diagnostics.level == WARN and 'of frames dropped for newer ones' in diagnostics.message
        print(f'\nslow engine: {sent} frames in {elapsed:.2f} s, {len(processed)} processed, '
              f'{len(dropped)} dropped, latency p99 {values(diagnostics)["latency_p99_ms"]} ms')


def test_silence_and_its_end_are_reported(context, model):
    with node_in_process(context, model_path=model, image_topics=[FRONT, LEFT],
                         silence_timeout_s=60.0) as run:
        statuses = run.statuses()
        assert statuses['seg_node: /cam_front'].level == OK, 'no camera is silent right after start'
        assert run.node.set_parameters([Parameter('silence_timeout_s', value=0.2)])[0].successful

        def silent(name):
            status = run.statuses()[name]
            return status.level == ERROR and 'no frames for' in status.message
        assert wait_for(lambda: silent('seg_node: /cam_front'), 5)
        quiet = float(values(run.statuses()['seg_node: /cam_front'])['seconds_since_last_frame'])
        run.send(FRONT, frame(1)[0])
        statuses = run.statuses()
        assert statuses['seg_node: /cam_front'].level == OK, statuses['seg_node: /cam_front'].message
        assert float(values(statuses['seg_node: /cam_front'])['seconds_since_last_frame']) < quiet
        assert silent('seg_node: /cam_left'), 'the other camera is still silent'
        assert wait_for(lambda: run.settled(FRONT), 10)
