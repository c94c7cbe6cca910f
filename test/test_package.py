"""The ament_python package: manifest, installed files, launch file and lint."""

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from seg_node.ros.launch_config import LAUNCH_ARGUMENTS
from seg_node.ros.parameters import PARAMETERS

REPO = Path(__file__).resolve().parents[1]


def test_package_xml_is_format_3_ament_python_with_runtime_depends():
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'seg_node'
    assert root.find('export/build_type').text == 'ament_python'
    depends = {e.text for e in root.findall('exec_depend')}
    assert {'rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs'} <= depends


# Third-party modules the node, the bag tools and the launch file import -> how a workspace gets them:
# a rosdep key in package.xml, or (no key fits every distro) a pip requirement in requirements/.
ROSDEP_KEYS = {
    'numpy': 'python3-numpy', 'cv2': 'python3-opencv', 'yaml': 'python3-yaml', 'tqdm': 'python3-tqdm',
    'rclpy': 'rclpy', 'rcl_interfaces': 'rcl_interfaces', 'sensor_msgs': 'sensor_msgs', 'std_msgs': 'std_msgs',
    'diagnostic_msgs': 'diagnostic_msgs', 'rosgraph_msgs': 'rosgraph_msgs', 'lifecycle_msgs': 'lifecycle_msgs',
    'vision_msgs': 'vision_msgs', 'ament_index_python': 'ament_index_python', 'launch': 'launch',
    'launch_ros': 'launch_ros', 'builtin_interfaces': 'builtin_interfaces',
    'nav_msgs': 'nav_msgs', 'tf2_ros': 'tf2_ros',  # the ground grid (tf2_ros optional)
}
PIP_REQUIREMENTS = {'onnxruntime': 'onnxruntime-gpu', 'onnx': 'onnx', 'google': 'onnx', 'rosbags': 'rosbags'}
# Imported only when its feature is asked for (foxglove_port), installed by its setup.py extra.
OPTIONAL_EXTRAS = {'foxglove': 'foxglove'}


def test_every_runtime_import_has_a_rosdep_key_or_a_pip_requirement():
    # training (torch) and fleet (Ray) are extras with their own install step (README), not the node's.
    files = [p for p in (REPO / 'seg_node').rglob('*.py') if not {'training', 'fleet'} & set(p.parts)]
    files += list((REPO / 'launch').glob('*.py'))
    modules = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split('.')[0])
    third_party = modules - set(sys.stdlib_module_names) - {'seg_node', '__future__'} - OPTIONAL_EXTRAS.keys()
    setup = (REPO / 'setup.py').read_text()
    assert all(f"'{extra}': [" in setup for extra in OPTIONAL_EXTRAS.values())
    assert third_party <= ROSDEP_KEYS.keys() | PIP_REQUIREMENTS.keys(), 'map the new import to its dependency'
    depends = {e.text for e in ET.parse(REPO / 'package.xml').getroot().findall('exec_depend')}
    assert {ROSDEP_KEYS[m] for m in third_party if m in ROSDEP_KEYS} <= depends
    for distro in ('humble', 'jazzy', 'kilted'):
        lines = (REPO / 'requirements' / f'ros-{distro}.txt').read_text().splitlines()
        pinned = {line.split('==')[0].split('>=')[0] for line in lines if line and not line.startswith('#')}
        assert {PIP_REQUIREMENTS[m] for m in third_party if m in PIP_REQUIREMENTS} <= pinned, distro
        assert 'rosbags-image' in pinned, distro  # rosbags.image is a separate distribution


def test_setup_installs_the_ament_marker_launch_config_and_rviz():
    text = (REPO / 'setup.py').read_text()
    assert "'share/ament_index/resource_index/packages', ['resource/' + package_name]" in text
    for folder in ('launch', 'config', 'rviz'):
        assert f"'/{folder}'" in text
    assert (REPO / 'resource' / 'seg_node').exists()
    assert 'seg_node = seg_node.ros.node:main' in text
    assert 'seg_node_managed = seg_node.ros.managed:main' in text
    assert 'install_scripts=$base/lib/seg_node' in (REPO / 'setup.cfg').read_text()


def test_launch_file_declares_exactly_the_tested_arguments():
    source = (REPO / 'launch' / 'camera_seg.launch.py').read_text()
    tree = ast.parse(source)
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert 'generate_launch_description' in names
    # All decisions come from the tested plain function.
    assert 'launch_plan(' in source and 'LAUNCH_ARGUMENTS' in source


def test_launch_description_builds_where_launch_ros_is_installed():
    pytest.importorskip('launch_ros', reason='launch_ros is not installable from PyPI here')
    import importlib.util

    path = REPO / 'launch' / 'camera_seg.launch.py'
    spec = importlib.util.spec_from_file_location('camera_seg_launch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = [a.name for a in description.get_launch_arguments()]
    assert declared == [name for name, _, _ in LAUNCH_ARGUMENTS]


def test_params_yaml_sets_only_declared_parameters():
    params = yaml.safe_load((REPO / 'config' / 'camera_seg.yaml').read_text())['/**']['ros__parameters']
    declared = {p.name for p in PARAMETERS}
    assert set(params) <= declared, set(params) - declared
    assert params['image_topics'] == ['/cam_front/image_raw', '/cam_left/image_raw']


def test_fastdds_profile_keeps_udp_on_loopback_and_has_a_large_shm_segment():
    text = (REPO / 'config' / 'fastdds_localhost.xml').read_text()
    namespace = {'f': 'http://www.eprosima.com'}
    root = ET.fromstring(text)
    udp = [d for d in root.iterfind('.//f:transport_descriptor', namespace)
           if d.findtext('f:type', namespaces=namespace) == 'UDPv4']
    assert [a.text for a in udp[0].iterfind('f:interfaceWhiteList/f:address', namespace)] == ['127.0.0.1']
    # Fast DDS 2.6 (Humble) refuses the whole file for the 2.14+ <interfaces> element.
    assert root.find('.//f:interfaces', namespace) is None
    assert int(re.search(r'<segment_size>(\d+)</segment_size>', text).group(1)) >= 32 * 2**20
    assert '<useBuiltinTransports>false</useBuiltinTransports>' in text


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, '-m', 'ruff', 'check', 'seg_node', 'test', 'launch', 'bench'],
                            cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]


def test_readme_documents_every_parameter_and_the_quick_start():
    readme = (REPO / 'README.md').read_text()
    missing = [p.name for p in PARAMETERS if f'`{p.name}`' not in readme]
    assert not missing, f'README lacks parameters {missing}'
    assert 'make demo' in readme and 'make test' in readme
