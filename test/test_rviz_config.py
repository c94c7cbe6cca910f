"""rviz/camera_seg.rviz parses (it is YAML) and shows what the node publishes for the default cameras."""

from pathlib import Path

import pytest
import yaml

from seg_node.msg import topics

REPO = Path(__file__).resolve().parents[1]
RVIZ = REPO / 'rviz' / 'camera_seg.rviz'
SHOWN = ('overlay', 'color_mask')  # the mask itself is class ids: black to the eye


@pytest.fixture(scope='module')
def config():
    return yaml.safe_load(RVIZ.read_text())


def displays(config):
    """The image displays (the ground grid's Map displays are checked on their own)."""
    return [d for d in config['Visualization Manager']['Displays'] if d['Class'] != 'rviz_default_plugins/Map']


def map_displays(config):
    return [d for d in config['Visualization Manager']['Displays'] if d['Class'] == 'rviz_default_plugins/Map']


def test_it_has_the_sections_rviz2_reads(config):
    assert {'Panels', 'Visualization Manager', 'Window Geometry'} <= set(config)
    assert config['Visualization Manager']['Global Options']['Frame Rate'] > 0


def test_it_shows_each_default_camera_with_its_overlay_and_color_mask(config, default_cameras):
    shown = [d['Topic']['Value'] for d in displays(config)]
    expected = [topic for camera in default_cameras
                for topic in (camera, *(topics.segmentation_topic(camera, name) for name in SHOWN))]
    assert sorted(shown) == sorted(expected)
    assert len(shown) == len(set(shown)), 'a topic is shown twice'


def test_every_topic_is_a_default_camera_or_a_node_output(config, default_cameras):
    published = {topics.segmentation_topic(c, name) for c in default_cameras for name in topics.OUTPUTS}
    for display in displays(config):
        assert display['Topic']['Value'] in set(default_cameras) | published


def test_image_displays_match_any_publisher_qos(config):
    for display in displays(config):
        assert display['Class'] == 'rviz_default_plugins/Image'
        assert display['Enabled'] is True
        # Best effort matches sensor-data cameras and the node's reliable outputs alike.
        assert display['Topic']['Reliability Policy'] == 'Best Effort'
        assert display['Topic']['Durability Policy'] == 'Volatile'


def test_display_names_are_unique_and_have_a_dock_entry(config):
    names = [d['Name'] for d in displays(config)]
    assert len(names) == len(set(names))
    assert set(names) <= set(config['Window Geometry'])


def test_setup_installs_the_rviz_config():
    assert "glob('rviz/*.rviz')" in (REPO / 'setup.py').read_text()


def test_ground_grids_are_shown_in_the_fixed_frame_and_match_the_nodes_qos(config, default_cameras):
    shown = {d['Topic']['Value'] for d in map_displays(config)}
    expected = {'/seg_node/ground_grid', *(topics.segmentation_topic(c, 'ground_grid') for c in default_cameras)}
    assert shown == expected
    assert config['Visualization Manager']['Global Options']['Fixed Frame'] == 'base_footprint'
    for display in map_displays(config):
        # The node publishes volatile: a transient-local Map subscription would never match it.
        assert display['Topic']['Durability Policy'] == 'Volatile'
