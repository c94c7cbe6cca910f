"""foxglove/camera_seg.json is a Foxglove layout whose panels show what the live view offers and a recording holds."""

import json
from pathlib import Path

import pytest

from seg_node.msg import topics

REPO = Path(__file__).resolve().parents[1]
LAYOUT = REPO / 'foxglove' / 'camera_seg.json'
SHOWN = ('overlay', 'color_mask')


@pytest.fixture(scope='module')
def layout():
    return json.loads(LAYOUT.read_text())


def panel_ids(tree):
    """Every panel id of a mosaic layout tree (a panel id, or a split with first and second)."""
    if isinstance(tree, str):
        return [tree]
    assert tree['direction'] in ('row', 'column') and 0 < tree['splitPercentage'] < 100
    return panel_ids(tree['first']) + panel_ids(tree['second'])


def shown_topics(layout):
    found = {}
    for pid, config in layout['configById'].items():
        kind = pid.split('!')[0]
        found[pid] = config['imageMode']['imageTopic'] if kind == 'Image' else config['topicPath']
    return found


def test_every_panel_is_placed_once_and_configured(layout):
    placed = panel_ids(layout['layout'])
    assert sorted(placed) == sorted(layout['configById']) and len(placed) == len(set(placed))
    assert {pid.split('!')[0] for pid in placed} == {'Image', 'RawMessages'}


def test_each_default_camera_has_its_picture_overlay_colour_mask_and_legend(layout, default_cameras):
    shown = set(shown_topics(layout).values())
    for camera in default_cameras:
        assert camera in shown
        for name in (*SHOWN, topics.LABELS):
            assert topics.segmentation_topic(camera, name) in shown
    assert '/diagnostics' in shown


def test_every_topic_is_offered_live_and_recorded_by_the_demo(layout, default_cameras):
    live = pytest.importorskip('seg_node.viewer.live')
    pytest.importorskip('foxglove')
    view = live.LiveView('127.0.0.1', 0, default_cameras)
    try:
        offered = view.topics()
    finally:
        view.close()
    # What the demo records (demo/run.py) for these cameras.
    recorded = {*default_cameras, '/diagnostics',
                *(topics.segmentation_topic(c, n) for c in default_cameras for n in (*topics.OUTPUTS, topics.LABELS))}
    for pid, topic in shown_topics(layout).items():
        assert topic in offered, f'{pid}: the live view offers no {topic}'
        assert topic in recorded, f'{pid}: a recording has no {topic}'


def test_the_layout_is_installed_with_the_package():
    setup = (REPO / 'setup.py').read_text()
    assert "('share/' + package_name + '/foxglove', glob('foxglove/*.json'))" in setup
