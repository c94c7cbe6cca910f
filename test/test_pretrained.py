"""seg_export --pretrained: converted public weights match their reference implementations.

Random weights stand in for the published ones (no network here): mmsegmentation's own
EncoderDecoder for the Cityscapes models (test/mmseg_reference.py; skipped where the reference
extra is not installed) and torchvision's own builders for the COCO/VOC models. The network is
blocked and torch's cache is a temporary TORCH_HOME throughout.
"""

import dataclasses
import json
import signal
import urllib.error

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from mmseg_reference import (
    MISSING,
    SIZE,
    SKIP_REASON,
    build_reference,
    images,
    randomize_batchnorm,
    save_mmseg_checkpoint,
)
from sensor_msgs.msg import Image
from std_msgs.msg import String
from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights, FCN_ResNet50_Weights

from seg_node.model.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, VOC_CLASSES, VOC_PALETTE
from seg_node.model.contract import read_model_spec
from seg_node.model.labels import TRAIN_ID_TO_CITYSCAPES_ID
from seg_node.ros import camera as camera_io
from seg_node.ros.camera import qos
from seg_node.ros.harness import NodeProcess, wait_for
from seg_node.ros.spinning import BackgroundNode
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.loader import ModelRequest, load_model
from seg_node.runtime.render import resize_nearest
from seg_node.synthetic.drive import render_scene
from seg_node.training import pretrained as pretrained_module
from seg_node.training.evaluate import main as seg_eval
from seg_node.training.export import ExportOptions
from seg_node.training.export_cli import main as seg_export
from seg_node.training.pretrained import (
    PRETRAINED,
    MMSegNetwork,
    PretrainedError,
    cached_weights_path,
    export_pretrained,
    load_pretrained,
    resolve_weights,
    sha256_of,
)

torch.set_num_threads(2)

needs_mmseg = pytest.mark.skipif(MISSING is not None, reason=SKIP_REASON)
MMSEG = {'fcn': 'mmseg:fcn_r50-d8_cityscapes', 'psp': 'mmseg:pspnet_r50-d8_cityscapes',
         'deeplab': 'mmseg:deeplabv3_r50-d8_cityscapes'}
TORCHVISION = {'torchvision:deeplabv3_resnet50': (torchvision.models.segmentation.deeplabv3_resnet50,
                                                  DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1),
               'torchvision:fcn_resnet50': (torchvision.models.segmentation.fcn_resnet50,
                                            FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1)}


class Downloads:
    """torch.hub's downloader with the network blocked: records each attempt, then fails."""

    def __init__(self):
        self.calls = []

    def __call__(self, url, dst, hash_prefix=None, progress=True):
        self.calls.append((url, dst, hash_prefix))
        raise urllib.error.URLError('network blocked in tests')


@pytest.fixture(scope='module')
def offline(tmp_path_factory):
    """A temporary, empty TORCH_HOME and no network, for the whole module."""
    downloads = Downloads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('TORCH_HOME', str(tmp_path_factory.mktemp('torch_home')))
        mp.setattr(torch.hub, 'download_url_to_file', downloads)
        yield downloads


def onnx_logits(path, rgb):
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(None, {session.get_inputs()[0].name: rgb})[0]


def assert_logits_match(got, ref):
    """fp32 tolerance on the logits, and the same class on >= 99.9 % of pixels."""
    assert got.shape == ref.shape
    relative = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert relative < 1e-4, f'logits relative L2 error {relative:.2e}'
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max() + 1e-4
    agreement = (got.argmax(1) == ref.argmax(1)).mean()
    assert agreement >= 0.999, f'argmax agreement {agreement:.4%}'
    assert len(np.unique(ref.argmax(1))) > 1, 'the reference predicts one class only: the test would mean little'


# ---------------------------------------------------------------------------------------------
# Fidelity: mmsegmentation

@pytest.fixture(scope='module')
def mmseg_exports(offline, tmp_path_factory):
    """Each mmseg architecture: reference model (random weights), its checkpoint, our uint8 ONNX export."""
    if MISSING is not None:
        pytest.skip(SKIP_REASON)
    root = tmp_path_factory.mktemp('mmseg')
    result = {}
    for i, (algorithm, name) in enumerate(MMSEG.items()):
        torch.manual_seed(i)
        reference = randomize_batchnorm(build_reference(algorithm), seed=i)
        if algorithm == 'deeplab':  # from torch's cache, as a user who downloaded the file by hand
            checkpoint, given = cached_weights_path(PRETRAINED[name]), None
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
        else:  # from a file given
            checkpoint = given = root / f'{algorithm}.pth'
        save_mmseg_checkpoint(checkpoint, reference.state_dict())
        out = root / f'{algorithm}.onnx'
        export_pretrained(name, out, ExportOptions(input_format='uint8', height=SIZE[0], width=SIZE[1]),
                          checkpoint=given)
        result[algorithm] = (reference, checkpoint, out)
    assert not offline.calls, 'a file given or cached must not be downloaded'
    return result


