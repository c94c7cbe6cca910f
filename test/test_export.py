"""seg_export: ONNX Runtime matches PyTorch for every head and input form; metadata reaches the engine."""

import json

import onnx
import pytest
import torch

from seg_node.model.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.loader import ModelRequest, load_model
from seg_node.synthetic.drive import render_scene
from seg_node.training import export as export_module
from seg_node.training.export import ExportError, ExportOptions, export_checkpoint, load_network
from seg_node.training.export_cli import main
from seg_node.training.hyperparameters import Hyperparameters, as_dict
from seg_node.training.models import build_network
from seg_node.training.transforms import to_normalized_tensor

torch.set_num_threads(2)


def _checkpoint(path, algorithm='fcn', *, output_stride=16, decoder='none', **kw):
    torch.manual_seed(0)
    hp = Hyperparameters(algorithm=algorithm, num_classes=19, output_stride=output_stride, decoder=decoder,
                         crop_size=48, **kw)
    model = build_network(algorithm=algorithm, num_classes=19, output_stride=output_stride, aux_loss=True,
                          decoder=decoder)
    # Give BatchNorm non-trivial statistics, as training would.
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, 48, 48))
    torch.save({'model': model.state_dict(), 'hyperparameters': as_dict(hp), 'epoch': 3,
                'classes': list(CITYSCAPES_CLASSES), 'palette': [list(c) for c in CITYSCAPES_PALETTE],
                'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225],
                'metrics': {'validation:mIOU': 0.5, 'validation:pixel_accuracy': 0.9}}, path)
    return path


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp('ckpt')
    paths = {a: _checkpoint(root / f'{a}.pt', a) for a in ('fcn', 'psp', 'deeplab')}
    paths['fcn-skip'] = _checkpoint(root / 'fcn-skip.pt', 'fcn', output_stride=32, decoder='skip')
    return paths


@pytest.mark.parametrize(('algorithm', 'options'), [
    ('fcn', ExportOptions()),
    ('fcn', ExportOptions(input_format='uint8', argmax=True)),
    ('deeplab', ExportOptions(input_format='uint8')),
    ('deeplab', ExportOptions(argmax=True, height=48, width=64)),
    ('psp', ExportOptions()),
    ('psp', ExportOptions(input_format='uint8', argmax=True)),
    ('fcn-skip', ExportOptions(input_format='uint8', argmax=True, height=48, width=96)),
    ('fcn', ExportOptions(input_format='uint8', probabilities=True)),
])
def test_export_matches_pytorch(checkpoints, tmp_path, algorithm, options):
    out = tmp_path / 'm.onnx'
    result = export_checkpoint(checkpoints[algorithm], out, options)
    assert result.argmax_agreement >= 0.999
    if options.argmax:
        assert result.confidence_max_error <= 1  # uint8 rounding
    else:
        assert result.max_relative_error < 1e-4
    model = onnx.load(str(out))
    assert model.opset_import[0].version >= 17
    assert model.ir_version == 10
    inp = model.graph.input[0].type.tensor_type
    uint8 = options.input_format == 'uint8'
    assert inp.elem_type == (onnx.TensorProto.UINT8 if uint8 else onnx.TensorProto.FLOAT)


def test_score_offset_is_part_of_the_exported_graph(tmp_path):
    path = _checkpoint(tmp_path / 'offset.pt', 'fcn', output_stride=32, decoder='skip')
    saved = torch.load(path, weights_only=True)
    saved['model']['score_offset'][7] = 1e4  # traffic sign wins every pixel
    torch.save(saved, path)
    out = tmp_path / 'offset.onnx'
    export_checkpoint(path, out, ExportOptions(input_format='uint8', argmax=True, height=48, width=96))
    engine = load_model(ModelRequest(str(out), config=EngineConfig(providers=('cpu',)))).engine
    image, _ = render_scene(3, width=96, height=48)
    assert (engine.segment([image])[0].class_mask == 7).all()


def test_checkpoint_from_before_the_score_offset_still_exports(tmp_path):
    path = _checkpoint(tmp_path / 'old.pt', 'fcn')
    saved = torch.load(path, weights_only=True)
    del saved['model']['score_offset']
    assert load_network(saved).score_offset.abs().sum() == 0


def test_psp_is_exported_at_a_fixed_size_and_says_so(checkpoints, tmp_path):
    export_checkpoint(checkpoints['psp'], tmp_path / 'p.onnx')
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / 'p.onnx')).metadata_props}
    assert json.loads(meta['seg_node.input_size']) == [48, 48]
    assert meta['seg_node.fixed_input_size'] == 'true'


