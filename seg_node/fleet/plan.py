"""What a fleet run works on: the input bags, their time-range shards, the output layout, resume records.

A bag is split into shards by log time, so one long bag spreads over several workers; each shard
is a (bag, start_ns, stop_ns) item that a worker reads itself with rosbags, so no image ever goes
through Ray's object store. A bag is complete when its completion record exists (written last,
after every output was renamed into place) and still matches the input, the models and the
settings; a re-run skips such bags and redoes every other one.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seg_node.bag.bagio import IMAGE, IMAGE_TYPES, BagError, camera_image_topics, connections_for, open_bag
from seg_node.msg import topics

RECORD_VERSION = 1
# Shard size when none is given: about 10 s of one 30 Hz camera, big enough that reading and
# engine start-up stay small against inference, small enough to spread a 10-minute bag widely.
DEFAULT_SHARD_FRAMES = 300
_GLOB_CHARS = set('*?[')


@dataclass(frozen=True)
class Shard:
    """One work item: the camera frames of ``bag`` logged in [start, stop) (None: open end)."""

    bag: str  # the input bag folder
    name: str  # the bag's output name
    index: int
    count: int  # shards of this bag
    start: int | None
    stop: int | None
    frames: int  # camera frames expected (from the bag's metadata, for progress)
    part_dir: str  # where the worker writes this shard's outputs

    def to_json(self) -> str:
        """The item as one JSON string (a single Arrow column in the Ray dataset)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Shard:
        """The inverse of ``to_json``."""
        return cls(**json.loads(text))


@dataclass
class BagPlan:
    """One input bag: its output name, fingerprint, cameras and shards, or why it cannot be used."""

    name: str
    path: Path
    fingerprint: list = field(default_factory=list)
    cameras: tuple[str, ...] = ()
    frames: int = 0
    has_truth: bool = False
    shards: list[Shard] = field(default_factory=list)
    error: str = ''


class Layout:
    """Where a run writes, under one output folder."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.bags = self.out / 'bags'  # one labelled bag per input bag (fleet label)
        self.frames = self.out / 'frames'  # per-frame results, one Parquet file per bag
        self.records = self.out / 'records'  # completion records: written last, read on resume
        self.thumbs = self.out / 'thumbs'  # worst-frame thumbnails, per bag
        self.parts = self.out / '.parts'  # work in progress: shard outputs before the merge
        self.summary = self.out / 'summary.json'
        self.report = self.out / 'report.html'
        self.lock = self.out / '.fleet.lock'

    def make(self) -> None:
        """Create the folders."""
        for folder in (self.bags, self.frames, self.records, self.thumbs, self.parts):
            folder.mkdir(parents=True, exist_ok=True)

    def bag(self, name: str) -> Path:
        """The labelled output bag of input ``name``."""
        return self.bags / name

    def partial_bag(self, name: str) -> Path:
        """Where a merged bag is written before it is renamed into place.

        A folder of the final name inside ``bags/.partial``: rosbags names the storage file after
        its folder, so the bag moves into place with the file name ``seg_bag label`` would give it.
        """
        return self.bags / '.partial' / name

    def frames_file(self, name: str) -> Path:
        """The per-frame Parquet file of input ``name``."""
        return self.frames / f'{name}.parquet'

    def record(self, name: str) -> Path:
        """The completion record of input ``name``."""
        return self.records / f'{name}.json'

    def part(self, name: str) -> Path:
        """The work-in-progress folder of input ``name``."""
        return self.parts / name


# --- inputs ---------------------------------------------------------------------------------


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Bag folders from folders, globs and manifest files (one bag or glob per line, # comments).

    A name that matches nothing is kept, so it is reported as a failed bag with its reason
    instead of silently dropped; a glob or manifest that yields no bag at all is an input error.
    """
    found: list[Path] = []
    for item in inputs:
        found += _expand_one(str(item), base=Path.cwd(), depth=0)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    if not unique:
        msg = 'no input bags: give bag folders, globs or a manifest file listing them'
        raise BagError(msg)
    return [path.resolve() for path in unique.values()]


def _expand_one(text: str, *, base: Path, depth: int) -> list[Path]:
    text = text.strip()
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base / path
    if _GLOB_CHARS & set(text):
        matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_dir())
        if not matches:
            msg = f'the pattern {text!r} matches no bag folder'
            raise BagError(msg)
        return matches
    if path.is_file() and path.name != 'metadata.yaml':
        if depth > 0:
            msg = f'manifest entry {text!r} is a file, not a bag folder (manifests do not nest)'
            raise BagError(msg)
        return _read_manifest(path)
    if path.name == 'metadata.yaml':
        return [path.parent]
    return [path]


def _read_manifest(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        msg = f'manifest {str(path)!r} cannot be read ({err})'
        raise BagError(msg) from None
    found: list[Path] = []
    for line in lines:
        entry = line.split('#', 1)[0].strip()
        if entry:
            # Relative entries are relative to the manifest, so a manifest can travel with its bags.
            found += _expand_one(entry, base=path.parent, depth=1)
    if not found:
        msg = f'manifest {str(path)!r} lists no bag'
        raise BagError(msg)
    return found


def output_names(paths: Sequence[Path]) -> list[str]:
    """One output name per bag: its folder name, with a short hash of its path where two names clash."""
    names = [p.name or 'bag' for p in paths]
    clashes = {n for n in names if names.count(n) > 1}
    return [f'{n}-{hashlib.sha1(str(p).encode()).hexdigest()[:8]}' if n in clashes else n
            for n, p in zip(names, paths, strict=True)]


def fingerprint(path: Path) -> list:
    """(file, size, mtime) of every file of a bag folder: a bag that changes is labelled again."""
    if not path.is_dir():
        return []
    return sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in path.iterdir() if f.is_file())