def mmseg_reference_logits(reference, rgb):
    """mmseg's own preprocessing (BGR uint8 in, its mean/std) and whole-image inference."""
    inputs = [torch.from_numpy(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1))) for image in rgb]
    with torch.no_grad():
        batch = reference.data_preprocessor({'inputs': inputs}, False)['inputs']
        return reference.encode_decode(batch, [{'img_shape': SIZE}] * len(inputs)).numpy()


@needs_mmseg
@pytest.mark.parametrize('algorithm', list(MMSEG))
def test_mmseg_conversion_matches_mmsegmentation(mmseg_exports, algorithm):
    reference, _, onnx_path = mmseg_exports[algorithm]
    rgb = images(seed=10)
    assert_logits_match(onnx_logits(onnx_path, rgb), mmseg_reference_logits(reference, rgb))


@needs_mmseg
def test_mmseg_models_meet_the_node_contract_with_cityscapes_metadata(mmseg_exports):
    for algorithm, (_, checkpoint, onnx_path) in mmseg_exports.items():
        # The contract checks without an inference session (the engine runs the DeepLabV3 one below).
        spec = read_model_spec(onnx.load(str(onnx_path)))
        assert spec.classes == CITYSCAPES_CLASSES and spec.input_size == SIZE
        assert spec.metadata['seg_node.pretrained'] == MMSEG[algorithm]
        assert spec.metadata['seg_node.weights_sha256'] == sha256_of(checkpoint)


# ---------------------------------------------------------------------------------------------
# Fidelity: torchvision

def published_as(monkeypatch, name, path):
    """Let ``path`` pass as the published file of ``name``: its own hash prefix in the file name."""
    model = PRETRAINED[name]
    prefix = model.hash_prefix
    url = model.url.replace(prefix, sha256_of(path)[:len(prefix)])
    monkeypatch.setitem(PRETRAINED, name, dataclasses.replace(model, url=url))
    return PRETRAINED[name]


@pytest.fixture(scope='module')
def torchvision_exports(offline, tmp_path_factory):
    root = tmp_path_factory.mktemp('torchvision')
    result = {}
    with pytest.MonkeyPatch.context() as mp:
        for i, (name, (builder, _)) in enumerate(TORCHVISION.items()):
            torch.manual_seed(20 + i)
            reference = randomize_batchnorm(builder(weights=None, weights_backbone=None, num_classes=21,
                                                    aux_loss=True), seed=20 + i)
            staged = root / f'{i}.pth'
            torch.save(reference.state_dict(), staged)
            model = published_as(mp, name, staged)
            if 'deeplab' in name:  # from torch's cache
                cached_weights_path(model).parent.mkdir(parents=True, exist_ok=True)
                staged.rename(cached_weights_path(model))
                given = None
            else:
                given = staged
            out = root / f'{i}.onnx'
            export_pretrained(name, out, ExportOptions(input_format='uint8', height=SIZE[0], width=SIZE[1]),
                              checkpoint=given)
            result[name] = (reference, out)
    assert not offline.calls
    return result


@pytest.mark.parametrize('name', list(TORCHVISION))
def test_torchvision_conversion_matches_torchvision(torchvision_exports, name):
    reference, onnx_path = torchvision_exports[name]
    rgb = images(seed=11)
    # torchvision's own preprocessing for these weights, without its resize (the node resizes).
    preprocess = TORCHVISION[name][1].transforms(resize_size=None)
    batch = preprocess(torch.from_numpy(rgb).permute(0, 3, 1, 2))
    with torch.no_grad():
        expected = reference(batch)['out'].numpy()
    assert_logits_match(onnx_logits(onnx_path, rgb), expected)
    spec = load_model(ModelRequest(str(onnx_path), config=EngineConfig(providers=('cpu',)))).engine.spec
    assert spec.classes == VOC_CLASSES and spec.palette == VOC_PALETTE
    assert list(TORCHVISION[name][1].meta['categories'][1:]) == [
        c.replace(' ', '') for c in VOC_CLASSES[1:]], 'VOC names out of torchvision\'s order'


