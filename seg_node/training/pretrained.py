"""Public pretrained ResNet-50 segmentation weights -> seg_node ONNX models (``seg_export --pretrained``).

Two families: torchvision's COCO-with-VOC-labels FCN and DeepLabV3 (21 VOC classes), exported
as torchvision builds them, and mmsegmentation's Cityscapes FCN, PSPNet and DeepLabV3 on a
ResNet-50-D8 (19 classes), rebuilt here with mmsegmentation's module names so a checkpoint maps
name for name. Weights come from a file given, else torch's cache
(``$TORCH_HOME/hub/checkpoints/<published file name>``), else a download when the network
allows. Export, metadata and verification are seg_export's own (``export_network``).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the conventional alias
from torchvision.models.segmentation import (
    DeepLabV3_ResNet50_Weights,
    FCN_ResNet50_Weights,
    deeplabv3_resnet50,
    fcn_resnet50,
)

from seg_node.model.classes import CITYSCAPES, VOC, ClassTable
from seg_node.model.contract import IMAGENET_MEAN, IMAGENET_STD
from seg_node.training.export import ExportError, ExportOptions, ModelDescription, Verification, export_network
from seg_node.training.models import PSP_BINS, adaptive_avg_pool_exact

__all__ = ['PRETRAINED', 'MMSegNetwork', 'PretrainedError', 'PretrainedModel', 'build_pretrained',
           'cached_weights_path', 'export_pretrained', 'get_pretrained', 'load_pretrained', 'resolve_weights',
           'sha256_of']


class PretrainedError(ValueError):
    """A pretrained model's weights are missing, damaged or of another network."""


@dataclass(frozen=True)
class PretrainedModel:
    """One supported set of public weights and what the node needs to know about it."""

    name: str  # 'family:architecture', the seg_export --pretrained value
    family: str  # 'torchvision' or 'mmseg'
    algorithm: str  # 'fcn', 'psp' or 'deeplab'
    url: str  # where the weights are published; its last part is the cache file name
    classes: ClassTable
    input_size: tuple[int, int]  # (H, W) exported by default
    published: str  # the published score, with its dataset and evaluation
    licence: str

    @property
    def file_name(self) -> str:
        """The published file name, which is also the name in torch's cache."""
        return self.url.rsplit('/', 1)[-1]

    @property
    def hash_prefix(self) -> str | None:
        """Leading SHA-256 hex digits in the file name, where the publisher's tools put them verifiably.

        torch.hub's convention, which torchvision's builders check on download. mmsegmentation's
        names carry a hash too, but its publishing tool hashed the file before stripping it, so
        that one cannot be checked against the published file.
        """
        if self.family != 'torchvision':
            return None
        match = re.search(r'-([a-f0-9]{8,})\.', self.file_name)
        return match.group(1) if match else None


