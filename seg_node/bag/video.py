"""``seg_bag video``: a bag's segmentation as an MP4 (OpenCV's mp4v encoder) and a contact sheet PNG.

Layouts: ``overlay`` puts every camera's overlay side by side; ``side-by-side`` gives each
camera a row camera | overlay | color mask (| ground grid, where the bag has every camera's),
with a class legend on the right. Composite frame
k shows each camera's k-th overlay, so cameras with per-camera stamp offsets line up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from seg_node.bag.bagio import BagError, camera_image_topics, frame_key, open_bag, prepare_file, read
from seg_node.bag.evaluate import class_table, mask_of
from seg_node.bag.ground import GRID_TOPIC, OCCUPANCY_GRID, grid_cells
from seg_node.ground.grid import grid_picture
from seg_node.model.classes import ClassTable
from seg_node.msg import topics
from seg_node.msg.image import ImageConversionError, message_to_rgb

LAYOUTS = ('overlay', 'side-by-side')
FOURCC = 'mp4v'  # the MPEG-4 encoder every opencv-python wheel ships; H.264 needs a system ffmpeg
SWATCH = 16
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class VideoOptions:
    """What to draw and how."""

    layout: str = 'overlay'
    cameras: tuple[str, ...] = ()  # camera namespaces (/cam_front); empty: every camera with overlays
    fps: float = 0.0  # 0: from the overlay stamps
    sheet: Path | None = None  # contact sheet PNG; None: next to the video as <name>_sheet.png
    sheet_frames: int = 6
    sheet_title: tuple[str, ...] = ()  # lines drawn above the contact sheet (what the run measured)
    force: bool = False


@dataclass
class VideoResult:
    """Files written and what went into them."""

    video: Path
    sheet: Path
    frames: int
    fps: float
    size: tuple[int, int]  # width, height
    classes_shown: tuple[str, ...]


def _parts(layout: str, grid: bool = False) -> tuple[str, ...]:
    """The tiles of one camera; side by side, with its ground grid last where every camera has one."""
    if layout == 'overlay':
        return ('overlay',)
    return ('image', 'overlay', 'color_mask', *((GRID_TOPIC,) if grid else ()))


def _has_grids(reader: Any, cameras: list[str], layout: str) -> bool:
    names = {c.topic for c in reader.connections if c.msgtype == OCCUPANCY_GRID}
    return layout == 'side-by-side' and all(topics.output_topic(ns, GRID_TOPIC) in names for ns in cameras)


def _plan(reader: Any, options: VideoOptions) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The cameras to draw and, per camera, the topic of each part."""
    overlays = sorted({topics.namespace_of(c.topic) for c in reader.connections
                       if topics.output_name(c.topic) == 'overlay'})
    cameras = list(options.cameras) or overlays
    if not cameras:
        msg = f"the bag has no overlay topic ({topics.output_topic('<camera>', 'overlay')}); record or label one first"
        raise BagError(msg)
    inputs = {topics.namespace_of(t): t for t in camera_image_topics(reader)}
    plan = {}
    for ns in cameras:
        if ns not in overlays:
            msg = f'the bag has no overlay topic for camera {ns} (it has {", ".join(overlays)})'
            raise BagError(msg)
        parts = {name: topics.output_topic(ns, name) for name in ('overlay', 'color_mask', 'mask', GRID_TOPIC)}
        if ns in inputs:
            parts['image'] = inputs[ns]
        for part in _parts(options.layout):
            if part not in parts or not any(c.topic == parts[part] for c in reader.connections):
                msg = (f'layout {options.layout} needs the {part.replace("_", " ")} of {ns}, which the bag '
                       'does not have; use --layout overlay')
                raise BagError(msg)
        plan[ns] = parts
    return cameras, plan


