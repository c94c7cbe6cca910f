"""seg_bag play on its own: timing, rate, start offset, remap, /clock, ground truth held back.

The recorder subscribes to what the player publishes (same process, real DDS on loopback), so
the recorded receive times show the playback schedule.
"""

import numpy as np
import pytest

from seg_node.bag.bagio import open_bag
from seg_node.bag.cli import main
from seg_node.bag.synth import FPS, SynthOptions, write_drive

pytestmark = pytest.mark.dds

FRAMES = 12
FRONT, LEFT = '/cam_front/image_raw', '/cam_left/image_raw'
TRUTH = '/cam_front/segmentation/ground_truth'


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp('play') / 'drive'
    write_drive(path, SynthOptions(cameras=2, frames=FRAMES, width=64, height=48, scene='palette'))
    return path


def record(tmp_path, bag, *extra, topics):
    out = tmp_path / 'recorded'
    argv = ['play', str(bag), *extra, '--record', str(out), '--topics', *topics, '--drain', '0.5',
            '--wait-timeout', '10']
    assert main(argv) == 0
    received = {}
    with open_bag(out) as reader:
        for conn, logged, raw in reader.messages():
            received.setdefault(conn.topic, []).append((logged, reader.deserialize(raw, conn.msgtype)))
    return received


def test_playback_keeps_the_bag_timing_scaled_by_rate(tmp_path, bag):
    received = record(tmp_path, bag, '--rate', '2', topics=[FRONT, LEFT])
    for topic in (FRONT, LEFT):
        times = np.array([t for t, _ in received[topic]]) / 1e9
        assert len(times) == FRAMES
        # The span of the whole playback, not single periods: one late delivery on a busy
        # machine moves one period by milliseconds but the 11-period span by little. At rate 1
        # it would be twice as long, at full speed (no pacing) close to zero.
        span = times[-1] - times[0]
        assert span == pytest.approx((FRAMES - 1) / FPS / 2, rel=0.25)
    # Each camera keeps its place in the rig (4 ms after the previous one in the bag, 2 ms at
    # rate 2): the median offset stays that of the rig, up to delivery jitter.
    offsets = [b[0] - a[0] for a, b in zip(received[FRONT], received[LEFT], strict=True)]
    assert 0.0 <= np.median(offsets) / 1e6 <= 8.0


def test_ground_truth_is_held_back_unless_asked_for(tmp_path, bag):
    received = record(tmp_path, bag, '--play-topics', FRONT, TRUTH, topics=[FRONT, TRUTH])
    assert len(received[TRUTH]) == FRAMES
    with open_bag(bag) as reader:
        assert any(c.topic == TRUTH for c in reader.connections)
    default = record(tmp_path / 'default', bag, '--wait-timeout', '2', topics=[FRONT])
    assert TRUTH not in default


def test_start_offset_and_remap(tmp_path, bag):
    received = record(tmp_path, bag, '--start-offset', '0.2', '--remap', f'{FRONT}:=/renamed/image',
                      topics=['/renamed/image'])
    # The offset skips the frames logged in the first 0.2 s (6 at 30 Hz).
    stamps = [m.header.stamp for _, m in received['/renamed/image']]
    assert len(stamps) == FRAMES - 6
    assert stamps[0].nanosec == pytest.approx(0.2e9, abs=2e6)


def test_clock_publishes_the_bag_time(tmp_path, bag):
    received = record(tmp_path, bag, '--clock', '--play-topics', FRONT, topics=['/clock', FRONT])
    clock = [m.clock.sec * 10**9 + m.clock.nanosec for _, m in received['/clock']]
    with open_bag(bag) as reader:
        logged = [t for c, t, _ in reader.messages() if c.topic == FRONT]
    assert clock == logged
