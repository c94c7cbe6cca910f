"""The package as ROS users get it: colcon builds it in a workspace, and the installed node runs.

The workspace holds a copy of the package's tracked files. Two builds, as the README says:
- ``venv``: the README's steps for a PEP 668 system (Ubuntu 24.04's Python refuses ``pip install``):
  a virtual environment over the system Python (``/usr/bin/python3``, externally managed here too)
  with ``--system-site-packages``, marked ``COLCON_IGNORE``, the requirements installed with its pip,
  and ``python3 -m colcon build`` run from it, so the installed entry points use its interpreter.
  This environment's site-packages and ROS libraries stand in for ``source /opt/ros/<distro>/setup.bash``
  (PYTHONPATH and LD_LIBRARY_PATH, as that script sets them).
- ``symlink``: ``colcon build --symlink-install`` with this environment's Python and colcon.
The installed node then runs from the install space, in a directory that is not the checkout, with
the shipped parameters file: its model_path (demo.onnx) is found in the user's model directory, where
the documented build step puts the demo model (here a known-answer model stands in for it).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
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
SYSTEM_PYTHON = Path('/usr/bin/python3')
# The workspace requirements of the distro whose rclpy this environment has (the PyPI Kilted wheels).
REQUIREMENTS = 'requirements/ros-kilted.txt'


@dataclass(frozen=True)
class Workspace:
    """A built workspace and the environment its users run it in."""

    install: Path
    env: dict[str, str]


def tracked_files() -> list[str]:
    """The package's files as a clone has them (what `git clone` into src/ would give)."""
    done = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True, check=False)
    if done.returncode == 0 and done.stdout:
        return [f for f in done.stdout.decode().split('\0') if f]
    ignored = {'.git', '.venv', '.matrix', 'out', 'build', 'install', 'log', '__pycache__'}
    return [str(p.relative_to(REPO)) for p in REPO.rglob('*')
            if p.is_file() and not ignored & set(p.relative_to(REPO).parts)]


def clean_env(path: str = f'{BIN}:/usr/bin:/bin', **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ROS_ENVIRONMENT}
    env['PATH'] = path
    return env | extra


def ros_underlay() -> dict[str, str]:
    """What ``source /opt/ros/<distro>/setup.bash`` gives a Python: here, this environment's ROS wheels."""
    site_packages = Path(sysconfig.get_paths()['purelib'])
    libraries = [*sorted(str(p) for p in site_packages.glob('ros_*.libs')), str(Path(sys.prefix) / 'lib')]
    return {'PYTHONPATH': str(site_packages), 'LD_LIBRARY_PATH': os.pathsep.join(libraries)}


def copy_package(root: Path) -> None:
    source = root / 'src' / 'seg_node'
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)


def run(args: list[str] | str, root: Path, env: dict[str, str], timeout: float = 240) -> str:
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False,
                          shell=isinstance(args, str), executable='/bin/bash' if isinstance(args, str) else None)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def build_symlinked(root: Path) -> Workspace:
    copy_package(root)
    run([str(BIN / 'colcon'), 'build', '--packages-select', 'seg_node', '--symlink-install'], root, clean_env())
    return Workspace(root / 'install', clean_env())


def build_in_a_venv(root: Path) -> Workspace:
    """The README's PEP 668 steps, command for command, with the system Python."""
    copy_package(root)
    env = clean_env(path='/usr/bin:/bin') | ros_underlay()
    run(f'{SYSTEM_PYTHON} -m venv --system-site-packages venv && touch venv/COLCON_IGNORE', root, env)
    active = env | {'PATH': f'{root}/venv/bin:/usr/bin:/bin', 'VIRTUAL_ENV': str(root / 'venv')}
    installed = run(['python3', '-m', 'pip', 'install', '--disable-pip-version-check', '-r',
                     f'src/seg_node/{REQUIREMENTS}'], root, active)
    assert 'externally-managed-environment' not in installed
    run(['python3', '-m', 'colcon', 'build', '--packages-select', 'seg_node'], root, active)
    return Workspace(root / 'install', active)


