"""FCN, PSPNet and DeepLabV3 heads on a torchvision ResNet-50/101 backbone.

FCN and DeepLabV3 use torchvision's heads; PSPNet's pyramid pooling head (bins 1, 2, 3, 6) is
written here, as torchvision has none. The backbone is dilated to output stride 8 (default) or
16, as in torchvision's and GluonCV's segmentation models, or left at 32. An optional skip
decoder (ours, in the spirit of DeepLabV3+ and U-Net) refines the head's scores with the
backbone's stride-4 and stride-2 features and the image itself, so that objects a few pixels
wide survive at small input sizes.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the conventional alias
from torchvision.models import ResNet50_Weights, ResNet101_Weights
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

__all__ = ['ALGORITHMS', 'BACKBONES', 'DECODERS', 'PSPHead', 'SegmentationModel', 'SkipDecoder',
           'adaptive_avg_pool_exact', 'build_network', 'load_backbone_weights']

ALGORITHMS = ('fcn', 'psp', 'deeplab')
BACKBONES = {
    'resnet-50': (torchvision.models.resnet50, ResNet50_Weights.IMAGENET1K_V1),
    'resnet-101': (torchvision.models.resnet101, ResNet101_Weights.IMAGENET1K_V1),
}
PSP_BINS = (1, 2, 3, 6)
DECODERS = ('none', 'skip')
OUTPUT_STRIDES = (8, 16, 32)


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def _upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode='bilinear', align_corners=False)


class SkipDecoder(nn.Module):
    """Refine coarse class scores at stride 4, 2 and 1 with the backbone's early features.

    Each step upsamples what it has, concatenates the skip features of that resolution and
    mixes them with a 3x3 conv; the last step sees the normalized image, whose colour edges are
    where the class boundaries are.
    """

    def __init__(self, num_classes: int, stride4_channels: int = 256, stride2_channels: int = 64,
                 widths: tuple[int, int, int] = (64, 32, 32)) -> None:
        super().__init__()
        self.stride4 = _conv_bn_relu(num_classes + stride4_channels, widths[0])
        self.stride2 = _conv_bn_relu(widths[0] + stride2_channels, widths[1])
        self.stride1 = _conv_bn_relu(widths[1] + 3, widths[2])
        self.classifier = nn.Conv2d(widths[2], num_classes, 1)

    def forward(self, scores: torch.Tensor, stride4: torch.Tensor, stride2: torch.Tensor,
                image: torch.Tensor) -> torch.Tensor:
        """Class scores [N, C, H, W] at the image's size."""
        x = self.stride4(torch.cat([_upsample(scores, stride4), stride4], dim=1))
        x = self.stride2(torch.cat([_upsample(x, stride2), stride2], dim=1))
        x = self.stride1(torch.cat([_upsample(x, image), image], dim=1))
        return self.classifier(x)


class SegmentationModel(nn.Module):
    """Backbone + head (+ auxiliary head on layer3); returns ``{'out', 'aux'}`` at input size."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, aux_classifier: nn.Module | None = None,
                 decoder: SkipDecoder | None = None, *, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.decoder = decoder
        # Added to the scores outside training (so in validation and in the export): the logit
        # adjustment that takes back the prior that class-weighted training put on rare classes.
        self.register_buffer('score_offset', torch.zeros(num_classes))

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False) -> object:
        """Load weights; checkpoints from before the logit adjustment had no score offset, i.e. zero."""
        state = {'score_offset': torch.zeros_like(self.score_offset)} | dict(state_dict)
        return super().load_state_dict(state, strict=strict, assign=assign)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score every pixel: logits [N, C, H, W] under 'out' (and 'aux' when it has one)."""
        size = x.shape[-2:]
        features = self.backbone(x)
        result = OrderedDict()
        out = self.classifier(features['out'])
        if self.decoder is not None:
            result['out'] = self.decoder(out, features['stride4'], features['stride2'], x)
        else:
            result['out'] = F.interpolate(out, size=size, mode='bilinear', align_corners=False)
        if not self.training:
            result['out'] = result['out'] + self.score_offset.to(result['out'].dtype)[:, None, None]
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features['aux'])
            result['aux'] = F.interpolate(aux, size=size, mode='bilinear', align_corners=False)
        return result