def _timeline(reader: Any, cameras: list[str], plan: dict,
              shown: tuple[str, ...]) -> tuple[dict, list[int], set[int], float]:
    """Composite slot of every (camera, frame), the parts expected per slot, class ids seen, frame rate.

    A camera's frame goes to slot round((stamp - camera's first stamp) / period), so a frame
    the node dropped leaves its overlay black instead of shifting the camera's later frames.
    """
    part_of = {plan[ns][part]: (ns, part) for ns in cameras for part in shown}
    mask_topics = {plan[ns]['mask'] for ns in cameras}
    parts: dict[tuple[str, tuple[int, str]], set[str]] = {}
    present = np.zeros(256, bool)
    conns = [c for c in reader.connections if c.topic in part_of or c.topic in mask_topics]
    for conn, _, raw in read(reader, conns):
        msg = reader.deserialize(raw, conn.msgtype)
        if conn.topic in mask_topics:
            present[np.bincount(mask_of(conn.topic, msg).ravel(), minlength=256) > 0] = True
        if conn.topic in part_of:
            ns, part = part_of[conn.topic]
            parts.setdefault((ns, frame_key(msg.header)), set()).add(part)
    first = {}
    for ns, (stamp, _) in parts:
        first[ns] = min(first.get(ns, stamp), stamp)
    stamps = sorted({key[0] for ns, key in parts if ns == cameras[0]})
    gaps = np.diff(stamps)
    period = float(np.median(gaps)) if gaps.size and np.median(gaps) > 0 else 1e9 / 30
    slots = {(ns, key): round((key[0] - first[ns]) / period) for ns, key in parts}
    expected = [0] * (max(slots.values()) + 1 if slots else 0)
    for item, k in slots.items():
        expected[k] += len(parts[item])
    return slots, expected, set(np.flatnonzero(present).tolist()), 1e9 / period