def test_fp16_export(checkpoints, tmp_path):
    result = export_checkpoint(checkpoints['fcn'], tmp_path / 'h.onnx', ExportOptions(fp16=True))
    assert result.argmax_agreement >= 0.99
    assert result.max_relative_error < 1e-2
    model = onnx.load(str(tmp_path / 'h.onnx'))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_metadata_round_trip_and_engine_agrees_with_pytorch(checkpoints, tmp_path):
    out = tmp_path / 'e.onnx'
    export_checkpoint(checkpoints['deeplab'], out, ExportOptions(input_format='uint8', argmax=True,
                                                                  height=48, width=96))
    engine = load_model(ModelRequest(str(out), config=EngineConfig(providers=('cpu',)))).engine
    spec = engine.spec
    assert spec.classes == CITYSCAPES_CLASSES
    assert spec.palette == CITYSCAPES_PALETTE
    assert spec.input_size == (48, 96)
    assert spec.metadata['seg_node.algorithm'] == 'deeplab'
    assert spec.metadata['seg_node.backbone'] == 'resnet-50'
    assert json.loads(spec.metadata['seg_node.metrics'])['validation:mIOU'] == 0.5
    frame = render_scene(4, width=96, height=48)[0]
    mask = engine.segment([frame])[0].class_mask
    reference = load_network(torch.load(checkpoints['deeplab'], weights_only=True))
    with torch.inference_mode():
        expected = reference(to_normalized_tensor(frame)[None])['out'].argmax(1)[0].numpy()
    assert (mask == expected).mean() >= 0.999


def test_failed_verification_writes_nothing(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setitem(export_module.MIN_AGREEMENT, 'fp32', 1.01)
    out = tmp_path / 'x.onnx'
    with pytest.raises(ExportError, match=r'verification failed: argmax agreement 100\.000 %.*not written'):
        export_checkpoint(checkpoints['fcn'], out)
    assert not out.exists()


def test_cli(checkpoints, tmp_path, capsys):
    assert main([str(checkpoints['fcn']), '--output', str(tmp_path / 'c.onnx'), '--height', '48']) == 1
    assert 'give both --height and --width' in capsys.readouterr().err
    assert main([str(tmp_path / 'missing.pt'), '--output', str(tmp_path / 'c.onnx')]) == 1
    assert 'cannot read checkpoint' in capsys.readouterr().err
    argv = [str(checkpoints['fcn']), '--output', str(tmp_path / 'c.onnx'), '--input-format', 'uint8']
    assert main(argv) == 0
    assert 'verification: argmax agreement 100.000 %' in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(str(tmp_path / 'c.onnx')))


def test_probabilities_export_is_softmax_and_says_so(checkpoints, tmp_path):
    out = tmp_path / 'p.onnx'
    export_checkpoint(checkpoints['fcn'], out, ExportOptions(input_format='uint8', probabilities=True))
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ['probabilities']
    assert {p.key: p.value for p in model.metadata_props}['seg_node.scores'] == 'probabilities'
    engine = load_model(ModelRequest(str(out), config=EngineConfig(providers=('cpu',)))).engine
    frame = render_scene(4, width=64, height=48)[0]
    probabilities = engine.probabilities([frame])[0]
    assert probabilities.shape == (19, 48, 64)
    assert abs(probabilities.sum(0) - 1).max() < 1e-5
    assert (probabilities.argmax(0) == engine.segment([frame])[0].class_mask).all()
    reference = load_network(torch.load(checkpoints['fcn'], weights_only=True))
    with torch.inference_mode():
        expected = reference(to_normalized_tensor(frame)[None])['out'].softmax(1)[0].numpy()
    assert abs(probabilities - expected).max() < 1e-4


def test_argmax_and_probabilities_exclude_each_other(checkpoints, tmp_path, capsys):
    with pytest.raises(ExportError, match=r'choose --argmax \(class ids and confidence\) or --probabilities'):
        export_checkpoint(checkpoints['fcn'], tmp_path / 'x.onnx', ExportOptions(argmax=True, probabilities=True))
    assert main([str(checkpoints['fcn']), '--output', str(tmp_path / 'x.onnx'), '--argmax', '--probabilities']) == 1
    assert 'not both' in capsys.readouterr().err
    assert not (tmp_path / 'x.onnx').exists()
