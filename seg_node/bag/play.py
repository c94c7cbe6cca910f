"""``seg_bag play``: publish a bag into the live ROS graph with its recorded timing, and record.

Messages are published as the CDR bytes stored in the bag (rclpy publishes serialized data
as is), so playing costs no (de)serialization. The optional recorder subscribes raw as well
and logs each message at its DDS receive time, so a recorded bag holds the latency of
whatever ran between the player and the recorder.
"""

from __future__ import annotations

import importlib
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import QosDurability
from rosgraph_msgs.msg import Clock
from tqdm import tqdm

from seg_node.bag.bagio import BagError, BagWriter, connections_for, open_bag, prepare_output, read
from seg_node.bag.ground import TF_MESSAGE
from seg_node.bag.ground import TRUTH_TOPIC as GROUND_GRID_TRUTH
from seg_node.msg import topics
from seg_node.ros.harness import wait_for
from seg_node.ros.spinning import BackgroundNode

RECORD_DEPTH = 100  # deep enough that a slow disk write never makes a reliable writer block long


@dataclass(frozen=True)
class PlayOptions:
    """How to play (the ``ros2 bag play`` options we support) and what to record meanwhile."""

    rate: float = 1.0
    loop: bool = False
    start_offset: float = 0.0  # seconds of the bag skipped at the start
    remap: dict[str, str] = field(default_factory=dict)
    topics: tuple[str, ...] = ()  # topics to play; empty: all but the ground truth
    ground_truth: bool = False  # also play .../segmentation/ground_truth
    clock: bool = False  # publish /clock with bag time (for use_sim_time)
    wait_for: tuple[str, ...] = ()  # (remapped) topics that need a subscriber before playing starts
    wait_timeout: float = 30.0
    record: Path | None = None
    record_topics: tuple[str, ...] = ()
    drain: float = 2.0  # seconds to keep recording after the last message is played
    force: bool = False
    storage: str = 'sqlite3'

    def check(self) -> None:
        """Raise BagError naming the first invalid option."""
        if not self.rate > 0:
            msg = f'--rate must be positive, got {self.rate}'
            raise BagError(msg)
        if self.start_offset < 0 or self.drain < 0 or self.wait_timeout < 0:
            msg = '--start-offset, --drain and --wait-timeout must not be negative'
            raise BagError(msg)
        if bool(self.record) != bool(self.record_topics):
            msg = '--record OUT_BAG and --topics T ... go together'
            raise BagError(msg)
        if self.record and self.loop:
            msg = '--record cannot be combined with --loop (the recording would never end)'
            raise BagError(msg)


@dataclass
class PlayResult:
    """What was played and recorded, and how well playback kept to the schedule."""

    published: dict[str, int]
    recorded: dict[str, int]
    behind_ms_p99: float  # how late messages went out against the bag's timing
    wall_s: float


def parse_remap(text: str) -> tuple[str, str]:
    """``FROM:=TO`` -> (FROM, TO)."""
    source, sep, target = text.partition(':=')
    if not sep or not source or not target:
        msg = f'--remap expects FROM:=TO, got {text!r}'
        raise BagError(msg)
    return source, target


def message_class(msgtype: str, topic: str) -> type:
    """The rclpy class of ``pkg/msg/Name``, or BagError when that package is not installed."""
    package, _, name = msgtype.rpartition('/')
    try:
        return getattr(importlib.import_module(package.replace('/', '.')), name)
    except (ImportError, AttributeError, ValueError):
        msg = f'topic {topic} has type {msgtype}, which is not installed in this ROS 2 environment'
        raise BagError(msg) from None


def _latched(connection: Any) -> bool:
    profiles = getattr(connection.ext, 'offered_qos_profiles', None) or []
    return any(p.durability == QosDurability.TRANSIENT_LOCAL for p in profiles)


class _BagThread:
    """A BagWriter owned by one thread: rosbags' sqlite3 storage may only be used where it was opened."""

    def __init__(self, path: Path, *, force: bool, storage: str) -> None:
        prepare_output(path, force=force)  # refuse before anything is played
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._opened = threading.Event()
        self.error: BaseException | None = None
        self.counts: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, args=(path, storage), name='seg_bag_writer',
                                        daemon=True)
        self._thread.start()
        self._opened.wait()
        if self.error:
            raise self.error

    def _run(self, path: Path, storage: str) -> None:
        try:
            bag = BagWriter(path, storage=storage)
        except BagError as err:
            self.error = err
            self._opened.set()
            return
        self._opened.set()
        with bag:
            while (item := self._queue.get()) is not None:
                try:
                    bag.write_raw(*item)
                except BagError as err:  # e.g. a type without a definition: report it at close
                    self.error = self.error or err
                self.counts = dict(bag.counts)

    def put(self, topic: str, msgtype: str, data: bytes, timestamp: int) -> None:
        """Queue one message for writing."""
        self._queue.put((topic, msgtype, data, timestamp))

    def close(self) -> None:
        """Write what is queued, finish the bag, and raise the first write error if any."""
        self._queue.put(None)
        self._thread.join()
        if self.error:
            raise self.error


