"""Third-party telemetry is off by default and on only when asked (README, "Privacy").

Each tool runs as its own process with HOME and XDG_CACHE_HOME in a fresh directory; onnxruntime
keeps its telemetry store and device id under that cache when telemetry is on. The opt-in test
shows the check is not vacuous: the same run with SEG_NODE_TELEMETRY=1 leaves events there.
"""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from seg_node.bag.synth import SynthOptions, write_drive
from seg_node.model.known_answer import palette_classifier, palette_scene
from seg_node.privacy import OPT_IN, TELEMETRY_OFF, disable_telemetry, telemetry_environment
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.launch_config import launch_plan
from seg_node.ros.spinning import BackgroundNode

STORE = Path('.cache') / 'Microsoft' / 'DeveloperTools' / '.onnxruntime'
# The first onnxruntime release seen keeping that store (1.23, Humble's newest, keeps none).
RECORDING_SINCE = (1, 31)


# onnxruntime records nothing where these say it runs under CI (checked: no store with CI=true), which
# would make both checks below pass vacuously in CI: the tools run without them.
CI_VARIABLES = ('CI', 'CONTINUOUS_INTEGRATION', 'BUILD_NUMBER', 'TF_BUILD', 'GITHUB_ACTIONS', 'GITLAB_CI',
                'JENKINS_URL', 'TRAVIS', 'CIRCLECI', 'BUILDKITE', 'CODEBUILD_BUILD_ID')


def private_env(home: Path, *, opt_in: bool = False) -> dict[str, str]:
    """This process's environment with a fresh home, without the telemetry settings or CI markers it had."""
    env = {k: v for k, v in os.environ.items()
           if k not in TELEMETRY_OFF and k != OPT_IN and k not in CI_VARIABLES}
    env |= {'HOME': str(home), 'XDG_CACHE_HOME': str(home / '.cache')}
    if opt_in:
        env[OPT_IN] = '1'
    return env


def telemetry_events(home: Path) -> int:
    """Events in onnxruntime's telemetry store under ``home`` (0 when there is no store)."""
    db = home / STORE / 'onnxruntime.db'
    if not db.exists():
        return 0
    with sqlite3.connect(db) as connection:
        return connection.execute('select count(*) from events').fetchone()[0]


def assert_nothing_recorded(home: Path) -> None:
    assert telemetry_events(home) == 0
    assert not (home / STORE / 'deviceid').exists()


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp('privacy') / 'palette.onnx'
    onnx.save(palette_classifier(input_size=(32, 48)), path)
    return path