_MMSEG = 'https://download.openmmlab.com/mmsegmentation/v0.5'
_TORCHVISION_LICENCE = 'BSD-3-Clause (torchvision); trained on COCO'
_MMSEG_LICENCE = 'Apache-2.0 (mmsegmentation); trained on Cityscapes (its terms: non-commercial)'
PRETRAINED: dict[str, PretrainedModel] = {m.name: m for m in (
    PretrainedModel('torchvision:deeplabv3_resnet50', 'torchvision', 'deeplab',
                    DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.url, VOC, (520, 693),
                    'COCO val2017 (VOC classes): 66.4 mIoU, 92.4 % pixel accuracy', _TORCHVISION_LICENCE),
    PretrainedModel('torchvision:fcn_resnet50', 'torchvision', 'fcn',
                    FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.url, VOC, (520, 693),
                    'COCO val2017 (VOC classes): 60.5 mIoU, 91.4 % pixel accuracy', _TORCHVISION_LICENCE),
    PretrainedModel('mmseg:fcn_r50-d8_cityscapes', 'mmseg', 'fcn',
                    f'{_MMSEG}/fcn/fcn_r50-d8_512x1024_80k_cityscapes/'
                    'fcn_r50-d8_512x1024_80k_cityscapes_20200606_113019-03aa804d.pth', CITYSCAPES, (1024, 2048),
                    'Cityscapes val, whole 1024x2048: 73.61 mIoU', _MMSEG_LICENCE),
    PretrainedModel('mmseg:pspnet_r50-d8_cityscapes', 'mmseg', 'psp',
                    f'{_MMSEG}/pspnet/pspnet_r50-d8_512x1024_80k_cityscapes/'
                    'pspnet_r50-d8_512x1024_80k_cityscapes_20200606_112131-2376f12b.pth', CITYSCAPES, (1024, 2048),
                    'Cityscapes val, whole 1024x2048: 78.55 mIoU', _MMSEG_LICENCE),
    PretrainedModel('mmseg:deeplabv3_r50-d8_cityscapes', 'mmseg', 'deeplab',
                    f'{_MMSEG}/deeplabv3/deeplabv3_r50-d8_512x1024_80k_cityscapes/'
                    'deeplabv3_r50-d8_512x1024_80k_cityscapes_20200606_113404-b92cfdd4.pth', CITYSCAPES, (1024, 2048),
                    'Cityscapes val, whole 1024x2048: 79.32 mIoU', _MMSEG_LICENCE),
)}


def get_pretrained(name: str) -> PretrainedModel:
    """The entry of ``name``, or one sentence listing the names there are."""
    if name not in PRETRAINED:
        msg = f'unknown pretrained model {name!r}; choose one of {", ".join(PRETRAINED)}'
        raise PretrainedError(msg)
    return PRETRAINED[name]


# ---------------------------------------------------------------------------------------------
# mmsegmentation's ResNet-50-D8 networks, with its module names (mmcv ConvModule: .conv, .bn).

class ConvBNReLU(nn.Module):
    """Convolution without bias, BatchNorm, ReLU: mmcv's ConvModule as these heads use it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                              dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Conv -> BN -> ReLU."""
        return self.activate(self.bn(self.conv(x)))


def _conv_bn_relu_stem() -> nn.Sequential:
    """The "V1c" deep stem: three 3x3 convolutions (32, 32, 64 channels), the first with stride 2."""
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(((3, 32), (32, 32), (32, 64))):
        layers += [nn.Conv2d(cin, cout, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class ResNetV1cD8(nn.Module):
    """ResNet-50-V1c at output stride 8: deep stem, layers 3 and 4 dilated 2 and 4.

    torchvision's dilated ResNet-50 gives the first block of a dilated layer the previous
    dilation, which is mmsegmentation's ``contract_dilation`` (1, then 2); its bottlenecks put
    the stride on the 3x3 convolution, as mmsegmentation's ``style='pytorch'``.
    """

    def __init__(self) -> None:
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
        self.stem = _conv_bn_relu_stem()
        self.maxpool = resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stride-8 layer4 features [N, 2048, H/8, W/8]."""
        x = self.maxpool(self.stem(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _upsample(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


class MMSegFCNHead(nn.Module):
    """Two 3x3 convs, then the input concatenated back in (``concat_input``) and a 3x3 conv."""

    def __init__(self, num_classes: int, in_channels: int = 2048, channels: int = 512) -> None:
        super().__init__()
        self.convs = nn.Sequential(ConvBNReLU(in_channels, channels, 3), ConvBNReLU(channels, channels, 3))
        self.conv_cat = ConvBNReLU(in_channels + channels, channels, 3)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores at the features' size."""
        return self.conv_seg(self.conv_cat(torch.cat([x, self.convs(x)], dim=1)))


class MMSegPSPHead(nn.Module):
    """Pyramid pooling (bins 1, 2, 3, 6, each reduced to 512 channels), a 3x3 bottleneck conv."""

    def __init__(self, num_classes: int, in_channels: int = 2048, channels: int = 512,
                 bins: tuple[int, ...] = PSP_BINS) -> None:
        super().__init__()
        self.bins = bins
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvBNReLU(in_channels, channels, 1)) for b in bins)
        self.bottleneck = ConvBNReLU(in_channels + len(bins) * channels, channels, 3)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores at the features' size."""
        outs = [x]
        for bins, stage in zip(self.bins, self.psp_modules, strict=True):
            # ONNX has no adaptive pooling at sizes the bins do not divide: exact matrices instead.
            pooled = adaptive_avg_pool_exact(x, bins) if torch.onnx.is_in_onnx_export() else stage[0](x)
            outs.append(_upsample(stage[1](pooled), x.shape[-2:]))
        return self.conv_seg(self.bottleneck(torch.cat(outs, dim=1)))


