"""Soak: two cameras at 30 Hz through the node process, watching memory, threads, headers and drops.

A 1-minute run is part of ``make test`` (2 until the suite neared its 15-minute budget); ``make soak``
runs 30 minutes (``--soak-minutes``).
Every frame paints its camera and sequence number as class stripes, so each output's content
can be checked against the header it carries. Inputs are reliable with a deep queue so that
every frame sent reaches the node: any frame that is not segmented must then be one that the
latest-frame policy replaced with a newer one, and the counters must say so.
"""

import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from reliability_helpers import FRONT, LEFT, image_msg, png_msg, save_model
from sensor_msgs.msg import CompressedImage, Image

from seg_node.model.classes import CITYSCAPES_PALETTE
from seg_node.ros.camera import qos
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode

RATE_HZ = 30.0
HEIGHT, WIDTH = 240, 320
CLASSES = 19
CYCLE = CLASSES * CLASSES  # sequence numbers painted modulo this
PALETTE = np.asarray(CITYSCAPES_PALETTE, np.uint8)
CAMERAS = {FRONT: (0, 'front'), LEFT: (1, 'left')}  # index painted in the frame, frame_id
OUTPUTS = ('mask', 'color_mask', 'overlay')
SAMPLE_PERIOD_S = 2.0


def stripes(camera_index: int, seq: int) -> np.ndarray:
    """Class ids of the four stripes of a frame: camera, two base-19 digits of seq, a check."""
    high, low = divmod(seq % CYCLE, CLASSES)
    return np.array([camera_index, high, low, (camera_index + 3 * high + 7 * low + 5) % CLASSES])