def run_tool(args: list[str], home: Path, *, opt_in: bool = False) -> str:
    """Run ``python args`` with a fresh home; return what it printed."""
    done = subprocess.run([sys.executable, *args], env=private_env(home, opt_in=opt_in), capture_output=True,
                          text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def skip_where_nothing_would_be_recorded() -> None:
    """Skip a no-telemetry check that would pass vacuously: this onnxruntime keeps no store at all."""
    if tuple(int(v) for v in onnxruntime.__version__.split('.')[:2]) < RECORDING_SINCE:
        pytest.skip(f'onnxruntime {onnxruntime.__version__} keeps no telemetry store to show the opt-in with')


def test_seg_bag_label_records_no_telemetry_and_the_opt_in_does(model, tmp_path):
    write_drive(tmp_path / 'drive', SynthOptions(cameras=1, frames=2, width=48, height=32, scene='palette'))
    label = ['-m', 'seg_node.bag.cli', 'label', str(tmp_path / 'drive')]
    run_tool([*label, str(tmp_path / 'off'), '--model', str(model), '--providers', 'cpu'], tmp_path / 'home')
    assert_nothing_recorded(tmp_path / 'home')
    skip_where_nothing_would_be_recorded()
    # Negative control: the same command, opted in, leaves events and a device id behind.
    run_tool([*label, str(tmp_path / 'on'), '--model', str(model), '--providers', 'cpu'], tmp_path / 'opted',
             opt_in=True)
    assert telemetry_events(tmp_path / 'opted') > 0
    assert (tmp_path / 'opted' / STORE / 'deviceid').exists()


def test_export_records_no_telemetry(tmp_path):
    pytest.importorskip('torch')
    skip_where_nothing_would_be_recorded()
    script = '''
import sys, torch
from seg_node.model.classes import CITYSCAPES
from seg_node.training.hyperparameters import Hyperparameters, as_dict
from seg_node.training.models import build_network
hp = Hyperparameters(algorithm='fcn', num_classes=19, crop_size=32, use_pretrained_model=False)
model = build_network(algorithm='fcn', num_classes=19, output_stride=16, aux_loss=True, decoder='none')
torch.save({'model': model.state_dict(), 'hyperparameters': as_dict(hp), 'epoch': 1,
            'classes': list(CITYSCAPES.names), 'palette': [list(c) for c in CITYSCAPES.palette],
            'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225], 'metrics': {}}, sys.argv[1])
from seg_node.training.export_cli import main
code = main([sys.argv[1], '--output', sys.argv[2], '--height', '32', '--width', '32'])
print('onnxruntime loaded:', 'onnxruntime' in sys.modules)
sys.exit(code)
'''
    out = run_tool(['-c', script, str(tmp_path / 'm.pt'), str(tmp_path / 'm.onnx')], tmp_path / 'home')
    assert (tmp_path / 'm.onnx').exists()
    # Not vacuous: the export checks its model in onnxruntime, which records each import when telemetry is on.
    assert 'onnxruntime loaded: True' in out
    assert_nothing_recorded(tmp_path / 'home')


@pytest.mark.dds
def test_node_over_dds_records_no_telemetry(model, tmp_path):
    skip_where_nothing_would_be_recorded()  # the node's engine is onnxruntime: it would record, were it on
    home = tmp_path / 'home'
    node = NodeProcess({'model_path': model, 'image_topics': ['/cam_p/image_raw'], 'providers': ['cpu'],
                        'input_reliability': 'reliable'}, env=private_env(home))
    peer = BackgroundNode('privacy_peer')
    try:
        node.wait_ready()
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        masks = []
        peer.node.create_subscription(Image, '/cam_p/segmentation/mask', masks.append, qos)
        publisher = peer.node.create_publisher(Image, '/cam_p/image_raw', qos)
        assert wait_for(lambda: publisher.get_subscription_count() > 0, 20)
        rgb, _ = palette_scene(5, 32, 48)
        msg = Image(height=32, width=48, encoding='rgb8', step=48 * 3, data=rgb.tobytes())

        def sent_and_answered() -> bool:
            publisher.publish(msg)
            return bool(masks)
        assert wait_for(sent_and_answered, 20, period=0.2), node.output
    finally:
        peer.close()
        assert node.stop() == 0, node.output
    assert_nothing_recorded(home)


def test_settings_respect_the_user_and_the_opt_in():
    env: dict[str, str] = {'RAY_USAGE_STATS_ENABLED': '1'}
    disable_telemetry(env)
    assert env == {'ORT_DISABLE_TELEMETRY': '1', 'RAY_USAGE_STATS_ENABLED': '1'}  # the user's value stays
    assert telemetry_environment({OPT_IN: '1'}) == {}
    opted = {OPT_IN: 'yes'}
    disable_telemetry(opted)
    assert opted == {OPT_IN: 'yes'}
    assert telemetry_environment({}) == {'ORT_DISABLE_TELEMETRY': '1', 'RAY_USAGE_STATS_ENABLED': '0'}


def test_importing_the_package_turns_telemetry_off_before_onnxruntime_loads(tmp_path):
    code = ('import os, sys; import seg_node; assert "onnxruntime" not in sys.modules; '
            'print(os.environ["ORT_DISABLE_TELEMETRY"], os.environ["RAY_USAGE_STATS_ENABLED"])')
    done = subprocess.run([sys.executable, '-c', code], env=private_env(tmp_path), capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ['1', '0']


def test_the_launch_file_passes_the_settings_to_the_node(monkeypatch):
    monkeypatch.delenv(OPT_IN, raising=False)
    monkeypatch.delenv('ORT_DISABLE_TELEMETRY', raising=False)
    assert launch_plan({}, '/opt/share/seg_node').environment['ORT_DISABLE_TELEMETRY'] == '1'
    monkeypatch.setenv(OPT_IN, '1')
    assert launch_plan({}, '/opt/share/seg_node').environment == {}
