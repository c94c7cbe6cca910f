"""Which Fast DDS profile variable is set, and the start-up warning, as plain functions (no DDS here)."""

from pathlib import Path

import pytest

from seg_node.ros import dds_profile
from seg_node.ros.dds_profile import (
    FASTDDS_2_VARIABLE,
    FASTDDS_3_VARIABLE,
    fastdds_major_version,
    missing_profile_warning,
    share_profile,
)
from seg_node.ros.launch_config import launch_plan

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(('distro', 'major'), [('humble', 2), ('jazzy', 2), ('kilted', 3), ('rolling', 3)])
def test_the_distro_decides_the_fast_dds_version(distro, major):
    assert fastdds_major_version({'ROS_DISTRO': distro}) == major


def test_without_a_distro_the_installed_wheels_decide(monkeypatch):
    versions = {'ros-fastrtps': '2.14.5'}

    def version(name):
        if name not in versions:
            raise dds_profile.importlib.metadata.PackageNotFoundError(name)
        return versions[name]
    monkeypatch.setattr(dds_profile.importlib.metadata, 'version', version)
    assert fastdds_major_version({}) == 2
    versions['ros-fastdds'] = '3.2.3'
    assert fastdds_major_version({}) == 3
    versions.clear()
    assert fastdds_major_version({}) is None


@pytest.mark.parametrize(('distro', 'user', 'expected'), [
    # Jazzy user who followed Kilted's instructions: Fast DDS 2.x gets the file under its own name.
    ('jazzy', {FASTDDS_3_VARIABLE: '/p.xml'}, {FASTDDS_3_VARIABLE: '/p.xml', FASTDDS_2_VARIABLE: '/p.xml'}),
    ('humble', {FASTDDS_2_VARIABLE: '/p.xml'}, {FASTDDS_2_VARIABLE: '/p.xml'}),
    # Kilted: 3.x's name; the deprecated 2.x copy is dropped (its rmw warns about it on every start).
    ('kilted', {FASTDDS_2_VARIABLE: '/p.xml'}, {FASTDDS_3_VARIABLE: '/p.xml'}),
    # Two different files: neither is replaced, the user chose both.
    ('kilted', {FASTDDS_2_VARIABLE: '/a.xml', FASTDDS_3_VARIABLE: '/b.xml'},
     {FASTDDS_2_VARIABLE: '/a.xml', FASTDDS_3_VARIABLE: '/b.xml'}),
    ('jazzy', {}, {}),
])
def test_a_profile_the_user_set_reaches_the_installed_fast_dds(distro, user, expected):
    env = {'ROS_DISTRO': distro} | user
    share_profile(env)
    assert {k: v for k, v in env.items() if k != 'ROS_DISTRO'} == expected


def test_the_shipped_profile_is_only_a_default(monkeypatch):
    env = {'ROS_DISTRO': 'jazzy'}
    assert share_profile(env, '/shipped.xml') == {FASTDDS_2_VARIABLE: '/shipped.xml'}
    env = {'ROS_DISTRO': 'jazzy', FASTDDS_3_VARIABLE: '/mine.xml'}
    share_profile(env, '/shipped.xml')
    assert env[FASTDDS_2_VARIABLE] == '/mine.xml'
    monkeypatch.setattr(dds_profile, 'fastdds_major_version', lambda env: None)
    env = {}  # version unknown: both names
    share_profile(env, '/shipped.xml')
    assert env == {FASTDDS_2_VARIABLE: '/shipped.xml', FASTDDS_3_VARIABLE: '/shipped.xml'}


def test_the_warning_names_this_distros_variable_and_the_installed_profile():
    warning = missing_profile_warning('rmw_fastrtps_cpp', ['/cam_front/image_raw'], {'ROS_DISTRO': 'jazzy'})
    shipped = REPO / 'config' / 'fastdds_localhost.xml'
    assert f'{FASTDDS_2_VARIABLE} is not set' in warning
    assert f'set {FASTDDS_2_VARIABLE}={shipped} ' in warning
    assert FASTDDS_3_VARIABLE not in warning
    assert '/cam_front/image_raw' in warning and '\n' not in warning
    kilted = missing_profile_warning('rmw_fastrtps_cpp', ['/c/image_raw'], {'ROS_DISTRO': 'kilted'})
    assert f'set {FASTDDS_3_VARIABLE}={shipped} ' in kilted and FASTDDS_2_VARIABLE not in kilted


@pytest.mark.parametrize(('rmw', 'topics', 'env'), [
    ('rmw_fastrtps_cpp', ['/c/image_raw'], {FASTDDS_2_VARIABLE: '/p.xml'}),  # a profile is in effect
    ('rmw_fastrtps_cpp', ['/c/image_raw'], {FASTDDS_3_VARIABLE: '/p.xml'}),
    ('rmw_fastrtps_cpp', [], {}),  # no raw best-effort camera (compressed, or reliable input)
    ('rmw_cyclonedds_cpp', ['/c/image_raw'], {}),  # another middleware: its own settings, see the README
    ('rmw_zenoh_cpp', ['/c/image_raw'], {}),
])
def test_no_warning_where_nothing_is_lost(rmw, topics, env):
    assert missing_profile_warning(rmw, topics, env) is None


def test_the_dynamic_fast_dds_rmw_is_warned_about_too():
    assert missing_profile_warning('rmw_fastrtps_dynamic_cpp', ['/c/image_raw'], {'ROS_DISTRO': 'humble'})


def test_the_launch_file_passes_a_profile_set_under_either_name(monkeypatch):
    monkeypatch.setenv('ROS_DISTRO', 'jazzy')
    monkeypatch.delenv(FASTDDS_2_VARIABLE, raising=False)
    monkeypatch.setenv(FASTDDS_3_VARIABLE, '/mine.xml')
    plan = launch_plan({}, REPO)
    assert plan.environment[FASTDDS_2_VARIABLE] == '/mine.xml'