# --- planning -------------------------------------------------------------------------------


def plan_bag(path: Path, name: str, layout: Layout, *, topics_wanted: Sequence[str] = (),
             shard_frames: int = DEFAULT_SHARD_FRAMES, need_truth: bool = False) -> BagPlan:
    """Open ``path`` (metadata only) and split its camera frames into shards; errors go into ``error``."""
    plan = BagPlan(name, path, fingerprint(path))
    try:
        with open_bag(path) as reader:
            cameras = list(topics_wanted) or camera_image_topics(reader)
            if not cameras:
                msg = f'bag {str(path)!r} has no sensor_msgs/Image or CompressedImage topic to label'
                raise BagError(msg)
            conns = [c for topic in cameras for c in connections_for(reader, topic, IMAGE_TYPES)]
            plan.cameras = tuple(cameras)
            plan.frames = sum(c.msgcount for c in conns)
            plan.has_truth = any(topics.output_name(c.topic) == topics.GROUND_TRUTH and c.msgtype == IMAGE
                                 for c in reader.connections)
            start, end = reader.start_time, reader.end_time
    except BagError as err:
        plan.error = str(err)
        return plan
    if need_truth and not plan.has_truth:
        expected = topics.output_topic('<camera>', topics.GROUND_TRUTH)
        plan.error = f'bag {str(path)!r} has no ground-truth topic ({expected}) to evaluate against'
        return plan
    plan.shards = split(plan, start, end, shard_frames, layout.part(name))
    return plan


def split(plan: BagPlan, start: int, end: int, shard_frames: int, part: Path) -> list[Shard]:
    """Equal log-time ranges holding about ``shard_frames`` camera frames each.

    The first shard has no lower and the last no upper bound, so a message outside the
    metadata's time range (a recorder that died before writing it) is still read.
    """
    count = max(1, min(math.ceil(plan.frames / max(1, shard_frames)), max(1, end - start)))
    bounds = [start + (end - start) * i // count for i in range(count + 1)]
    shards = []
    for i in range(count):
        frames = plan.frames // count + (1 if i < plan.frames % count else 0)
        shards.append(Shard(str(plan.path), plan.name, i, count, bounds[i] if i else None,
                            bounds[i + 1] if i < count - 1 else None, frames, str(part / f'{i:05d}')))
    return shards


# --- completion records ---------------------------------------------------------------------


def settings_key(**settings: Any) -> dict[str, Any]:
    """What decides a bag's outputs (models, outputs, storage, ...): a record made with others is stale."""
    return json.loads(json.dumps(settings, sort_keys=True, default=list))


def bag_files(path: Path) -> dict[str, int]:
    """Size of every file of a written bag."""
    return {f.name: f.stat().st_size for f in sorted(path.iterdir()) if f.is_file()} if path.is_dir() else {}


def bag_message_count(path: Path) -> int:
    """The message count in a bag's metadata.yaml (-1 when it cannot be read)."""
    try:
        meta = yaml.safe_load((path / 'metadata.yaml').read_text())
        return int(meta['rosbag2_bagfile_information']['message_count'])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return -1


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON under a temporary name and rename it, so a reader never sees half a file."""
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def load_record(layout: Layout, name: str) -> dict | None:
    """The completion record of ``name``, or None when there is none or it is unreadable."""
    try:
        record = json.loads(layout.record(name).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get('version') == RECORD_VERSION else None


def record_is_current(record: dict | None, layout: Layout, path: Path, settings: dict[str, Any]) -> bool:
    """True when ``record`` matches the input as it is now and every output it lists is intact."""
    if record is None or record.get('input') != str(path) or record.get('settings') != settings:
        return False
    if record.get('fingerprint') != fingerprint(path):
        return False
    outputs = record.get('outputs', {})
    frames = outputs.get('frames')
    if frames and (not (layout.out / frames['file']).is_file()
                   or (layout.out / frames['file']).stat().st_size != frames['size']):
        return False
    bag = outputs.get('bag')
    if bag:
        folder = layout.out / bag['folder']
        if bag_files(folder) != bag['files'] or bag_message_count(folder) != bag['messages']:
            return False
    return all((layout.out / t['file']).is_file() for t in record.get('worst', []))


def remove_outputs(layout: Layout, name: str, *, bags: bool = True) -> None:
    """Delete what an earlier, unfinished or stale run left for ``name`` (only our own files).

    ``bags=False`` (fleet eval, which writes none) leaves a labelled bag of an earlier label run alone.
    """
    layout.record(name).unlink(missing_ok=True)
    folders = [layout.partial_bag(name), layout.thumbs / name, layout.part(name)]
    for folder in [layout.bag(name), *folders] if bags else folders:
        if folder.is_dir():
            shutil.rmtree(folder)
    layout.frames_file(name).unlink(missing_ok=True)


def stale_partials(layout: Layout) -> Iterable[Path]:
    """Bags a crashed run left half-merged under their temporary name."""
    folder = layout.bags / '.partial'
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