# ---------------------------------------------------------------------------------------------
# Where the weights come from (network blocked)

def test_a_cached_file_is_used_and_nothing_is_downloaded(offline):
    model = PRETRAINED['mmseg:fcn_r50-d8_cityscapes']
    cached = cached_weights_path(model)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b'stand-in')
    calls = len(offline.calls)
    try:
        assert resolve_weights(model) == cached
        assert cached.name == 'fcn_r50-d8_512x1024_80k_cityscapes_20200606_113019-03aa804d.pth'
        assert str(cached).startswith(str(torch.hub.get_dir()))
        assert len(offline.calls) == calls
    finally:
        cached.unlink()


def test_offline_with_nothing_cached_says_what_file_to_put_where(offline):
    model = PRETRAINED['torchvision:fcn_resnet50']
    with pytest.raises(PretrainedError) as err:
        resolve_weights(model)
    text = str(err.value)
    assert f'put fcn_resnet50_coco-1167a1af.pth (from {model.url}) in {cached_weights_path(model).parent}' in text
    assert '\n' not in text
    # It tried the download first, into the cache, with the hash prefix torchvision's builders check.
    assert offline.calls[-1] == (model.url, str(cached_weights_path(model)), '1167a1af')
    with pytest.raises(PretrainedError, match=r'checkpoint /nonexistent\.pth does not exist'):
        resolve_weights(model, '/nonexistent.pth')


def test_a_download_lands_in_the_cache(monkeypatch, offline):
    model = PRETRAINED['mmseg:pspnet_r50-d8_cityscapes']

    def download(url, dst, hash_prefix=None, progress=True):
        assert (url, hash_prefix) == (model.url, None)  # mmseg's name hash is not of the published file
        open(dst, 'wb').write(b'downloaded')  # noqa: SIM115

    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    path = resolve_weights(model)
    try:
        assert path == cached_weights_path(model) and path.read_bytes() == b'downloaded'
    finally:
        path.unlink()


# ---------------------------------------------------------------------------------------------
# Wrong checkpoints: one sentence naming the file

@pytest.fixture(scope='module')
def fcn_checkpoint(tmp_path_factory):
    """An mmseg-layout FCN checkpoint with our network's names and shapes (no mmseg needed).

    Every tensor is one zero expanded to its shape: torch.save keeps the one-element storage, so
    the file is small and quick, and reads back with the full shapes the checks look at.
    """
    with torch.device('meta'):
        shapes = {k: v.shape for k, v in MMSegNetwork('fcn', 19).state_dict().items()}
    state = {k: torch.zeros((), dtype=torch.int64 if k.endswith('num_batches_tracked') else torch.float32)
             .expand(shape) for k, shape in shapes.items()}
    return save_mmseg_checkpoint(tmp_path_factory.mktemp('wrong') / 'fcn_r50-d8.pth', state)


def one_sentence(err, path):
    text = str(err.value)
    assert str(path) in text and '\n' not in text
    return text


def test_a_checkpoint_of_another_architecture_is_refused(fcn_checkpoint):
    with pytest.raises(PretrainedError) as err:
        load_pretrained(PRETRAINED['mmseg:deeplabv3_r50-d8_cityscapes'], fcn_checkpoint)
    assert 'does not fit mmseg:deeplabv3_r50-d8_cityscapes: missing key decode_head.image_pool.1.conv.weight' \
        in one_sentence(err, fcn_checkpoint)
    state = torch.load(fcn_checkpoint, weights_only=True)['state_dict']
    state['decode_head.conv_seg.weight'] = torch.zeros(21, 512, 1, 1)  # a 21-class head
    wrong = save_mmseg_checkpoint(fcn_checkpoint.with_name('21.pth'), state)
    with pytest.raises(PretrainedError) as err:
        load_pretrained(PRETRAINED['mmseg:fcn_r50-d8_cityscapes'], wrong)
    assert 'decode_head.conv_seg.weight has shape (21, 512, 1, 1), the network needs (19, 512, 1, 1)' in \
        one_sentence(err, wrong)


