"""mmsegmentation 1.2.2 as the reference implementation of the converted Cityscapes models, and test helpers.

mmcv-lite has no compiled ``mmcv.ops``, which mmseg's utilities import by name; none of those ops
is used by ResNetV1c, ASPPHead, PSPHead or FCNHead, so a stand-in module whose every attribute
refuses to be used is registered in its place before the import. Install: ``make test`` (the
``reference`` extra).
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings

import cv2
import numpy as np
import torch

from seg_node.model.classes import CITYSCAPES_CLASSES

MISSING = next((name for name in ('mmseg', 'mmengine', 'mmcv') if importlib.util.find_spec(name) is None), None)
SKIP_REASON = (f'{MISSING} is not installed (the reference extra: pip install --no-deps mmsegmentation==1.2.2 '
               'mmengine==0.10.7 mmcv-lite==2.1.0 and .[reference]; make test does it)')

SIZE = (65, 97)  # odd sizes: the bilinear upsampling and PSPNet's uneven pooling bins must agree too
HEADS = {
    'fcn': dict(type='FCNHead', num_convs=2, concat_input=True),
    'psp': dict(type='PSPHead', pool_scales=(1, 2, 3, 6)),
    'deeplab': dict(type='ASPPHead', dilations=(1, 12, 24, 36)),
}


class _UnavailableOp:
    """What ``mmcv.ops.X`` is here: constructing or calling it fails, naming the op."""

    name = 'op'

    def __init__(self, *args: object, **kwargs: object) -> None:
        msg = f'mmcv.ops.{self.name} is not in mmcv-lite; the reference models must not use it'
        raise NotImplementedError(msg)


def _ops_stand_in() -> types.ModuleType:
    module = types.ModuleType('mmcv.ops')

    def attribute(name: str) -> type:
        if name.startswith('__'):
            raise AttributeError(name)
        return type(name, (_UnavailableOp,), {'name': name})

    module.__getattr__ = attribute
    return module


def import_mmseg() -> types.ModuleType:
    """Import mmseg.models with the mmcv.ops stand-in, and register mmseg's modules."""
    if 'mmcv.ops' not in sys.modules:
        sys.modules['mmcv.ops'] = _ops_stand_in()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # mmcv-lite warns about its missing ops, mmseg about deprecations
        import mmseg.models
        from mmseg.utils import register_all_modules
        register_all_modules(init_default_scope=True)
    return mmseg.models


def build_reference(algorithm: str, num_classes: int = 19) -> object:
    """mmseg's own EncoderDecoder for a Cityscapes R50-D8 config (BN for SyncBN, whole-image test mode)."""
    import_mmseg()
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS

    norm = dict(type='BN', requires_grad=True)
    cfg = ConfigDict(  # as mmseg's config files give it: attribute access to test_cfg.mode
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255),
        backbone=dict(type='ResNetV1c', depth=50, num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4),
                      strides=(1, 2, 1, 1), norm_cfg=norm, norm_eval=False, style='pytorch', contract_dilation=True),
        decode_head=dict(in_channels=2048, in_index=3, channels=512, dropout_ratio=0.1, num_classes=num_classes,
                         norm_cfg=norm, align_corners=False, **HEADS[algorithm]),
        auxiliary_head=dict(type='FCNHead', in_channels=1024, in_index=2, channels=256, num_convs=1,
                            concat_input=False, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm,
                            align_corners=False),
        test_cfg=dict(mode='whole'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return MODELS.build(cfg).eval()


def randomize_batchnorm(network, seed):
    """Trained-looking BatchNorm statistics, so every layer's normalization matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in network.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_((torch.rand(n, generator=g) - 0.5) * 0.4)
    return network.eval()


def images(seed, n=2, size=SIZE):
    """Smooth random RGB uint8 images [n, H, W, 3]."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 6, 8, 3)).astype(np.uint8)
    return np.stack([cv2.resize(c, size[::-1], interpolation=cv2.INTER_CUBIC) for c in coarse])


def save_mmseg_checkpoint(path, state):
    """An mmsegmentation checkpoint's layout: {'meta', 'state_dict'} (the auxiliary head included)."""
    torch.save({'meta': {'mmseg_version': '1.2.2', 'dataset_meta': {'classes': list(CITYSCAPES_CLASSES)}},
                'state_dict': state}, path)
    return path
