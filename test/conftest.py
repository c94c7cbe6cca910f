"""Test-wide setup: DDS stays on this machine, each pytest run gets its own domain."""

from pathlib import Path

import pytest

from seg_node.ros.harness import isolate_dds

REPO = Path(__file__).resolve().parents[1]

# Before anything imports rclpy: discovery on localhost only, the project's Fast DDS profile
# (shared memory + loopback UDP), and a domain of our own so parallel runs never meet.
isolate_dds(REPO)


@pytest.fixture(scope='module')
def context():
    """An rclpy context of the test module's own, for nodes created in-process."""
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


@pytest.fixture(scope='module')
def model_path(tmp_path_factory) -> str:
    """A 16x16 nearest-palette-colour model for in-process parameter tests (the start-up needs a model)."""
    import onnx

    from seg_node.model.known_answer import palette_classifier

    path = tmp_path_factory.mktemp('m') / 'palette.onnx'
    onnx.save(palette_classifier(input_size=(16, 16)), path)
    return str(path)


@pytest.fixture(scope='module')
def default_cameras() -> list[str]:
    """The image topics of the shipped parameters file (config/camera_seg.yaml)."""
    import yaml

    params = yaml.safe_load((REPO / 'config' / 'camera_seg.yaml').read_text())
    return params['/**']['ros__parameters']['image_topics']


@pytest.fixture(scope='session')
def gpu_present() -> bool:
    """An NVIDIA GPU with its driver on this machine, found without asking the code under test."""
    return Path('/dev/nvidiactl').exists() or Path('/proc/driver/nvidia/version').exists()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption('--soak-minutes', type=float, default=None,
                     help='run the soak tests for this many minutes')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption('--soak-minutes') is not None or 'soak' in (config.getoption('-m') or ''):
        return
    skip = pytest.mark.skip(reason='soak test: run with make soak')
    for item in items:
        if 'soak' in item.keywords:
            item.add_marker(skip)
