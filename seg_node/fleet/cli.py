"""``seg_bag fleet label|eval``: the command-line side of fleet runs (the parser lives in ``seg_node.bag.cli``).

Exit status: 0 when every bag is complete (labelled now or verified from an earlier run), 1 when
some bags failed (each is in the summary with its reason), 2 for a usage or input error that
stopped the run before any bag was labelled (``seg_bag``'s BagError handling).
"""

from __future__ import annotations

import argparse

from seg_node.fleet.run import FleetOptions, run_fleet
from seg_node.fleet.summary import format_summary


def options_from_args(args: argparse.Namespace) -> FleetOptions:
    """FleetOptions from the parsed ``seg_bag fleet label|eval`` arguments."""
    label = args.fleet_command == 'label'
    outputs = ('mask', 'color_mask', 'overlay') + (('confidence',) if args.confidence else ())
    return FleetOptions(
        model=str(args.model), out=args.out, mode=args.fleet_command,
        reference=str(args.reference_model or ''), model_sha256=args.model_sha256,
        reference_sha256=args.reference_sha256, topics=tuple(args.topics), outputs=outputs,
        overlay_alpha=args.overlay_alpha if label else 0.5, batch=args.batch, providers=tuple(args.providers or ()),
        storage=args.storage if label else 'sqlite3', address=args.address or '', workers=args.workers,
        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker, shard_frames=args.shard_frames,
        retries=args.retries, worst=args.worst, progress=False if args.no_progress else None)


def run_command(args: argparse.Namespace) -> int:
    """Run ``seg_bag fleet label|eval``; print the summary; return the exit status (0 or 1)."""
    summary = run_fleet(args.inputs, options_from_args(args))
    print(format_summary(summary))
    return summary.exit_code
