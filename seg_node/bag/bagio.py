"""Opening and writing rosbag2 bags with one typestore, and turning failures into one sentence."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.errors import ReaderError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore

from seg_node.errors import one_line
from seg_node.msg import topics

# Kilted's standard definitions: bags we write carry them, so `ros2 bag play` accepts them.
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
# rosbag2 metadata version 8 is what Jazzy writes; Jazzy and Kilted both read it.
BAG_VERSION = 8
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
STRING = 'std_msgs/msg/String'
IMAGE_TYPES = (IMAGE, COMPRESSED)
STORAGES = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}


class BagError(Exception):
    """A bag cannot be used as asked; the message is one sentence for the user (exit code 2)."""


def camera_image_topics(reader: AnyReader) -> list[str]:
    """One input topic per camera (raw Image preferred over its ``/compressed`` twin)."""
    found = {c.topic for c in reader.connections if c.msgtype in IMAGE_TYPES and not topics.is_output_topic(c.topic)}
    # Both forms of one camera would give two outputs per frame on the same output topics.
    return sorted(t for t in found
                  if not (topics.is_compressed(t) and t.removesuffix(topics.COMPRESSED_SUFFIX) in found))


def stamp_ns(header: Any) -> int:
    """A header's stamp in integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def frame_key(header: Any) -> tuple[int, str]:
    """What matches an output to its input: (stamp, frame_id)."""
    return stamp_ns(header), header.frame_id


def connections_for(reader: AnyReader, topic: str,
                    msgtypes: tuple[str, ...] | None = None) -> list[Connection]:
    """The connections of ``topic``, or raise naming the topics the bag has."""
    found = [c for c in reader.connections if c.topic == topic]
    if not found:
        have = ', '.join(sorted({c.topic for c in reader.connections})) or 'none'
        msg = f'the bag has no topic {topic} (topics: {have})'
        raise BagError(msg)
    if msgtypes and any(c.msgtype not in msgtypes for c in found):
        msg = f'topic {topic} carries {found[0].msgtype}, not {" or ".join(msgtypes)}'
        raise BagError(msg)
    return found


def read(reader: AnyReader, connections: list[Connection]) -> Iterator[tuple[Connection, int, bytes]]:
    """The messages of ``connections`` in log order; none for an empty list (rosbags would read all)."""
    return reader.messages(connections=connections) if connections else iter(())


@contextmanager
def open_bag(path: str | Path) -> Iterator[AnyReader]:
    """Open a rosbag2 directory for reading; a missing or corrupt bag raises BagError."""
    path = Path(path)
    if not path.exists():
        msg = f'bag {str(path)!r} does not exist'
        raise BagError(msg)
    try:
        reader = AnyReader([path], default_typestore=TYPESTORE)
        reader.open()
    except (AnyReaderError, ReaderError, sqlite3.Error, OSError, ValueError, KeyError) as err:
        msg = f'{str(path)!r} is not a readable rosbag2 ({one_line(err, last=True)})'
        raise BagError(msg) from None
    try:
        yield reader
    except (ReaderError, sqlite3.Error, SerdeError) as err:
        # Damage inside the data shows up only when the messages are read.
        msg = f'bag {str(path)!r} is corrupt ({one_line(err, last=True)})'
        raise BagError(msg) from None
    finally:
        reader.close()


def prepare_output(path: str | Path, *, force: bool) -> Path:
    """Make room for a new bag at ``path``: refuse without ``force``, never delete a non-bag."""
    path = Path(path)
    if not path.exists():
        return path
    if not force:
        msg = f'{str(path)!r} already exists; pass --force to overwrite it'
        raise BagError(msg)
    if path.is_dir() and _looks_like_bag(path):
        shutil.rmtree(path)
        return path
    msg = f'{str(path)!r} exists and is not a rosbag2 directory, so --force will not delete it'
    raise BagError(msg)


def _looks_like_bag(path: Path) -> bool:
    # Only a directory holding nothing but bag files is ours to delete.
    allowed = {'.db3', '.mcap', '.yaml', '.db3-shm', '.db3-wal', '.zstd'}
    return all(p.is_file() and (p.suffix in allowed or p.name == 'metadata.yaml') for p in path.iterdir())


def prepare_file(path: str | Path, *, force: bool) -> Path:
    """Make room for an output file (video, image): refuse to overwrite without ``force``."""
    path = Path(path)
    if path.exists() and not force:
        msg = f'{str(path)!r} already exists; pass --force to overwrite it'
        raise BagError(msg)
    if path.is_dir():
        msg = f'{str(path)!r} is a directory, not a file name'
        raise BagError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class BagWriter:
    """A rosbag2 writer with one connection per topic, serializing with ``TYPESTORE``."""

    def __init__(self, path: str | Path, *, force: bool = False, storage: str = 'sqlite3') -> None:
        if storage not in STORAGES:
            msg = f'unknown storage {storage!r}; choose {" or ".join(STORAGES)}'
            raise BagError(msg)
        self.path = prepare_output(path, force=force)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        if storage == 'mcap':
            # zstd-compressed chunks (with chunk indexes, which rosbags always writes): what
            # `ros2 bag record -s mcap` calls storage compression, and what Foxglove opens fastest.
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._connections: dict[str, Connection] = {}
        self.counts: dict[str, int] = {}
        try:
            self._writer.open()
        except WriterError as err:
            raise BagError(str(err)) from None

    def connection(self, topic: str, msgtype: str, typestore: Any = TYPESTORE) -> Connection:
        """The topic's connection, added on first use with ``typestore``'s definition of ``msgtype``."""
        conn = self._connections.get(topic)
        if conn is None:
            if msgtype not in typestore.types:
                msg = f'message type {msgtype} of topic {topic} has no definition to write into a bag'
                raise BagError(msg)
            conn = self._writer.add_connection(topic, msgtype, typestore=typestore)
            self._connections[topic] = conn
            self.counts[topic] = 0
        elif conn.msgtype != msgtype:
            msg = f'topic {topic} is written as {conn.msgtype} and {msgtype}; one type per topic'
            raise BagError(msg)
        return conn

    def write(self, topic: str, msg: Any, timestamp: int) -> None:
        """Serialize a typestore message onto ``topic`` at log time ``timestamp`` (ns)."""
        msgtype = msg.__msgtype__
        self.write_raw(topic, msgtype, TYPESTORE.serialize_cdr(msg, msgtype), timestamp)

    def write_raw(self, topic: str, msgtype: str, data: bytes | memoryview, timestamp: int, *,
                  typestore: Any = TYPESTORE) -> None:
        """Write CDR bytes as they are (from another bag, whose reader's typestore knows the type, or DDS)."""
        self._writer.write(self.connection(topic, msgtype, typestore), timestamp, data)
        self.counts[topic] += 1

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml)."""
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