class MMSegASPPHead(nn.Module):
    """DeepLabV3's ASPP: image pooling, a 1x1 and three dilated 3x3 branches (12, 24, 36), bottleneck."""

    def __init__(self, num_classes: int, in_channels: int = 2048, channels: int = 512,
                 dilations: tuple[int, ...] = (1, 12, 24, 36)) -> None:
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, channels, 1))
        self.aspp_modules = nn.ModuleList(
            ConvBNReLU(in_channels, channels, 1 if d == 1 else 3, dilation=d) for d in dilations)
        self.bottleneck = ConvBNReLU((len(dilations) + 1) * channels, channels, 3)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores at the features' size."""
        pooled = self.image_pool[1](x.mean((2, 3), keepdim=True))  # global average pooling, any input size
        outs = [_upsample(pooled, x.shape[-2:]), *(branch(x) for branch in self.aspp_modules)]
        return self.conv_seg(self.bottleneck(torch.cat(outs, dim=1)))


MMSEG_HEADS: dict[str, Callable[[int], nn.Module]] = {
    'fcn': MMSegFCNHead, 'psp': MMSegPSPHead, 'deeplab': MMSegASPPHead}


class MMSegNetwork(nn.Module):
    """mmsegmentation's EncoderDecoder in 'whole' test mode: backbone, decode head, bilinear upsampling."""

    def __init__(self, algorithm: str, num_classes: int) -> None:
        super().__init__()
        self.backbone = ResNetV1cD8()
        self.decode_head = MMSEG_HEADS[algorithm](num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits [N, C, H, W] at the input size under 'out'."""
        return {'out': _upsample(self.decode_head(self.backbone(x)), x.shape[-2:])}


def build_pretrained(model: PretrainedModel) -> nn.Module:
    """The network of ``model`` with fresh (random) weights, in eval mode."""
    if model.family == 'torchvision':
        builder = deeplabv3_resnet50 if model.algorithm == 'deeplab' else fcn_resnet50
        # aux_loss=True: the published files hold the auxiliary head, and loading is strict.
        network: nn.Module = builder(weights=None, weights_backbone=None, num_classes=model.classes.num_classes,
                                     aux_loss=True)
    else:
        network = MMSegNetwork(model.algorithm, model.classes.num_classes)
    return network.eval()


# ---------------------------------------------------------------------------------------------
# Where the weights come from, and whether they are the right ones.

def cached_weights_path(model: PretrainedModel) -> Path:
    """``$TORCH_HOME/hub/checkpoints/<published file name>``: torch's own cache."""
    return Path(torch.hub.get_dir()) / 'checkpoints' / model.file_name


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open('rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(model: PretrainedModel, checkpoint: str | Path | None = None, *,
                    download: bool = True) -> Path:
    """The weights file: ``checkpoint`` if given, else torch's cache, else downloaded into the cache."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            msg = f'checkpoint {path} does not exist'
            raise PretrainedError(msg)
        return path
    cached = cached_weights_path(model)
    if cached.is_file():
        return cached
    if download:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(model.url, str(cached), hash_prefix=model.hash_prefix, progress=True)
            return cached
        except (OSError, RuntimeError):  # URLError is an OSError; a wrong hash is a RuntimeError
            pass
    msg = (f'the weights of {model.name} are not here and could not be downloaded: put {model.file_name} '
           f'(from {model.url}) in {cached.parent}, or pass --checkpoint FILE')
    raise PretrainedError(msg)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a torchvision file or an mmsegmentation checkpoint ({'state_dict', 'meta'})."""
    try:
        # weights_only: tensors and plain containers only; a checkpoint runs no code when read.
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged file fails as zip, pickle, EOF, OS... errors
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        msg = f'checkpoint {path} cannot be read as a PyTorch file (truncated or not a checkpoint?): {reason}'
        raise PretrainedError(msg) from None
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        msg = f'checkpoint {path} holds no state dict of tensors'
        raise PretrainedError(msg)
    return state


def _network_state(model: PretrainedModel, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map checkpoint names to the network's: mmsegmentation's auxiliary head is training-only."""
    if model.family == 'mmseg':
        return {k: v for k, v in state.items() if not k.startswith('auxiliary_head.')}
    return state


def load_pretrained(model: PretrainedModel, path: Path, network: nn.Module | None = None, *,
                    sha256: str | None = None) -> nn.Module:
    """Check ``path`` and load it into ``network`` (built if not given); one sentence naming the file if wrong.

    ``sha256``: the file's digest if already computed.
    """
    prefix = model.hash_prefix
    if prefix is not None:
        digest = sha256 or sha256_of(path)
        if not digest.startswith(prefix):
            msg = (f'checkpoint {path} is not the published {model.file_name}: its SHA-256 starts with '
                   f'{digest[:len(prefix)]}, the published file\'s with {prefix}')
            raise PretrainedError(msg)
    state = _network_state(model, _read_state(path))
    network = network if network is not None else build_pretrained(model)
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        first = f'missing key {missing[0]}' if missing else f'unexpected key {unexpected[0]}'
        msg = (f'checkpoint {path} does not fit {model.name}: {first} ({len(missing)} missing, '
               f'{len(unexpected)} unexpected; is it another architecture?)')
        raise PretrainedError(msg)
    wrong = [k for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        k = wrong[0]
        msg = (f'checkpoint {path} does not fit {model.name}: {k} has shape {tuple(state[k].shape)}, '
               f'the network needs {tuple(expected[k].shape)}')
        raise PretrainedError(msg)
    network.load_state_dict(state)
    if model.family == 'torchvision':
        network.aux_classifier = None  # unused at inference; torchvision's forward skips it when None
    return network.eval()


def description_extra(model: PretrainedModel, path: Path, sha256: str) -> dict:
    """Metadata entries naming the weights the exported model was converted from."""
    return {
        'seg_node.algorithm': model.algorithm,
        'seg_node.backbone': 'resnet-50' if model.family == 'torchvision' else 'resnet-50-v1c',
        'seg_node.output_stride': 8,
        'seg_node.pretrained': model.name,
        'seg_node.weights_file': path.name,
        'seg_node.weights_sha256': sha256,
        'seg_node.published': model.published,
        'seg_node.weights_licence': model.licence,
    }


def export_pretrained(name: str, output: str | Path, options: ExportOptions | None = None, *,
                      checkpoint: str | Path | None = None, download: bool = True) -> Verification:
    """Resolve, check and load the weights of ``name``, then export them with seg_export's one path."""
    model = get_pretrained(name)
    options = options or ExportOptions()
    if bool(options.height) != bool(options.width):
        msg = 'give both --height and --width, or neither'
        raise ExportError(msg)
    size = (options.height, options.width) if options.height else model.input_size
    path = resolve_weights(model, checkpoint, download=download)
    digest = sha256_of(path)
    reference = load_pretrained(model, path, sha256=digest)
    deploy = copy.deepcopy(reference) if options.fp16 else reference
    description = ModelDescription(model.classes.names, model.classes.palette, IMAGENET_MEAN, IMAGENET_STD,
                                   description_extra(model, path, digest))
    # Fixed size: the node resizes every frame to what the weights were evaluated at (and PSPNet's
    # pooling exports at a fixed size only).
    return export_network(reference, deploy, output, options=options, description=description, size=size,
                          fixed=True)