def test_a_truncated_checkpoint_is_refused(fcn_checkpoint):
    truncated = fcn_checkpoint.with_name('truncated.pth')
    data = fcn_checkpoint.read_bytes()
    truncated.write_bytes(data[:len(data) * 9 // 10])
    with pytest.raises(PretrainedError) as err:
        load_pretrained(PRETRAINED['mmseg:fcn_r50-d8_cityscapes'], truncated)
    assert 'cannot be read as a PyTorch file' in one_sentence(err, truncated)


def test_a_file_whose_sha256_is_not_the_published_one_is_refused(tmp_path):
    path = tmp_path / 'deeplabv3_resnet50_coco-cd0a2569.pth'
    torch.save({'w': torch.zeros(1)}, path)
    with pytest.raises(PretrainedError) as err:
        load_pretrained(PRETRAINED['torchvision:deeplabv3_resnet50'], path)
    assert (f'is not the published deeplabv3_resnet50_coco-cd0a2569.pth: its SHA-256 starts with '
            f'{sha256_of(path)[:8]}, the published file\'s with cd0a2569') in one_sentence(err, path)


def test_seg_export_pretrained_bad_input(tmp_path, capsys, offline, fcn_checkpoint):
    out = tmp_path / 'm.onnx'
    assert seg_export(['--pretrained', 'mmseg:segformer', '--output', str(out)]) == 1
    assert "unknown pretrained model 'mmseg:segformer'; choose one of torchvision:deeplabv3_resnet50" in \
        capsys.readouterr().err
    assert seg_export(['--output', str(out)]) == 2
    assert 'give a seg_train checkpoint or --pretrained NAME' in capsys.readouterr().err
    assert seg_export(['--checkpoint', str(fcn_checkpoint), 'x.pt', '--output', str(out)]) == 2
    assert '--checkpoint FILE goes with --pretrained NAME' in capsys.readouterr().err
    assert seg_export(['--pretrained', 'torchvision:deeplabv3_resnet50', '--output', str(out)]) == 1
    assert 'put deeplabv3_resnet50_coco-cd0a2569.pth' in capsys.readouterr().err
    assert seg_export(['--pretrained', 'mmseg:deeplabv3_r50-d8_cityscapes', '--checkpoint', str(fcn_checkpoint),
                       '--height', '64', '--output', str(out)]) == 1
    assert 'give both --height and --width' in capsys.readouterr().err
    assert seg_export(['--pretrained', 'mmseg:deeplabv3_r50-d8_cityscapes', '--checkpoint', str(fcn_checkpoint),
                       '--output', str(out)]) == 1
    assert f'checkpoint {fcn_checkpoint} does not fit' in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# seg_eval on the Cityscapes layout vs mmsegmentation's own predictions

def write_cityscapes(root, rgb, label_ids):
    for i, (image, ids) in enumerate(zip(rgb, label_ids, strict=True)):
        stem = f'lindau_{i:06d}_000019'
        for folder, name, data in (('leftImg8bit', f'{stem}_leftImg8bit.png', image[..., ::-1]),
                                   ('gtFine', f'{stem}_gtFine_labelIds.png', ids)):
            (root / folder / 'val' / 'lindau').mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / folder / 'val' / 'lindau' / name), np.ascontiguousarray(data))


@needs_mmseg
def test_seg_eval_on_cityscapes_layout_scores_what_mmsegmentation_predicts(mmseg_exports, tmp_path):
    from mmseg.evaluation.metrics import IoUMetric
    from mmseg.structures import SegDataSample

    reference, _, onnx_path = mmseg_exports['deeplab']
    rgb = images(seed=12, n=3)
    # mmsegmentation's own inference path: its preprocessing, whole-image test mode, argmax.
    samples = [SegDataSample(metainfo={'img_shape': SIZE, 'ori_shape': SIZE}) for _ in rgb]
    inputs = [torch.from_numpy(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1))) for image in rgb]
    with torch.no_grad():
        predicted = reference.test_step({'inputs': inputs, 'data_samples': samples})
    reference_masks = np.stack([s.pred_sem_seg.data[0].numpy() for s in predicted])
    # Ground truth: the reference's prediction with a third of the pixels changed to another of its
    # classes or to ignored ids.
    rng = np.random.default_rng(3)
    choices = np.append(np.unique(reference_masks), 255)
    train_ids = np.where(rng.random(reference_masks.shape) < 0.33,
                         rng.choice(choices, reference_masks.shape), reference_masks)
    to_label_id = np.vectorize(TRAIN_ID_TO_CITYSCAPES_ID.__getitem__)
    write_cityscapes(tmp_path / 'cityscapes', rgb, to_label_id(train_ids).astype(np.uint8))
    metrics = tmp_path / 'metrics.json'
    assert seg_eval([str(onnx_path), '--data', str(tmp_path / 'cityscapes'), '--format', 'cityscapes',
                     '--masks', str(tmp_path / 'masks'), '--mask-format', 'gray', '--json', str(metrics)]) == 0
    ours = np.stack([cv2.imread(str(tmp_path / 'masks' / f'lindau_{i:06d}_000019_leftImg8bit_mask.png'),
                                cv2.IMREAD_GRAYSCALE) for i in range(len(rgb))])
    assert (ours == reference_masks).mean() >= 0.999
    areas = [IoUMetric.intersect_and_union(torch.from_numpy(p), torch.from_numpy(t), 19, 255)
             for p, t in zip(reference_masks, train_ids, strict=True)]
    totals = [sum(a[k] for a in areas) for k in range(4)]
    expected = IoUMetric.total_area_to_metrics(*totals, metrics=['mIoU'])
    scores = json.loads(metrics.read_text())
    assert abs(scores['validation:mIOU'] - np.nanmean(np.asarray(expected['IoU']))) < 2e-3
    assert abs(scores['validation:pixel_accuracy'] - float(expected['aAcc'])) < 2e-3
    assert 0.3 < scores['validation:mIOU'] < 0.95  # neither trivial nor perfect