class _Recorder:
    """Raw subscriptions that queue each message for the bag with its DDS receive time."""

    def __init__(self, graph: BackgroundNode, bag: _BagThread, names: Sequence[str], timeout: float) -> None:
        self.graph, self.bag = graph, bag
        types = self._topic_types(names, timeout)
        self.subscriptions = [
            graph.node.create_subscription(message_class(types[t], t), t,
                                           partial(self._on_message, t, types[t]), self._qos(t), raw=True)
            for t in names]

    def _topic_types(self, names: Sequence[str], timeout: float) -> dict[str, str]:
        def known() -> dict[str, str]:
            return {t: ts[0] for t, ts in self.graph.node.get_topic_names_and_types() if ts}
        wait_for(lambda: all(t in known() for t in names), timeout)
        types = known()
        missing = [t for t in names if t not in types]
        if missing:
            msg = (f'topic {missing[0]} to record did not appear in the ROS graph within {timeout:g} s '
                   '(is its publisher running?)')
            raise BagError(msg)
        return {t: types[t] for t in names}

    def _qos(self, topic: str) -> QoSProfile:
        # Match what the publishers offer, as `ros2 bag record` does: a reliable or latched
        # request would not match a best-effort or volatile publisher at all.
        offered = [i.qos_profile for i in self.graph.node.get_publishers_info_by_topic(topic)]
        reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
        latched = bool(offered) and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _on_message(self, topic: str, msgtype: str, data: bytes, info: dict) -> None:
        self.bag.put(topic, msgtype, data, info.get('received_timestamp') or time.time_ns())

    def matched(self) -> bool:
        """Every recorded topic is connected to at least one publisher."""
        return all(s.get_publisher_count() > 0 for s in self.subscriptions)


def _select(reader: Any, options: PlayOptions) -> list:
    if options.topics:
        return [c for t in options.topics for c in connections_for(reader, t)]
    # Ground truth (masks and grids) only when asked for; /tf_static of a synthetic drive only where
    # tf2_msgs is installed (it has no PyPI wheel), since nothing else needs it to replay a drive.
    truth = {topics.GROUND_TRUTH, GROUND_GRID_TRUTH}
    return [c for c in reader.connections
            if (options.ground_truth or topics.output_name(c.topic) not in truth)
            and (c.msgtype != TF_MESSAGE or _installed(c.msgtype, c.topic))]


def _installed(msgtype: str, topic: str) -> bool:
    try:
        message_class(msgtype, topic)
    except BagError:
        return False
    return True


def play_bag(bag: str | Path, options: PlayOptions, *, node_name: str = 'seg_bag_player') -> PlayResult:
    """Play ``bag`` (and record) until its end, or forever with ``loop``."""
    options.check()
    with open_bag(bag) as reader:
        connections = _select(reader, options)
        for source in options.remap:
            connections_for(reader, source)
        if not connections:
            msg = f'bag {str(bag)!r} has no topic to play'
            raise BagError(msg)
        graph = BackgroundNode(node_name)
        recorder = None
        try:
            publishers = {}
            for conn in connections:
                name = options.remap.get(conn.topic, conn.topic)
                if name not in publishers:
                    profile = QoSProfile(
                        history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=(DurabilityPolicy.TRANSIENT_LOCAL if _latched(conn)
                                    else DurabilityPolicy.VOLATILE))
                    publishers[name] = graph.node.create_publisher(message_class(conn.msgtype, conn.topic),
                                                                   name, profile)
            clock = None
            if options.clock:
                clock = (graph.node.create_publisher(Clock, '/clock', 10), Clock)
            if options.record:
                out = _BagThread(options.record, force=options.force, storage=options.storage)
                recorder = _Recorder(graph, out, options.record_topics, options.wait_timeout)
            _wait_for_peers(publishers, recorder, options)
            result = _play(reader, connections, publishers, clock, options)
            # Reliable data still in flight is lost if the publishers go away at once.
            time.sleep(options.drain if recorder else 0.2)
        finally:
            graph.close()
            if recorder:
                recorder.bag.close()
        if recorder:
            result.recorded = dict(recorder.bag.counts)
        return result


def _wait_for_peers(publishers: dict, recorder: _Recorder | None, options: PlayOptions) -> None:
    for topic in options.wait_for:
        if topic not in publishers:
            played = ', '.join(sorted(publishers))
            msg = f'--wait-for {topic} is not a topic this bag plays (it plays {played})'
            raise BagError(msg)
    # Matched (not merely discovered) subscribers, less our own recorder's.
    own = set(options.record_topics)

    def ready() -> bool:
        return all(publishers[t].get_subscription_count() > (t in own) for t in options.wait_for)
    if not wait_for(ready, options.wait_timeout):
        waiting = [t for t in options.wait_for if publishers[t].get_subscription_count() <= (t in own)]
        msg = f'nobody subscribed to {waiting[0]} within {options.wait_timeout:g} s'
        raise BagError(msg)
    if recorder and not wait_for(recorder.matched, options.wait_timeout):
        msg = f'the recorder did not connect to the publishers of {", ".join(options.record_topics)}'
        raise BagError(msg)


def _play(reader: Any, connections: list, publishers: dict, clock: tuple | None,
          options: PlayOptions) -> PlayResult:
    published = dict.fromkeys(publishers, 0)
    behind: list[float] = []
    total = sum(c.msgcount for c in connections)
    offset_ns = round(options.start_offset * 1e9)
    started = time.monotonic()
    while True:
        first = None
        t0 = time.monotonic()
        with tqdm(total=total, desc='play', unit='msg', disable=None) as progress:
            for conn, stamp, raw in read(reader, connections):
                progress.update()
                if first is None:
                    first = stamp + offset_ns
                if stamp < first:
                    continue
                due = t0 + (stamp - first) / 1e9 / options.rate
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                behind.append(max(0.0, -wait) * 1e3)
                if clock:
                    publisher, clock_type = clock
                    message = clock_type()
                    message.clock.sec, message.clock.nanosec = divmod(stamp, 1_000_000_000)
                    publisher.publish(message)
                name = options.remap.get(conn.topic, conn.topic)
                publishers[name].publish(bytes(raw))
                published[name] += 1
        if not options.loop:
            break
    late = float(np.percentile(behind, 99)) if behind else 0.0
    return PlayResult(published, {}, late, time.monotonic() - started)