def frame(camera_index: int, seq: int) -> np.ndarray:
    """The RGB frame of one camera and sequence number."""
    row = np.repeat(PALETTE[stripes(camera_index, seq)], WIDTH // 4, axis=0)
    return np.ascontiguousarray(np.broadcast_to(row, (HEIGHT, WIDTH, 3)))


def stripe_centres(array: np.ndarray) -> np.ndarray:
    """The pixels at the centre of each stripe (any resolution)."""
    height, width = array.shape[:2]
    return array[height // 2, [(2 * i + 1) * width // 8 for i in range(4)]]


@dataclass
class Tally:
    """What the client saw of one camera's outputs."""

    stamps: dict = field(default_factory=lambda: defaultdict(list))  # output -> stamps, arrival order
    wrong_header: list = field(default_factory=list)
    wrong_content: list = field(default_factory=list)


class SoakClient:
    """Publishes both cameras at 30 Hz and checks every output that comes back."""

    def __init__(self):
        self.ros = BackgroundNode('soak_client')
        node = self.ros.node
        self.sent = dict.fromkeys(CAMERAS, 0)
        self.tally = {camera: Tally() for camera in CAMERAS}
        self.diagnostics = []
        self._png: dict[tuple[int, int], bytes] = {}
        self.pubs = {FRONT: node.create_publisher(Image, FRONT, qos('reliable', 100)),
                     LEFT: node.create_publisher(CompressedImage, LEFT, qos('reliable', 100))}
        self.subs = [node.create_subscription(Image, f'/cam_{name}/segmentation/{output}',
                                              lambda m, c=camera, o=output: self._check(c, o, m),
                                              qos('reliable', 100))
                     for camera, (_, name) in CAMERAS.items() for output in OUTPUTS]
        self.subs.append(node.create_subscription(DiagnosticArray, '/diagnostics', self._keep_diagnostics, 10))

    def _keep_diagnostics(self, msg):
        self.diagnostics = [*self.diagnostics[-20:], msg]

    def connected(self):
        return (all(p.get_subscription_count() for p in self.pubs.values())
                and all(s.get_publisher_count() for s in self.subs))

    def publish(self, seq):
        for camera, (index, name) in CAMERAS.items():
            if camera == LEFT:
                key = (index, seq % CYCLE)
                if key not in self._png:
                    self._png[key] = png_msg(frame(index, seq), 0).data
                msg = CompressedImage(format='png')
                msg.header.stamp.sec, msg.header.frame_id = seq, name
                msg.data = self._png[key]
            else:
                msg = image_msg(frame(index, seq), seq, name)
            self.sent[camera] = seq + 1  # before publishing: its output may be back before the next line
            self.pubs[camera].publish(msg)

    def _check(self, camera, output, msg):
        index, name = CAMERAS[camera]
        tally = self.tally[camera]
        seq = msg.header.stamp.sec
        if msg.header.frame_id != name or msg.header.stamp.nanosec != 0 or seq >= self.sent[camera]:
            tally.wrong_header.append((output, msg.header.frame_id, seq))
        tally.stamps[output].append(seq)
        channels = 1 if output == 'mask' else 3
        pixels = stripe_centres(np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, channels))
        expected = stripes(index, seq)
        if output == 'mask':
            right = np.array_equal(pixels[:, 0], expected)
        else:  # colour mask and overlay: over a palette-painted input both are the palette colour
            right = np.abs(pixels.astype(int) - PALETTE[expected].astype(int)).max() <= 1
        if not right:
            tally.wrong_content.append((output, seq))

    def counters(self, camera):
        ns = f'seg_node: /cam_{CAMERAS[camera][1]}'
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name == ns:
                    return {kv.key: kv.value for kv in status.values}
        return {}


def memory_and_threads(pid):
    """(RSS kB, thread count, RSS kB of anonymous / file / shared memory) of a process."""
    status = Path(f'/proc/{pid}/status').read_text()
    fields = dict(line.split(':', 1) for line in status.splitlines())
    kb = {name: int(fields[name].split()[0]) for name in ('VmRSS', 'RssAnon', 'RssFile', 'RssShmem')}
    return kb['VmRSS'], int(fields['Threads']), (kb['RssAnon'], kb['RssFile'], kb['RssShmem'])


def drive(client, pid, seconds):
    """Publish at RATE_HZ for ``seconds``, sampling the node's memory and threads; return samples."""
    samples, seq = [], 0
    start = time.monotonic()
    next_frame = next_sample = start
    while (now := time.monotonic()) - start < seconds:
        if now >= next_sample:
            samples.append((now - start, *memory_and_threads(pid)))
            next_sample += SAMPLE_PERIOD_S
        if now >= next_frame:
            client.publish(seq)
            seq += 1
            next_frame += 1 / RATE_HZ
        time.sleep(max(0.0, min(next_frame, next_sample) - time.monotonic()))  # the frame clock
    samples.append((time.monotonic() - start, *memory_and_threads(pid)))
    return samples


def settled(client, camera):
    """The node's counters account for every frame sent (none in flight, none unexplained)."""
    c = client.counters(camera)
    if not c:
        return False
    accounted = sum(int(c[f'frames_{k}']) for k in ('processed', 'dropped', 'rejected', 'failed', 'skipped'))
    return int(c['frames_received']) == client.sent[camera] == accounted


def run_soak(tmp_path, minutes, capsys):
    seconds = minutes * 60
    warm_up = min(60.0, seconds / 4)
    model = save_model(tmp_path / 'palette.onnx', input_size=(96, 128))
    process = NodeProcess({'model_path': model, 'image_topics': list(CAMERAS), 'providers': ['cpu'],
                           'input_reliability': 'reliable', 'input_depth': 100, 'output_depth': 100,
                           'diagnostics_period_s': 1.0, 'warn_throttle_s': 60.0})
    client = SoakClient()
    try:
        process.wait_ready()
        assert wait_for(client.connected, 30), 'seg_node and the soak client did not discover each other'
        samples = drive(client, process.proc.pid, seconds)
        for camera in CAMERAS:
            assert wait_for(lambda c=camera: settled(client, c), 30), (client.sent, client.counters(camera))
            processed = int(client.counters(camera)['frames_processed'])
            assert wait_for(lambda c=camera, p=processed: all(
                len(client.tally[c].stamps[o]) == p for o in OUTPUTS), 30), 'outputs still missing'
        figures, problems = check(client, samples, warm_up)
        code = process.stop(signal.SIGINT)
    finally:
        client.ros.close()
        process.stop(signal.SIGKILL)
    with capsys.disabled():
        print(f'\nsoak {minutes:g} min, 2 cameras at {RATE_HZ:g} Hz:\n' + '\n'.join(figures))
    assert not problems, '\n'.join(problems)
    assert code == 0 and 'Traceback' not in process.output


def check(client, samples, warm_up):
    """The soak's figures, and every condition it broke (none when it passed)."""
    figures, problems = [], []
    for camera in CAMERAS:
        figure, found = check_camera(client, camera)
        figures.append(figure)
        problems += found
    baseline = next(s for s in samples if s[0] >= warm_up)
    after = [s for s in samples if s[0] >= warm_up]
    peak = max(after, key=lambda s: s[1])
    growth = (peak[1] - baseline[1]) / baseline[1]
    threads = sorted({s[2] for s in after})
    figures.append(f'  node RSS: {samples[0][1] / 1024:.1f} MiB at start, {baseline[1] / 1024:.1f} MiB after '
                   f'{warm_up:.0f} s warm-up, peak {peak[1] / 1024:.1f} MiB at {peak[0]:.0f} s, end '
                   f'{samples[-1][1] / 1024:.1f} MiB -> growth {growth:+.2%}')
    figures.append(f'  RSS anonymous/file/shared MiB: {_mib(baseline[3])} after warm-up, {_mib(peak[3])} at the '
                   f'peak; every tenth of the run: {", ".join(f"{s[1] / 1024:.0f}" for s in tenths(samples))}')
    figures.append(f'  node threads: {samples[0][2]} at start, {threads} after warm-up '
                   f'({len(samples)} samples every {SAMPLE_PERIOD_S:g} s)')
    if growth > 0.05:
        problems.append(f'RSS grew by {growth:.2%} after warm-up (at most 5 %)')
    if threads != [baseline[2]]:
        problems.append(f'thread count changed after warm-up: {threads}')
    return figures, problems


def _mib(parts):
    return '/'.join(f'{kb / 1024:.0f}' for kb in parts)


def tenths(samples):
    """The samples nearest to 0 %, 10 %, ... 100 % of the run."""
    end = samples[-1][0]
    return [min(samples, key=lambda s, t=t: abs(s[0] - t * end / 10)) for t in range(11)]


def check_camera(client, camera):
    """One camera's figure line and its broken conditions."""
    tally, c = client.tally[camera], client.counters(camera)
    processed, dropped = int(c['frames_processed']), int(c['frames_dropped'])
    masks = tally.stamps['mask']
    problems = []
    if tally.wrong_header:
        problems.append(f'{camera}: outputs with a header of no sent frame {tally.wrong_header[:5]}')
    if tally.wrong_content:
        problems.append(f'{camera}: output content of another frame {tally.wrong_content[:5]}')
    problems += [f'{camera}: {output} is not one per segmented frame'
                 for output in OUTPUTS if tally.stamps[output] != masks]
    if masks != sorted(set(masks)):
        problems.append(f'{camera}: outputs out of order or repeated')
    if not masks or masks[-1] != client.sent[camera] - 1:
        problems.append(f'{camera}: the newest frame was not segmented')
    if processed + dropped != client.sent[camera]:
        problems.append(f'{camera}: frames neither segmented nor dropped for a newer one {c}')
    figure = (f'  {camera}: sent {client.sent[camera]}, segmented {processed}, dropped {dropped} '
              f'(latest-frame), latency p50 {c["latency_p50_ms"]} ms p99 {c["latency_p99_ms"]} ms; '
              f'{sum(len(v) for v in tally.stamps.values())} outputs checked, {len(tally.wrong_header)} '
              f'wrong headers, {len(tally.wrong_content)} wrong contents')
    return figure, problems


def test_soak_one_minute(tmp_path, capsys):
    run_soak(tmp_path, 1.0, capsys)


@pytest.mark.soak
@pytest.mark.timeout(12 * 3600)  # the run's own length comes from --soak-minutes
def test_soak(tmp_path, capsys, request):
    run_soak(tmp_path, request.config.getoption('--soak-minutes') or 30.0, capsys)
