"""``seg_bag``: the command line of the bag tools (synth, play, label, eval, video, fleet).

Every expected failure (missing or corrupt bag, unknown topic, unsupported type, an output
that exists) is one sentence on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seg_node.bag.bagio import STORAGES, BagError
from seg_node.bag.evaluate import evaluate_bag, format_report
from seg_node.bag.label import LabelOptions, label_bag
from seg_node.bag.play import PlayOptions, parse_remap, play_bag
from seg_node.bag.synth import SynthOptions, write_drive
from seg_node.bag.video import VideoOptions, write_video

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _synth(args: argparse.Namespace) -> None:
    options = SynthOptions(cameras=args.cameras, frames=args.frames, width=args.width, height=args.height,
                           compressed=args.compressed, compressed_format=args.compressed_format,
                           seed=args.seed, scene=args.scene, storage=args.storage)
    counts = write_drive(args.out_bag, options, force=args.force)
    print(f'wrote {args.out_bag}: {sum(counts.values())} messages on {len(counts)} topics')
    for topic, count in counts.items():
        print(f'  {topic}: {count}')


def _play(args: argparse.Namespace) -> None:
    options = PlayOptions(rate=args.rate, loop=args.loop, start_offset=args.start_offset,
                          remap=dict(parse_remap(r) for r in args.remap), topics=tuple(args.play_topics),
                          ground_truth=args.ground_truth, clock=args.clock, wait_for=tuple(args.wait_for),
                          wait_timeout=args.wait_timeout, record=args.record,
                          record_topics=tuple(args.topics),
                          drain=args.drain, force=args.force, storage=args.storage)
    result = play_bag(args.bag, options)
    print(f'played {sum(result.published.values())} messages in {result.wall_s:.1f} s '
          f'(p99 {result.behind_ms_p99:.1f} ms behind schedule)')
    for topic, count in result.recorded.items():
        print(f'  recorded {topic}: {count}')


def _label(args: argparse.Namespace) -> None:
    outputs = ('mask', 'color_mask', 'overlay') + (('confidence',) if args.confidence else ())
    options = LabelOptions(topics=tuple(args.topics), outputs=outputs, overlay_alpha=args.overlay_alpha,
                           batch=args.batch, providers=tuple(args.providers), model_sha256=args.model_sha256,
                           force=args.force, storage=args.storage, probabilities_dir=args.probabilities,
                           ground_grid=args.ground_grid)
    result = label_bag(args.in_bag, args.out_bag, args.model, options)
    print(f'labelled {sum(result.frames.values())} frames on {result.provider} into {args.out_bag}')
    for topic, count in result.frames.items():
        print(f'  {topic}: {count}')


def _eval(args: argparse.Namespace) -> None:
    print(format_report(evaluate_bag(args.bag, truth_bag=args.truth)))


def _video(args: argparse.Namespace) -> None:
    options = VideoOptions(layout=args.layout, cameras=tuple(args.cameras), fps=args.fps, sheet=args.sheet,
                           force=args.force)
    result = write_video(args.bag, args.out, options)
    print(f'wrote {result.video} ({result.frames} frames at {result.fps:.1f} fps, '
          f'{result.size[0]}x{result.size[1]}) and {result.sheet}')


def _fleet(args: argparse.Namespace) -> int:
    # The fleet layer (and Ray) load only when this command runs; 1 when some bags failed. The
    # fleet checks that Ray is installed itself (run_fleet begins with require_ray).
    from seg_node.fleet.cli import run_command  # noqa: PLC0415

    return run_command(args)


def _fleet_parser(sub: argparse._SubParsersAction) -> None:
    """``seg_bag fleet label|eval``: many bags on a Ray cluster (README, "Fleet labelling")."""
    fleet = sub.add_parser('fleet', help='label or evaluate many bags on a Ray cluster (needs the fleet extra)')
    commands = fleet.add_subparsers(dest='fleet_command', required=True)
    for name, text in (('label', 'write one labelled bag per input bag, per-frame results and a report'),
                       ('eval', 'score every bag against its ground truth (or a reference model); no bags written')):
        p = commands.add_parser(name, help=text)
        p.add_argument('inputs', nargs='+', metavar='INPUT',
                       help='bag folders, globs (quoted) or manifest files (one bag or glob per line, # comments)')
        p.add_argument('--model', type=Path, required=True, help='ONNX model that meets the model contract')
        p.add_argument('--out', type=Path, required=True,
                       help='output folder (re-running into it skips the bags already complete)')
        p.add_argument('--reference-model', type=Path,
                       help='a second model with the same classes: per-class agreement, most-disagreeing frames')
        p.add_argument('--model-sha256', default='', help='expected SHA-256 of the model file')
        p.add_argument('--reference-sha256', default='', help='expected SHA-256 of the reference model file')
        p.add_argument('--topics', nargs='+', default=[], metavar='T', help='camera topics (default: all)')
        p.add_argument('--batch', type=int, default=8, help='frames per engine call (default 8)')
        p.add_argument('--providers', nargs='+',
                       help='execution providers in order of preference (default: tensorrt cuda cpu with '
                            '--gpus-per-worker, else cpu)')
        p.add_argument('--address', default='',
                       help='Ray cluster address (default: $RAY_ADDRESS, else a local cluster for this run)')
        p.add_argument('--workers', type=int, default=0, help='engines (Ray actors); default: as many as fit')
        p.add_argument('--cpus-per-worker', type=float, default=1.0,
                       help='CPUs per worker, also its ONNX Runtime threads (default 1)')
        p.add_argument('--gpus-per-worker', type=float, default=0.0,
                       help='GPUs per worker (e.g. 1, or 0.5 for two engines per GPU; default 0)')
        p.add_argument('--shard-frames', type=int, default=300,
                       help='camera frames per shard: a longer bag is split by time over several workers (default 300)')
        p.add_argument('--retries', type=int, default=2,
                       help='times a shard is retried after its worker process died (default 2)')
        p.add_argument('--worst', type=int, default=12, help='worst frames shown in the report (default 12)')
        p.add_argument('--no-progress', action='store_true', help='no progress bar')
        p.add_argument('--confidence', action='store_true',
                       help='per-frame confidence summary (and, for label, segmentation/confidence in the bags)')
        if name == 'label':
            p.add_argument('--overlay-alpha', type=float, default=0.5)
            p.add_argument('--storage', choices=sorted(STORAGES), default='sqlite3',
                           help='rosbag2 storage of written bags (default: %(default)s)')
        p.set_defaults(run=_fleet)


def _common(parser: argparse.ArgumentParser, *, storage: bool = True) -> None:
    parser.add_argument('--force', action='store_true', help='overwrite outputs that exist')
    if storage:
        parser.add_argument('--storage', choices=sorted(STORAGES), default='sqlite3',
                            help='rosbag2 storage of written bags (default: %(default)s)')


def build_parser() -> argparse.ArgumentParser:
    """The ``seg_bag`` argument parser with one sub-command per tool."""
    parser = argparse.ArgumentParser(prog='seg_bag', description='rosbag2 tools for seg_node.')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('synth', help='write a synthetic multi-camera drive with ground truth')
    p.add_argument('out_bag', type=Path)
    p.add_argument('--cameras', type=int, default=2, help='front, left, right, rear, ... (default 2)')
    p.add_argument('--frames', type=int, default=90, help='frames per camera at 30 Hz (default 90)')
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=320)
    p.add_argument('--compressed', action='store_true', help='also write <image>/compressed')
    p.add_argument('--compressed-format', choices=('jpeg', 'png'), default='jpeg')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--scene', choices=('drive', 'palette'), default='drive',
                   help='drive: street scenes; palette: palette-coloured blocks (exact for contract models)')
    _common(p)
    p.set_defaults(run=_synth)

    p = sub.add_parser('play', help='publish a bag into the ROS graph with its timing (and record)')
    p.add_argument('bag', type=Path)
    p.add_argument('--rate', type=float, default=1.0, help='playback speed factor (default 1)')
    p.add_argument('--loop', action='store_true')
    p.add_argument('--start-offset', type=float, default=0.0, help='seconds of the bag to skip')
    p.add_argument('--remap', action='append', default=[], metavar='FROM:=TO', help='rename a played topic')
    p.add_argument('--play-topics', nargs='+', default=[], metavar='T',
                   help='topics to play (default: all but the ground truth)')
    p.add_argument('--ground-truth', action='store_true', help='also play <camera>/segmentation/ground_truth')
    p.add_argument('--clock', action='store_true', help='publish /clock with bag time (use_sim_time)')
    p.add_argument('--wait-for', nargs='+', default=[], metavar='T',
                   help='topics that need a subscriber before playback starts')
    p.add_argument('--wait-timeout', type=float, default=30.0)
    p.add_argument('--record', type=Path, metavar='OUT_BAG', help='record --topics into this bag')
    p.add_argument('--topics', nargs='+', default=[], metavar='T', help='topics to record')
    p.add_argument('--drain', type=float, default=2.0, help='seconds to record after the last message')
    _common(p)
    p.set_defaults(run=_play)

    p = sub.add_parser('label', help='segment every camera image of a bag offline')
    p.add_argument('in_bag', type=Path)
    p.add_argument('out_bag', type=Path)
    p.add_argument('--model', type=Path, required=True,
                   help='ONNX model that meets the model contract (found as the node finds model_path)')
    p.add_argument('--model-sha256', default='', help='expected SHA-256 of the model file (checked before labelling)')
    p.add_argument('--topics', nargs='+', default=[], metavar='T', help='camera topics (default: all)')
    p.add_argument('--batch', type=int, default=8, help='frames per engine call (default 8)')
    p.add_argument('--providers', nargs='+', default=['tensorrt', 'cuda', 'cpu'],
                   help='execution providers in order of preference')
    p.add_argument('--overlay-alpha', type=float, default=0.5)
    p.add_argument('--confidence', action='store_true', help='also write segmentation/confidence')
    p.add_argument('--probabilities', type=Path, metavar='DIR',
                   help='also write per-pixel class probabilities, float32 [C,h,w], as DIR/<topic>/<time ns>.npy '
                        '(needs a model that outputs scores, not class ids)')
    p.add_argument('--ground-grid', action='store_true',
                   help='also write <ns>/segmentation/ground_grid (nav_msgs/OccupancyGrid) from the masks, with '
                        'the poses on /tf_static and the camera_info of the bag (seg_bag synth writes both)')
    _common(p)
    p.set_defaults(run=_label)

    p = sub.add_parser('eval', help='score mask topics against ground truth; report latency')
    p.add_argument('bag', type=Path)
    p.add_argument('--truth', type=Path, help='bag holding the ground truth (default: BAG itself)')
    p.set_defaults(run=_eval)

    p = sub.add_parser('video', help='render overlays to MP4 and a contact sheet PNG')
    p.add_argument('bag', type=Path)
    p.add_argument('out', type=Path, metavar='OUT.mp4')
    p.add_argument('--layout', choices=('overlay', 'side-by-side'), default='overlay')
    p.add_argument('--cameras', nargs='+', default=[], metavar='NS', help='cameras, e.g. /cam_front')
    p.add_argument('--fps', type=float, default=0.0, help='frame rate (default: from the stamps)')
    p.add_argument('--sheet', type=Path, help='contact sheet PNG (default: OUT_sheet.png)')
    _common(p, storage=False)
    p.set_defaults(run=_video)
    _fleet_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``seg_bag`` command; 0 on success, 2 on a usage or data error, 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
    except BagError as err:
        print(f'seg_bag {args.command}: error: {err}', file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code or 0  # fleet: 1 when some bags failed


if __name__ == '__main__':
    sys.exit(main())