def _pooling_matrix(size: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """[bins, size] averaging weights with adaptive pooling's bin edges (floor start, ceil end)."""
    m = torch.zeros(bins, size, dtype=like.dtype, device=like.device)
    for i in range(bins):
        start, end = (i * size) // bins, -((-(i + 1) * size) // bins)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool_exact(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Adaptive average pooling as two matrix products: exact, and exportable to ONNX at any size.

    ONNX has no adaptive pooling; PyTorch's exporter handles only sizes the bins divide. With the
    input size fixed at export, the matrices become constants.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    return _pooling_matrix(h, bins, x) @ x @ _pooling_matrix(w, bins, x).T


class _PyramidPooling(nn.Module):
    """Average-pool to each bin size, reduce channels, upsample back and concatenate."""

    def __init__(self, in_channels: int, bins: tuple[int, ...]) -> None:
        super().__init__()
        reduced = in_channels // len(bins)
        self.bins = bins
        self.stages = nn.ModuleList(nn.Sequential(
            nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, reduced, 1, bias=False),
            nn.BatchNorm2d(reduced), nn.ReLU(inplace=True)) for b in bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate ``x`` with its pooled context at every bin size."""
        size = x.shape[-2:]
        pooled = []
        for bins, stage in zip(self.bins, self.stages, strict=True):
            exporting = torch.onnx.is_in_onnx_export()
            y = stage[1:](adaptive_avg_pool_exact(x, bins)) if exporting else stage(x)
            pooled.append(F.interpolate(y, size=size, mode='bilinear', align_corners=False))
        return torch.cat([x, *pooled], dim=1)


class PSPHead(nn.Sequential):
    """PSPNet head: pyramid pooling (bins 1, 2, 3, 6), 3x3 conv, classifier."""

    def __init__(self, in_channels: int, num_classes: int, bins: tuple[int, ...] = PSP_BINS) -> None:
        inner = in_channels // 4
        super().__init__(
            _PyramidPooling(in_channels, bins),
            nn.Conv2d(in_channels * 2, inner, 3, padding=1, bias=False),
            nn.BatchNorm2d(inner), nn.ReLU(inplace=True), nn.Dropout(0.1),
            nn.Conv2d(inner, num_classes, 1),
        )


def load_backbone_weights(resnet: nn.Module, path: str | Path) -> None:
    """Load a local ResNet state dict (safe ``weights_only`` loading); fail naming bad keys."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - a bad file fails as pickle, zip, struct, OS... errors
        msg = f'cannot read backbone weights {path}: {err}'
        raise ValueError(msg) from None
    if isinstance(state, dict) and isinstance(state.get('model'), dict):
        state = state['model']
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    if not isinstance(state, dict):
        msg = f'backbone weights {path} hold a {type(state).__name__}, not a state dict'
        raise ValueError(msg)
    expected = set(resnet.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        msg = (f'backbone weights {path} do not fit the backbone: missing keys {missing[:8]}'
               f'{" ..." if len(missing) > 8 else ""} ({len(missing)}), unexpected keys '
               f'{unexpected[:8]}{" ..." if len(unexpected) > 8 else ""} ({len(unexpected)})')
        raise ValueError(msg)
    wrong = [f'{k} {tuple(state[k].shape)} (needs {tuple(v.shape)})' for k, v in resnet.state_dict().items()
             if not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape]
    if wrong:
        msg = f'backbone weights {path} do not fit the backbone: wrong shapes {wrong[:8]}'
        raise ValueError(msg)
    resnet.load_state_dict(state)


def build_network(*, algorithm: str = 'fcn', backbone: str = 'resnet-50', num_classes: int,
                  use_pretrained_model: bool = False, backbone_weights: str | Path | None = None,
                  output_stride: int = 8, aux_loss: bool = False, decoder: str = 'none') -> SegmentationModel:
    """Build a segmentation network.

    Args:
        algorithm: 'fcn', 'psp' or 'deeplab' (DeepLabV3 with ASPP).
        backbone: 'resnet-50' or 'resnet-101'.
        num_classes: number of output classes.
        use_pretrained_model: start the backbone from torchvision's ImageNet weights (downloads
            them unless they are in torch's cache).
        backbone_weights: a local ResNet state dict to start the backbone from instead.
        output_stride: 8 (layer3 and layer4 dilated), 16 (layer4 dilated) or 32 (none).
        aux_loss: add an FCN head on layer3 for an auxiliary training loss.
        decoder: 'none' (upsample the head's scores) or 'skip' (refine them with early features).
    """
    if algorithm not in ALGORITHMS:
        msg = f'algorithm must be one of {ALGORITHMS}, got {algorithm!r}'
        raise ValueError(msg)
    if backbone not in BACKBONES:
        msg = f'backbone must be one of {tuple(BACKBONES)}, got {backbone!r}'
        raise ValueError(msg)
    if output_stride not in OUTPUT_STRIDES:
        msg = f'output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}'
        raise ValueError(msg)
    if decoder not in DECODERS:
        msg = f'decoder must be one of {DECODERS}, got {decoder!r}'
        raise ValueError(msg)
    factory, imagenet = BACKBONES[backbone]
    weights = imagenet if use_pretrained_model and backbone_weights is None else None
    # From scratch, zero-initialised last BN of each block lets the deep net start shallow and
    # train much faster (Goyal et al. 2017); pretrained or loaded weights overwrite it anyway.
    resnet = factory(weights=weights, replace_stride_with_dilation=[False, output_stride == 8, output_stride <= 16],
                     zero_init_residual=weights is None)
    if backbone_weights is not None:
        load_backbone_weights(resnet, backbone_weights)
    layers = {'layer4': 'out'}
    if aux_loss:
        layers['layer3'] = 'aux'
    if decoder == 'skip':
        layers |= {'relu': 'stride2', 'layer1': 'stride4'}
    body = IntermediateLayerGetter(resnet, return_layers=layers)
    if algorithm == 'fcn':
        head: nn.Module = FCNHead(2048, num_classes)
    elif algorithm == 'psp':
        head = PSPHead(2048, num_classes)
    else:
        head = DeepLabHead(2048, num_classes)
    aux = FCNHead(1024, num_classes) if aux_loss else None
    return SegmentationModel(body, head, aux, SkipDecoder(num_classes) if decoder == 'skip' else None,
                             num_classes=num_classes)
