"""seg_train from ImageNet weights (SageMaker's default ``use_pretrained_model``), with the network blocked.

The weights come from torch's cache in a temporary TORCH_HOME, where the test writes a ResNet-50
state dict under torchvision's published file name, or from ``--backbone-weights FILE``.
"""

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import ResNet50_Weights

from seg_node.training.hyperparameters import parse_args
from seg_node.training.train import _prepare_model

torch.set_num_threads(2)
IMAGENET_FILE = 'resnet50-0676ba61.pth'


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty TORCH_HOME and a downloader that fails as with no network: (cache folder, download attempts)."""
    attempts = []

    def blocked(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError('network blocked in tests')

    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setattr(torch.hub, 'download_url_to_file', blocked)
    cache = Path(torch.hub.get_dir()) / 'checkpoints'
    assert str(cache).startswith(str(tmp_path))
    return cache, attempts


def resnet50_state(seed):
    torch.manual_seed(seed)
    return torchvision.models.resnet50().state_dict()


def build(tmp_path, *args):
    """The network as seg_train builds it, from SageMaker-style arguments (use_pretrained_model left at its default)."""
    config = parse_args(['--data', str(tmp_path), '--output', str(tmp_path / 'out'), '--num_classes', '19',
                         '--algorithm', 'deeplab', *args])
    assert config.hp.use_pretrained_model is True
    return _prepare_model(config, None, 1, torch.device('cpu'))


def assert_backbone_is(model, state):
    backbone = model.backbone.state_dict()
    assert set(backbone) == {k for k in state if not k.startswith('fc.')}
    for key, value in backbone.items():
        assert torch.equal(value, state[key]), f'{key} does not start from the ImageNet file'


def test_seg_train_starts_from_the_cached_imagenet_file(tmp_path, offline):
    assert Path(ResNet50_Weights.IMAGENET1K_V1.url).name == IMAGENET_FILE
    cache, attempts = offline
    state = resnet50_state(seed=5)
    cache.mkdir(parents=True)
    torch.save(state, cache / IMAGENET_FILE)
    assert_backbone_is(build(tmp_path), state)
    assert not attempts


def test_seg_train_starts_from_a_backbone_weights_file(tmp_path, offline):
    state = resnet50_state(seed=6)
    torch.save(state, tmp_path / 'r50.pth')
    assert_backbone_is(build(tmp_path, '--backbone-weights', str(tmp_path / 'r50.pth')), state)
    assert not offline[1]  # a file given: nothing fetched, nothing cached needed


def test_seg_train_offline_with_nothing_cached_says_what_to_do(tmp_path, offline):
    with pytest.raises(ValueError, match=r"could not load the ImageNet weights of resnet-50 .*put them in torch's "
                                         r"cache, pass --backbone-weights PATH, or --use_pretrained_model false"):
        build(tmp_path)
    assert offline[1] == [ResNet50_Weights.IMAGENET1K_V1.url]
