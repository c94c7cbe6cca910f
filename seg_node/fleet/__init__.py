"""``seg_bag fleet``: label and evaluate many bags on a Ray cluster with the live node's engine.

``plan`` turns inputs (bag folders, globs, manifests) into time-range shards and keeps the
completion records that make a run resumable; ``worker`` is the Ray actor that runs one shard
(one engine per actor, built by ``runtime.loader.load_model``); ``run`` drives a run (cluster,
progress, merging shards into one bag per input, summary); ``report`` writes the HTML report.

Ray is an optional extra (``pip install 'seg_node[fleet]'``): nothing here imports it at module
level, and no module imports ROS, so a Ray worker never touches DDS.
"""

from __future__ import annotations

from seg_node.bag.bagio import BagError

INSTALL_HINT = "pip install 'seg_node[fleet]' (or pip install 'ray[data]==2.60.0' into the same environment)"


def require_ray() -> None:
    """Raise BagError with the install command when Ray Data or pyarrow cannot be imported."""
    try:
        import pyarrow  # noqa: F401, PLC0415 - optional extra, checked when a fleet command runs
        import ray  # noqa: PLC0415
        import ray.data  # noqa: F401, PLC0415
    except ImportError as err:
        msg = (f'fleet labelling needs Ray Data, which is not installed here ({err.name or err}); '
               f'install it with {INSTALL_HINT}')
        raise BagError(msg) from None