def legend(table: ClassTable, ids: Sequence[int], height: int) -> np.ndarray:
    """A white panel listing colour swatches and names of ``ids``, ``height`` pixels tall."""
    ids = [i for i in ids if i < len(table.names)]
    per_column = max(1, (height - 8) // (SWATCH + 6))
    columns = max(1, -(-len(ids) // per_column))
    width = max((cv2.getTextSize(table.names[i], FONT, 0.45, 1)[0][0] for i in ids), default=40) + SWATCH + 20
    panel = np.full((height, width * columns, 3), 255, np.uint8)
    for n, i in enumerate(ids):
        x = (n // per_column) * width + 6
        y = 6 + (n % per_column) * (SWATCH + 6)
        cv2.rectangle(panel, (x, y), (x + SWATCH, y + SWATCH), tuple(int(v) for v in table.palette[i]), -1)
        cv2.rectangle(panel, (x, y), (x + SWATCH, y + SWATCH), (0, 0, 0), 1)
        cv2.putText(panel, table.names[i], (x + SWATCH + 6, y + SWATCH - 3), FONT, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return panel


def _caption(tile: np.ndarray, text: str, *, bottom: bool = False) -> np.ndarray:
    """Write ``text`` in the tile's top (or bottom) left corner, white on a dark box."""
    (w, h), base = cv2.getTextSize(text, FONT, 0.5, 1)
    x, y = 4, (tile.shape[0] - 6 - base if bottom else 6 + h)
    cv2.rectangle(tile, (x - 3, y - h - 3), (x + w + 3, y + base + 2), (0, 0, 0), -1)
    cv2.putText(tile, text, (x, y), FONT, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


class _Composer:
    """Builds composite frames from decoded parts; missing parts are drawn black."""

    def __init__(self, cameras: list[str], layout: str, size: tuple[int, int],
                 panel: np.ndarray | None, grid: bool = False) -> None:
        self.cameras, self.layout, self.size, self.panel = cameras, layout, size, panel
        self.parts = _parts(layout, grid)

    def compose(self, parts: list[dict[str, np.ndarray]]) -> np.ndarray:
        """One composite (RGB) from each camera's decoded parts."""
        width, height = self.size
        rows = []
        for ns, found in zip(self.cameras, parts, strict=True):
            tiles = []
            for part in self.parts:
                tile = found.get(part)
                if tile is None:
                    tile = np.zeros((height, width, 3), np.uint8)
                else:
                    tile = cv2.resize(tile, (width, height), interpolation=cv2.INTER_NEAREST)
                tiles.append(_caption(tile, f'{ns} {part.replace("_", " ")}'))
            rows.append(np.hstack(tiles))
        frame = np.hstack(rows) if self.layout == 'overlay' else np.vstack(rows)
        if self.panel is not None:
            panel = np.full((frame.shape[0], self.panel.shape[1], 3), 255, np.uint8)
            h = min(frame.shape[0], self.panel.shape[0])
            panel[:h] = self.panel[:h]
            frame = np.hstack([frame, panel])
        # MPEG-4 encoders want even dimensions.
        return np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), constant_values=255)


def write_video(bag: str | Path, out: str | Path, options: VideoOptions) -> VideoResult:
    """Render ``bag`` to ``out`` (MP4) and a contact sheet; return what was written."""
    if options.layout not in LAYOUTS:
        msg = f'--layout must be one of {", ".join(LAYOUTS)}, got {options.layout!r}'
        raise BagError(msg)
    out = Path(out)
    if out.suffix.lower() != '.mp4':
        msg = f'the video file must end in .mp4, got {out.name!r}'
        raise BagError(msg)
    sheet = options.sheet or out.with_name(out.stem + '_sheet.png')
    prepare_file(out, force=options.force)
    prepare_file(sheet, force=options.force)
    with open_bag(bag) as reader:
        cameras, plan = _plan(reader, options)
        grid = _has_grids(reader, cameras, options.layout)
        slots, expected, present, fps = _timeline(reader, cameras, plan, _parts(options.layout, grid))
        frames = len(expected)
        fps = options.fps or fps
        table = class_table(reader)
        if frames == 0:
            msg = 'the overlay topics hold no frames'
            raise BagError(msg)
        size = _tile_size(reader, plan[cameras[0]]['overlay'])
        shown = sorted(present) if present else list(range(len(table.names)))
        tile_rows = 1 if options.layout == 'overlay' else len(cameras)
        panel = legend(table, shown, size[1] * tile_rows) if options.layout == 'side-by-side' else None
        composer = _Composer(cameras, options.layout, size, panel, grid)
        picks = np.linspace(0, frames - 1, min(options.sheet_frames, frames)).round().astype(int)
        composites = _stream(reader, cameras, plan, slots=slots, expected=expected, composer=composer,
                             out=out, fps=fps, sheet_picks=set(picks.tolist()))
    # The side-by-side composites carry their own legend; overlay-only sheets get one below.
    below = None if panel is not None else legend(table, shown, 10 + (SWATCH + 6) * 4)
    _write_sheet(sheet, composites, below, options.sheet_title)
    first = next(iter(composites.values()))
    return VideoResult(out, sheet, frames, fps, (first.shape[1], first.shape[0]),
                       tuple(table.names[i] for i in shown if i < len(table.names)))


def _tile_size(reader: Any, overlay_topic: str) -> tuple[int, int]:
    conns = [c for c in reader.connections if c.topic == overlay_topic]
    for conn, _, raw in read(reader, conns):
        msg = reader.deserialize(raw, conn.msgtype)
        scale = min(1.0, 480 / msg.width)  # keep composites of many cameras a sane size
        return max(2, round(msg.width * scale) // 2 * 2), max(2, round(msg.height * scale) // 2 * 2)
    msg = f'{overlay_topic} holds no frames'
    raise BagError(msg)


def _stream(reader: Any, cameras: list[str], plan: dict, *, slots: dict, expected: list[int],
            composer: _Composer, out: Path, fps: float, sheet_picks: set[int]) -> dict[int, np.ndarray]:
    """Decode parts in log order and emit composite k once every part of it has arrived."""
    topic_part = {plan[ns][part]: (ns, part) for ns in cameras for part in composer.parts}
    frames = len(expected)
    pending: dict[int, dict[tuple[str, str], np.ndarray]] = {}
    writer = None
    emitted, sheet = 0, {}
    conns = [c for c in reader.connections if c.topic in topic_part]
    progress = tqdm(total=frames, desc='video', unit='frame', disable=None)

    def emit_ready(final: bool) -> None:
        nonlocal emitted, writer
        while emitted < frames and (final or len(pending.get(emitted, {})) >= expected[emitted]):
            got = pending.pop(emitted, {})
            frame = composer.compose([{p: a for (n, p), a in got.items() if n == ns} for ns in cameras])
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*FOURCC), fps,
                                         (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    msg = f'OpenCV cannot write {FOURCC} video to {str(out)!r}'
                    raise BagError(msg)
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            if emitted in sheet_picks:
                sheet[emitted] = frame
            emitted += 1
            progress.update()

    try:
        for conn, _, raw in read(reader, conns):
            ns, part = topic_part[conn.topic]
            msg = reader.deserialize(raw, conn.msgtype)
            k = slots.get((ns, frame_key(msg.header)))
            if k is None or k < emitted:
                continue  # arrived after its composite was drawn (recorded out of order)
            if part == GRID_TOPIC:
                pending.setdefault(k, {})[ns, part] = grid_tile(grid_cells(msg), composer.size)
                emit_ready(final=False)
                continue
            try:
                pending.setdefault(k, {})[ns, part] = message_to_rgb(msg).copy()
            except ImageConversionError as err:
                text = f'{conn.topic}: {err}'
                raise BagError(text) from None
            emit_ready(final=False)
        emit_ready(final=True)
    finally:
        progress.close()
        if writer is not None:
            writer.release()
    return sheet


def grid_tile(cells: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ground grid seen from above (forward up), centred on a white tile of ``size`` (width, height)."""
    width, height = size
    picture = grid_picture(cells, cell_px=1)
    scale = min(width / picture.shape[1], height / picture.shape[0])
    w, h = max(1, int(picture.shape[1] * scale)), max(1, int(picture.shape[0] * scale))
    tile = np.full((height, width, 3), 255, np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    tile[y:y + h, x:x + w] = cv2.resize(picture, (w, h), interpolation=cv2.INTER_NEAREST)
    return tile


def _title_band(lines: Sequence[str], width: int) -> np.ndarray:
    """White band with one line of dark text per entry, the first in bold."""
    band = np.full((12 + 26 * len(lines), width, 3), 255, np.uint8)
    for row, text in enumerate(lines):
        cv2.putText(band, text, (10, 28 + 26 * row), FONT, 0.62 if row == 0 else 0.52, (20, 20, 20),
                    2 if row == 0 else 1, cv2.LINE_AA)
    return band


def _write_sheet(path: Path, frames: dict[int, np.ndarray], panel: np.ndarray | None,
                 title: Sequence[str] = ()) -> None:
    """Tile the picked composites two per row (scaled to 1600 px wide at most), title above, legend below."""
    picks = [frames[k] for k in sorted(frames)]
    columns = 2 if len(picks) > 1 else 1
    h, w = picks[0].shape[:2]
    scale = min(1.0, 1600 / (w * columns))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    tiles = [cv2.resize(p, (tw, th), interpolation=cv2.INTER_AREA) for p in picks]
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    for k, tile in zip(sorted(frames), tiles, strict=False):
        _caption(tile, f'frame {k}', bottom=True)
    grid = np.vstack([np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)])
    if panel is not None:
        strip = np.full((panel.shape[0], grid.shape[1], 3), 255, np.uint8)
        strip[:, :min(panel.shape[1], grid.shape[1])] = panel[:, :grid.shape[1]]
        grid = np.vstack([grid, strip])
    if title:
        grid = np.vstack([_title_band(title, grid.shape[1]), grid])
    if not cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        msg = f'OpenCV could not write {str(path)!r}'
        raise BagError(msg)
