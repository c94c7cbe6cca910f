"""ament_python package definition for seg_node (also installable with pip)."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'seg_node'

# PyPI-only installs (no apt ROS): the ROS 2 Kilted wheels and runtime libraries, pinned to
# the versions verified with this package. In a ROS 2 workspace these come from rosdep.
PYPI_RUNTIME = [
    'ros-rclpy==9.1.2',
    'ros-sensor-msgs==5.5.1',
    'ros-std-msgs==5.5.1',
    'ros-diagnostic-msgs==5.5.1',
    # The ground grid (nav_msgs/OccupancyGrid) and the tf2 stand-in's TransformStamped.
    'ros-nav-msgs==5.5.1',
    'ros-geometry-msgs==5.5.1',
    'ros-rmw-fastrtps-cpp==9.3.3',
    'ros-lifecycle-msgs==2.3.0',
    'onnxruntime-gpu==1.31.1',
    'onnx==1.23.2',
    'numpy==2.4.6',
    'opencv-python-headless==5.0.0.93',
    'pyyaml==6.0.3',
    'rosbags==0.11.9',
    'rosbags-image==0.10.4',
    'tqdm==4.70.1',
]

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench', 'bench.*', 'demo', 'demo.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.xml')),
        ('share/' + package_name + '/rviz', glob('rviz/*.rviz')),
        ('share/' + package_name + '/foxglove', glob('foxglove/*.json')),
        ('share/' + package_name + '/models', glob('models/*.md') + glob('models/*.json')),
    ],
    install_requires=['setuptools'],
    extras_require={
        'pypi': PYPI_RUNTIME,
        # colcon builds the package in a throwaway workspace in the tests, as a ROS user would.
        'test': ['pytest==9.2.0', 'pytest-timeout==2.4.0', 'hypothesis==6.170.15', 'ruff==0.17.6',
                 'colcon-common-extensions==0.3.0', 'colcon-ros==0.5.0', 'ros-ament-package==0.17.2',
                 # A third-party Foxglove WebSocket client and Foxglove's own MCAP readers (test peers).
                 'websockets==17.4; python_version >= "3.11"', 'websockets==16.1.1; python_version < "3.11"',
                 'mcap==1.6.0', 'mcap-ros2-support==0.6.0'],
        # The Foxglove live view in the node (foxglove_port; README, "Foxglove").
        'foxglove': ['foxglove-sdk==0.30.3'],
        'train': ['torch==2.14.1', 'torchvision==0.29.1'],
        # seg_bag fleet: label and evaluate many bags on a Ray cluster (README, "Fleet labelling").
        'fleet': ['ray[data]==2.60.0'],
        # mmsegmentation as the reference implementation in the tests of seg_export --pretrained: the
        # pure-Python dependencies of mmsegmentation 1.2.2, mmengine 0.10.7 and mmcv-lite 2.1.0, which
        # make test installs with --no-deps (their opencv-python would sit beside opencv-python-headless).
        'reference': ['addict==2.4.0', 'yapf==0.43.0', 'termcolor==3.3.0', 'rich==15.0.0', 'matplotlib==3.11.2',
                      'prettytable==3.19.0', 'scipy==1.17.1', 'ftfy==6.3.1', 'regex==2026.11.19'],
    },
    zip_safe=True,
    maintainer='seg_node developers',
    maintainer_email='seg-node@example.com',
    description='Real-time semantic segmentation node for ROS 2 cameras (ONNX Runtime).',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'seg_node = seg_node.ros.node:main',
            'seg_node_managed = seg_node.ros.managed:main',
            'seg_train = seg_node.training.train:main',
            'seg_export = seg_node.training.export_cli:main',
            'seg_eval = seg_node.training.evaluate:main',
            'seg_bag = seg_node.bag.cli:main',
            'seg_build_engine = seg_node.runtime.build_engine:main',
        ],
    },
)
