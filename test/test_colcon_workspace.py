"""The package as ROS users get it: colcon builds it in a workspace, and the installed node runs.

The workspace holds a copy of the package's tracked files; the build uses this environment's
Python (with colcon from the test extra), plain and with --symlink-install. The installed node
then runs from the install space, in a directory that is not the checkout, with the shipped
parameters file: its model_path (demo.onnx) is found in the user's model directory, where the
documented build step puts the demo model (here a known-answer model stands in for it).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from seg_node.model.known_answer import palette_classifier, palette_scene
from seg_node.ros.harness import ChildProcess, wait_for
from seg_node.ros.spinning import BackgroundNode

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CAMERAS = ('/cam_front/image_raw', '/cam_left/image_raw')  # config/camera_seg.yaml
# Variables a sourced ROS environment sets; the build must not see the caller's.
ROS_ENVIRONMENT = ('AMENT_PREFIX_PATH', 'COLCON_PREFIX_PATH', 'CMAKE_PREFIX_PATH', 'PYTHONPATH')


def tracked_files() -> list[str]:
    """The package's files as a clone has them (what `git clone` into src/ would give)."""
    done = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True, check=False)
    if done.returncode == 0 and done.stdout:
        return [f for f in done.stdout.decode().split('\0') if f]
    ignored = {'.git', '.venv', '.matrix', 'out', 'build', 'install', 'log', '__pycache__'}
    return [str(p.relative_to(REPO)) for p in REPO.rglob('*')
            if p.is_file() and not ignored & set(p.relative_to(REPO).parts)]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ROS_ENVIRONMENT}
    env['PATH'] = f'{BIN}:/usr/bin:/bin'
    return env | extra


def build(root: Path, *, symlink: bool) -> Path:
    source = root / 'src' / 'seg_node'
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    args = [str(BIN / 'colcon'), 'build', '--packages-select', 'seg_node'] + (['--symlink-install'] if symlink else [])
    done = subprocess.run(args, cwd=root, env=clean_env(), capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / 'install'


@pytest.fixture(scope='module', params=['plain', 'symlink'])
def install(request, tmp_path_factory):
    return build(tmp_path_factory.mktemp(f'ws_{request.param}'), symlink=request.param == 'symlink')


def sourced(install: Path, command: str, *, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    script = f'source {install}/local_setup.bash && {command}'
    return subprocess.run(['bash', '-c', script], cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_install_tree_has_what_ros_tools_look_for(install):
    package = install / 'seg_node'
    assert (package / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'seg_node').exists()
    share = package / 'share' / 'seg_node'
    assert (share / 'package.xml').is_file()
    assert (share / 'launch' / 'camera_seg.launch.py').is_file()
    assert (share / 'config' / 'camera_seg.yaml').is_file()
    assert (share / 'config' / 'fastdds_localhost.xml').is_file()
    assert (share / 'rviz' / 'camera_seg.rviz').is_file()
    for script in ('seg_node', 'seg_node_managed', 'seg_bag', 'seg_build_engine', 'seg_train', 'seg_export',
                   'seg_eval'):
        assert os.access(package / 'lib' / 'seg_node' / script, os.X_OK), script  # what `ros2 run` runs
    assert (install / 'local_setup.bash').is_file()


def test_sourcing_the_workspace_imports_the_installed_package(install, tmp_path):
    probe = ('python -c "import seg_node; from ament_index_python.packages import get_package_share_directory; '
             "print(seg_node.__file__); print(get_package_share_directory('seg_node'))\"")
    done = sourced(install, probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    module, share = done.stdout.split()
    workspace = install.parent
    assert Path(module).resolve().is_relative_to(workspace) or Path(module).is_relative_to(workspace), module
    assert Path(share) == install / 'seg_node' / 'share' / 'seg_node'


def start_installed_node(install: Path, cwd: Path, data_home: Path) -> ChildProcess:
    share = install / 'seg_node' / 'share' / 'seg_node'
    command = (f'source {install}/local_setup.bash && exec {install}/seg_node/lib/seg_node/seg_node '
               f'--ros-args --params-file {share}/config/camera_seg.yaml')
    return ChildProcess(['bash', '-c', command], cwd=cwd,
                        env=clean_env(XDG_DATA_HOME=str(data_home), HOME=str(cwd)) | dds_environment())


def dds_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k.startswith(('ROS_', 'FASTDDS_', 'RMW_', 'SEG_NODE_IN_NETNS'))}


def test_without_a_model_the_installed_node_says_where_it_looked(install, tmp_path):
    node = start_installed_node(install, tmp_path, tmp_path / 'data')
    assert node.proc.wait(60) == 1
    node.stop()
    assert "model file 'demo.onnx' was not found (looked in" in node.output
    assert f'{tmp_path}/data/seg_node/models/demo.onnx' in node.output
    assert 'python3 -m seg_node.training.demo_model' in node.output
    assert 'Traceback' not in node.output


@pytest.mark.dds
def test_the_installed_node_segments_two_cameras_with_the_shipped_defaults(install, tmp_path):
    models = tmp_path / 'data' / 'seg_node' / 'models'
    models.mkdir(parents=True)
    onnx.save(palette_classifier(), models / 'demo.onnx')  # stands in for the demo model
    node = start_installed_node(install, tmp_path, tmp_path / 'data')
    peer = BackgroundNode('workspace_peer')
    try:
        node.wait_for_line('segmenting', 60)
        assert f'model {models / "demo.onnx"}' in node.output
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        masks: dict[str, list] = {camera: [] for camera in CAMERAS}
        for camera in CAMERAS:
            namespace = camera.rsplit('/', 1)[0]
            peer.node.create_subscription(Image, f'{namespace}/segmentation/mask', masks[camera].append, qos)
        publishers = {c: peer.node.create_publisher(Image, c, qos) for c in CAMERAS}
        assert wait_for(lambda: all(p.get_subscription_count() for p in publishers.values()), 30)
        frames = {c: palette_scene(seed, 48, 64) for seed, c in enumerate(CAMERAS)}

        def answered() -> bool:
            for camera, (rgb, _) in frames.items():
                publishers[camera].publish(Image(height=48, width=64, encoding='rgb8', step=64 * 3,
                                                 data=rgb.tobytes()))
            return all(masks.values())
        assert wait_for(answered, 30, period=0.3), node.output
    finally:
        peer.close()
        code = node.stop()
    assert code == 0, node.output
    for camera, (_, label) in frames.items():
        mask = masks[camera][0]
        np.testing.assert_array_equal(np.frombuffer(bytes(mask.data), np.uint8).reshape(48, 64), label)