@pytest.fixture(scope='module', params=['venv', 'symlink'])
def workspace(request, tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp(f'ws_{request.param}')
    if request.param == 'symlink':
        return build_symlinked(root)
    if not (Path(sysconfig.get_path('stdlib', vars={'installed_base': '/usr', 'base': '/usr'})) /
            'EXTERNALLY-MANAGED').is_file() or not SYSTEM_PYTHON.is_file():
        pytest.skip('no externally managed (PEP 668) system Python at /usr/bin/python3 to build the venv from')
    return build_in_a_venv(root)


def test_the_system_python_refuses_pip_as_the_readme_user_saw():
    # The failure the venv steps avoid (Ubuntu 24.04 and Debian 12 mark their Python externally managed).
    done = subprocess.run([str(SYSTEM_PYTHON), '-m', 'pip', 'install', '--dry-run', '-r', str(REPO / REQUIREMENTS)],
                          capture_output=True, text=True, timeout=120, check=False)
    if 'No module named pip' in done.stderr:
        pytest.skip('the system Python has no pip')
    assert done.returncode != 0 and 'externally-managed-environment' in done.stderr


def test_the_installed_entry_points_run_the_venvs_interpreter(workspace):
    if 'VIRTUAL_ENV' not in workspace.env:
        pytest.skip('the symlink build uses this environment\'s Python')
    venv = Path(workspace.env['VIRTUAL_ENV'])
    for script in ('seg_node', 'seg_node_managed', 'seg_bag'):
        first = (workspace.install / 'seg_node' / 'lib' / 'seg_node' / script).read_text().splitlines()[0]
        assert first == f'#!{venv}/bin/python3', (script, first)


def sourced(workspace: Workspace, command: str, *, cwd: Path) -> subprocess.CompletedProcess:
    script = f'source {workspace.install}/local_setup.bash && {command}'
    return subprocess.run(['bash', '-c', script], cwd=cwd, env=workspace.env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_install_tree_has_what_ros_tools_look_for(workspace):
    install = workspace.install
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


def test_sourcing_the_workspace_imports_the_installed_package(workspace, tmp_path):
    probe = ('python -c "import seg_node; from ament_index_python.packages import get_package_share_directory; '
             "print(seg_node.__file__); print(get_package_share_directory('seg_node'))\"")
    done = sourced(workspace, probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    module, share = done.stdout.split()
    root = workspace.install.parent
    assert Path(module).resolve().is_relative_to(root) or Path(module).is_relative_to(root), module
    assert Path(share) == workspace.install / 'seg_node' / 'share' / 'seg_node'


def start_installed_node(workspace: Workspace, cwd: Path, data_home: Path) -> ChildProcess:
    install = workspace.install
    share = install / 'seg_node' / 'share' / 'seg_node'
    command = (f'source {install}/local_setup.bash && exec {install}/seg_node/lib/seg_node/seg_node '
               f'--ros-args --params-file {share}/config/camera_seg.yaml')
    env = workspace.env | {'XDG_DATA_HOME': str(data_home), 'HOME': str(cwd)} | dds_environment()
    return ChildProcess(['bash', '-c', command], cwd=cwd, env=env)


def dds_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k.startswith(('ROS_', 'FASTDDS_', 'FASTRTPS_', 'RMW_', 'SEG_NODE_IN_NETNS'))}


def test_without_a_model_the_installed_node_says_where_it_looked(workspace, tmp_path):
    node = start_installed_node(workspace, tmp_path, tmp_path / 'data')
    assert node.proc.wait(60) == 1
    node.stop()
    assert "model file 'demo.onnx' was not found (looked in" in node.output
    assert f'{tmp_path}/data/seg_node/models/demo.onnx' in node.output
    assert 'python3 -m seg_node.training.demo_model' in node.output
    assert 'Traceback' not in node.output


@pytest.mark.dds
def test_the_installed_node_segments_two_cameras_with_the_shipped_defaults(workspace, tmp_path):
    models = tmp_path / 'data' / 'seg_node' / 'models'
    models.mkdir(parents=True)
    onnx.save(palette_classifier(), models / 'demo.onnx')  # stands in for the demo model
    node = start_installed_node(workspace, tmp_path, tmp_path / 'data')
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