def test_pretrained_table_matches_torchvision():
    for name, (_, weights) in TORCHVISION.items():
        model = pretrained_module.get_pretrained(name)
        assert model.url == weights.url and model.classes.num_classes == len(weights.meta['categories'])
        assert f'{weights.meta["_metrics"]["COCO-val2017-VOC-labels"]["miou"]} mIoU' in model.published


def test_voc_palette_is_the_voc_colour_map():
    def colour(label):  # VOC's colour map: bits of the label id spread over R, G, B from the high bit down
        rgb = [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((label >> channel) & 1) << shift
            label >>= 3
        return tuple(rgb)
    assert tuple(colour(i) for i in range(21)) == VOC_PALETTE


# ---------------------------------------------------------------------------------------------
# The converted Cityscapes DeepLabV3 in seg_node over DDS

CAMERA = '/cam_front/image_raw'
LABELS_TYPE = camera_io.LabelInfo or String  # vision_msgs/LabelInfo where installed, else JSON


@pytest.mark.dds
@needs_mmseg
def test_converted_deeplabv3_segments_camera_frames_in_the_node_over_dds(mmseg_exports):
    converted = mmseg_exports['deeplab'][2]
    process = NodeProcess({'model_path': converted, 'image_topics': [CAMERA], 'providers': ['cpu'],
                           'input_reliability': 'reliable', 'input_depth': 5})
    client = BackgroundNode('pretrained_test_client')
    masks, labels = {}, []
    node = client.node
    publisher = node.create_publisher(Image, CAMERA, qos('reliable', 5))
    subscriptions = [
        node.create_subscription(Image, '/cam_front/segmentation/mask',
                                 lambda m: masks.__setitem__(m.header.stamp.sec, m), qos('reliable', 5)),
        node.create_subscription(LABELS_TYPE, '/cam_front/segmentation/labels', labels.append,
                                 qos('reliable', 1, latched=True)),
    ]
    try:
        process.wait_ready(timeout=60)
        assert wait_for(lambda: publisher.get_subscription_count() > 0 and
                        all(s.get_publisher_count() > 0 for s in subscriptions), 30), 'no discovery'
        rgb, _ = render_scene(1, height=120, width=256)
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=rgb.shape[1] * 3,
                    data=rgb.tobytes())
        msg.header.stamp.sec, msg.header.frame_id = 42, 'front_optical'

        def answered():
            if 42 not in masks:
                publisher.publish(msg)
            return 42 in masks
        assert wait_for(answered, 60, period=1.0), process.output
        got = np.frombuffer(masks[42].data, np.uint8).reshape(rgb.shape[:2])
        engine = load_model(ModelRequest(str(converted), config=EngineConfig(providers=('cpu',)))).engine
        expected = resize_nearest(engine.segment([rgb])[0].class_mask, rgb.shape[:2])
        np.testing.assert_array_equal(got, expected)
        assert len(np.unique(got)) > 1, 'the random-weight model should not predict one class everywhere'
        # The class table comes from the converted file's metadata: Cityscapes names (and colours).
        assert wait_for(lambda: labels, 10)
        if hasattr(labels[-1], 'class_map'):
            assert tuple(c.class_name for c in labels[-1].class_map) == CITYSCAPES_CLASSES
        else:
            table = json.loads(labels[-1].data)['classes']
            assert [(c['name'], tuple(c['color'])) for c in table] == list(
                zip(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, strict=True))
    finally:
        client.close()
        process.stop(signal.SIGKILL)
