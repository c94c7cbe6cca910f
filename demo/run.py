"""``make demo``: a synthetic multi-camera drive replayed through seg_node, scored and rendered.

model (built if missing) -> synthetic drive bag -> seg_node as its own process (real DDS on
loopback) <- the bag played at a rate the node keeps up with, outputs recorded -> mIoU against
the ground truth, latency, a side-by-side MP4 and a contact sheet, all under ``out/demo/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from seg_node import synthetic
from seg_node.bag import synth
from seg_node.bag.bagio import STORAGES, BagError
from seg_node.bag.evaluate import EvalReport, evaluate_bag, last_diagnostics
from seg_node.bag.ground import BAG_GRID, GRID_TOPIC
from seg_node.bag.play import PlayOptions, play_bag
from seg_node.bag.synth import CAMERA_NAMES, FPS, SCENES, SynthOptions, write_drive
from seg_node.bag.video import VideoOptions, write_video
from seg_node.model.file import DEMO_MODEL, models_dir
from seg_node.msg import topics
from seg_node.ros.harness import NodeProcess, isolate_dds
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.loader import LOAD_ERRORS, ModelRequest, load_model
from seg_node.runtime.stats import percentile
from seg_node.synthetic import Drive

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = models_dir() / DEMO_MODEL
OUTPUTS = ('mask', 'color_mask', 'overlay')
# The demo leaves TensorRT out: building its engine for a ResNet-50 takes minutes on first use.
PROVIDERS = ('cuda', 'cpu')
# Playback is slowed until the node has this many times the engine time it needs per frame set
# (the player, recorder and node share the machine), and never takes longer than PLAY_BUDGET_S.
HEADROOM = 2.5
RENDER_MS_PER_FRAME = 15.0  # convert, render and publish of one 640x320 frame, measured here
PLAY_BUDGET_S = 75.0
# A CPU engine affords a second or two of drive; at a third of real time the video can be watched.
VIDEO_FPS = 10.0
NODE_START_TIMEOUT_S = 60.0


class DemoError(RuntimeError):
    """A demo step failed; the message says which and why."""


@dataclass(frozen=True)
class Plan:
    """What the demo plays, sized to the speed of this machine."""

    cameras: int
    frames: int
    width: int
    height: int
    rate: float
    provider: str
    batch_ms: float


def ensure_model(path: Path) -> None:
    """Build the demo model when it is the default one and missing."""
    if path.is_file():
        return
    if path != DEFAULT_MODEL:
        msg = f'model {str(path)!r} does not exist'
        raise DemoError(msg)
    print(f'[demo] {path} is missing: training it (python -m seg_node.training.demo_model)',
          flush=True)
    done = subprocess.run([sys.executable, '-m', 'seg_node.training.demo_model'], cwd=REPO, check=False)
    if done.returncode != 0 or not path.is_file():
        msg = f'building the demo model failed (exit code {done.returncode}); see the output above'
        raise DemoError(msg)


def drive_key(options: SynthOptions) -> str:
    """What a written drive depends on: its options and the source of the generator that drew it."""
    digest = hashlib.sha256(json.dumps(asdict(options), sort_keys=True).encode())
    for source in sorted([*Path(synthetic.__file__).parent.rglob('*.py'), Path(synth.__file__)]):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def ensure_drive(folder: Path, options: SynthOptions) -> bool:
    """Write the synthetic drive unless an earlier run left the same one; True when it was reused.

    Rendering 2 x 90 frames at 640x320 takes 30 s on 2 cores, half of a cached ``make demo``.
    """
    stamp = folder.with_name(f'{folder.name}.key')
    key = drive_key(options)
    if folder.is_dir() and stamp.is_file() and stamp.read_text().strip() == key:
        return True
    stamp.unlink(missing_ok=True)  # a drive interrupted while written has no stamp
    write_drive(folder, options, force=True)
    stamp.write_text(key + '\n')
    return False


def plan(model: Path, args: argparse.Namespace) -> Plan:
    """Measure the engine on this machine and pick the replay rate and length."""
    try:
        engine = load_model(ModelRequest(str(model), config=EngineConfig(providers=tuple(args.providers)))).engine
    except LOAD_ERRORS as err:
        raise DemoError(str(err)) from None
    frames = [np.zeros((args.height, args.width, 3), np.uint8)] * args.cameras
    engine.segment(frames)  # the first run allocates; time the ones after it
    times = []
    for _ in range(3):
        start = time.perf_counter()
        engine.segment(frames)
        times.append(time.perf_counter() - start)
    batch_ms = 1e3 * float(np.median(times))
    needed_ms = HEADROOM * (batch_ms + RENDER_MS_PER_FRAME * args.cameras)
    rate = args.rate or min(1.0, (1e3 / FPS) / needed_ms)
    count = args.frames or max(15, min(90, int(PLAY_BUDGET_S * FPS * rate)))
    return Plan(args.cameras, count, args.width, args.height, rate, engine.provider, batch_ms)


def ground_params(drive: SynthOptions) -> dict:
    """The ground grid of the drive's cameras, as ``seg_bag synth``'s truth grids are made (none for palette scenes).

    The drive's poses are exact: no pitch uncertainty limits the range.
    """
    if drive.scene != 'drive':
        return {}
    rig = Drive(drive.seed, width=drive.width, height=drive.height, num_cameras=drive.cameras)
    grid = BAG_GRID
    return {'ground_grid': True, 'ground_resolution': grid.resolution, 'ground_pitch_sigma_deg': 0.0,
            'ground_x_min': grid.origin_x, 'ground_x_max': grid.origin_x + grid.width * grid.resolution,
            'ground_y_min': grid.origin_y, 'ground_y_max': grid.origin_y + grid.height * grid.resolution,
            'ground_camera_poses': [v for camera in range(drive.cameras) for v in rig.mount(camera)]}


def start_node(model: Path, image_topics: list[str], log: Path, providers: list[str],
               ground: dict | None = None, *, foxglove_port: int = -1) -> NodeProcess:
    """seg_node started as a user would, with its log in ``log`` (and the Foxglove live view if a port is given)."""
    params = (ground or {}) | {'model_path': str(model), 'image_topics': image_topics, 'providers': providers,
              # A reliable, queued input: frames are lost only if the node falls behind.
              'input_reliability': 'reliable', 'input_depth': 10, 'diagnostics_period_s': 0.5,
              # The video and contact sheet are what people share: overlays at the camera's size.
              'visualization_scale': 1.0, 'foxglove_port': foxglove_port}
    return NodeProcess(params, cwd=REPO, log=log)


def summary(plan_: Plan, report: EvalReport, played: dict[str, int], diagnostics: dict) -> dict:
    """The numbers the demo reports, as JSON-ready data."""
    cameras = {}
    for name in CAMERA_NAMES[:plan_.cameras]:
        topic = topics.camera_image_topic(name)
        ns = topics.camera_namespace(topic)
        cam = report.cameras[ns]
        node = diagnostics.get(f'seg_node: {ns}', {})
        cameras[ns] = {
            'frames_in': played.get(topic, 0), 'frames_out': cam.matched + len(cam.extra),
            'dropped': played.get(topic, 0) - cam.matched - len(cam.extra),
            'node_dropped': int(node.get('frames_dropped', -1)),
            'latency_p50_ms': round(percentile(cam.latency_ms, 50), 1),
            'latency_p99_ms': round(percentile(cam.latency_ms, 99), 1),
        }
    engine = diagnostics.get('seg_node: engine', {})
    return {
        'provider': engine.get('provider', plan_.provider),
        'cameras': cameras,
        'mean_iou': round(report.metrics.mean_iou, 4),
        'pixel_accuracy': round(report.metrics.pixel_accuracy, 4),
        'per_class_iou': {name: round(iou, 4)
                          for name, iou in zip(report.classes, report.metrics.iou, strict=True)
                          if not np.isnan(iou)},
        'latency_p50_ms': round(percentile(report.latency(), 50), 1),
        'latency_p99_ms': round(percentile(report.latency(), 99), 1),
        'frames': plan_.frames, 'resolution': [plan_.width, plan_.height],
        'replay_rate': round(plan_.rate, 3),
        'engine_ms_per_frame_set': round(plan_.batch_ms, 1),
        **({'ground_grid': {k: round(v, 4) for k, v in report.ground.summary().items()}} if report.ground else {}),
    }


def sheet_title(result: dict) -> tuple[str, ...]:
    """What the contact sheet says above the frames: the run and what it measured."""
    delivered = sum(c['frames_out'] for c in result['cameras'].values())
    sent = sum(c['frames_in'] for c in result['cameras'].values())
    return (f'seg_node demo: {len(result["cameras"])} cameras, {result["resolution"][0]}x{result["resolution"][1]}, '
            f'provider {result["provider"]}',
            f'mIoU {result["mean_iou"]:.3f}, pixel accuracy {result["pixel_accuracy"]:.3f} against the ground truth; '
            f'{delivered} of {sent} frames delivered; latency p50 {result["latency_p50_ms"]:.0f} ms, '
            f'p99 {result["latency_p99_ms"]:.0f} ms')


def format_summary(result: dict, out: Path, wall_s: float) -> str:
    """The summary table printed at the end."""
    lines = [f'seg_node demo: {len(result["cameras"])} cameras x {result["frames"]} frames '
             f'({result["resolution"][0]}x{result["resolution"][1]}), replayed at {result["replay_rate"]:g}x '
             f'real time, provider {result["provider"]}',
             f'{"camera":<12}{"in":>6}{"out":>6}{"dropped":>9}{"p50 ms":>9}{"p99 ms":>9}']
    for ns, cam in result['cameras'].items():
        lines.append(f'{ns:<12}{cam["frames_in"]:>6}{cam["frames_out"]:>6}{cam["dropped"]:>9}'
                     f'{cam["latency_p50_ms"]:>9.1f}{cam["latency_p99_ms"]:>9.1f}')
    lines += [f'mIoU {result["mean_iou"]:.3f}, pixel accuracy {result["pixel_accuracy"]:.3f} against the '
              f'ground truth; latency (input -> mask receipt) p50 {result["latency_p50_ms"]:.1f} ms, '
              f'p99 {result["latency_p99_ms"]:.1f} ms',
              *([ground_line(result['ground_grid'])] if 'ground_grid' in result else []),
              f'wrote {out}/: output (rosbag2), demo.mp4 ({VIDEO_FPS:g} fps, slower than real time), '
              f'demo_sheet.png, summary.json, node.log in {wall_s:.0f} s']
    return '\n'.join(lines)


def ground_line(scores: dict) -> str:
    """The ground grid's scores against the drive's truth grids, in one line."""
    return (f'ground grid: cell accuracy {scores["cell_accuracy"]:.3f} (coverage {scores["coverage"]:.3f}), '
            f'obstacle-contact recall within one cell {scores["contact_recall"]:.3f}, '
            f'false-free rate {scores["false_free_rate"]:.3f}')


def run(args: argparse.Namespace) -> dict:
    """Every demo step; returns the summary."""
    started = time.monotonic()
    isolate_dds(REPO)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    ensure_model(args.model)
    plan_ = plan(args.model, args)
    print(f'[demo] engine on {plan_.provider}: {plan_.batch_ms:.0f} ms per {plan_.cameras}-camera batch; '
          f'replaying {plan_.frames} frames at {plan_.rate:.3g}x', flush=True)
    drive = SynthOptions(cameras=plan_.cameras, frames=plan_.frames, width=plan_.width, height=plan_.height,
                         seed=args.seed, scene=args.scene)
    if ensure_drive(out / 'drive', drive):
        print(f'[demo] reusing the drive in {out / "drive"} (same options and generator)', flush=True)
    cameras = [topics.camera_image_topic(name) for name in CAMERA_NAMES[:plan_.cameras]]
    ground = ground_params(drive)
    grids = (GRID_TOPIC,) if ground else ()
    recorded = [*cameras, *(topics.segmentation_topic(c, n) for c in cameras for n in (*OUTPUTS, 'labels', *grids)),
                '/diagnostics']
    node = start_node(args.model, cameras, out / 'node.log', list(args.providers), ground,
                      foxglove_port=args.foxglove_port)
    try:
        try:
            node.wait_ready(NODE_START_TIMEOUT_S)
        except RuntimeError as err:
            raise DemoError(str(err)) from None
        print('[demo] seg_node is up; replaying the drive into it', flush=True)
        view = next((line for line in node.lines if 'Foxglove live view on' in line), None)
        if view:
            print(f'[demo] {view[view.index("Foxglove live view"):]}', flush=True)
        # Drain long enough for the last frame set to come out of a slow engine.
        drain = max(1.5, 3 * plan_.batch_ms / 1e3)
        options = PlayOptions(rate=plan_.rate, wait_for=tuple(cameras), record=out / 'output',
                              record_topics=tuple(recorded), drain=drain, force=True, storage=args.storage)
        played = play_bag(out / 'drive', options)
    finally:
        code = node.stop()
    if code != 0:
        msg = f'seg_node exited with {code}; see {out / "node.log"}'
        raise DemoError(msg)
    report = evaluate_bag(out / 'output', truth_bag=out / 'drive')
    result = summary(plan_, report, played.published, last_diagnostics(out / 'output'))
    write_video(out / 'output', out / 'demo.mp4', VideoOptions(layout='side-by-side', fps=VIDEO_FPS, force=True,
                                                               sheet_title=sheet_title(result)))
    result['wall_s'] = round(time.monotonic() - started, 1)
    (out / 'summary.json').write_text(json.dumps(result, indent=2) + '\n')
    print(format_summary(result, out, result['wall_s']), flush=True)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m demo.run', description=__doc__.splitlines()[0])
    parser.add_argument('--model', type=Path, default=DEFAULT_MODEL,
                        help=f'ONNX model (default: {DEFAULT_MODEL}, trained on first use)')
    parser.add_argument('--out', type=Path, default=REPO / 'out' / 'demo', help='output directory')
    parser.add_argument('--cameras', type=int, default=2, help='cameras (front, left, ...)')
    parser.add_argument('--frames', type=int, default=0, help='frames per camera (default: fit the budget)')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=320)
    parser.add_argument('--rate', type=float, default=0.0, help='replay rate (default: measured)')
    parser.add_argument('--seed', type=int, default=2024, help='drive seed (held out from training)')
    parser.add_argument('--providers', nargs='+', default=list(PROVIDERS), choices=('tensorrt', 'cuda', 'cpu'),
                        help=f'execution providers in order of preference (default: {" ".join(PROVIDERS)})')
    parser.add_argument('--storage', choices=sorted(STORAGES), default='sqlite3',
                        help='rosbag2 storage of the recording in OUT/output (mcap: opens in Foxglove)')
    parser.add_argument('--foxglove-port', type=int, default=-1,
                        help='serve the Foxglove live view from the node on this port (0: any free port)')
    parser.add_argument('--scene', choices=SCENES, default='drive',
                        help='street scenes, or palette-coloured blocks (exact for the known-answer model)')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 on success, 1 with one message on failure."""
    args = _parser().parse_args(argv)
    try:
        run(args)
    except (DemoError, BagError) as err:
        print(f'[demo] failed: {err}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
