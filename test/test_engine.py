"""The engine on known-answer models: every contract form, batching, metadata, errors."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from seg_node.model.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, distinct_palette
from seg_node.model.contract import KEY_CLASSES, KEY_MEAN, KEY_PALETTE, KEY_STD, ModelOverrides, set_metadata
from seg_node.model.known_answer import boundary_mask, palette_classifier, palette_scene
from seg_node.runtime import engine as engine_module
from seg_node.runtime.config import EngineConfig, EngineError
from seg_node.runtime.engine import SegmentationEngine, usable_providers
from seg_node.runtime.loader import LOAD_ERRORS, ModelRequest, load_model
from seg_node.runtime.render import resize_nearest

CPU = EngineConfig(providers=('cpu',))


def engine_for(model, overrides=None):
    return SegmentationEngine(model.SerializeToString(), CPU, overrides)


def assert_segments(engine, seed=0, size=(96, 128), radius=2):
    """Exact away from boundaries; ``radius``: total downscale (frame -> model output)."""
    rgb, label = palette_scene(seed, *size)
    result = engine.segment([rgb], want_confidence=True)[0]
    mask = resize_nearest(result.class_mask, label.shape)
    wrong = (mask != label) & ~boundary_mask(label, radius=radius)
    assert not wrong.any(), f'{wrong.sum()} pixels wrong away from boundaries'
    return result


@pytest.mark.parametrize('input_format', ['float', 'uint8'])
@pytest.mark.parametrize(('output', 'confidence'), [('scores', False), ('class_ids', False),
                                                    ('class_ids', True)])
@pytest.mark.parametrize('downsample', [1, 4])
def test_every_contract_form_gives_the_nearest_palette_colour(input_format, output, confidence, downsample):
    model = palette_classifier(input_format=input_format, output=output, confidence=confidence,
                               downsample=downsample, input_size=(48, 64))
    engine = engine_for(model)
    # Frames are 96x128, the model input 48x64: boundaries move by up to 2 x downsample.
    result = assert_segments(engine, radius=2 * downsample)
    assert result.class_mask.shape == (48 // downsample, 64 // downsample)
    assert result.class_mask.dtype == np.uint8
    has_confidence = output == 'scores' or confidence
    assert engine.has_confidence == has_confidence
    assert (result.confidence is not None) == has_confidence


def test_float16_input_model_is_fed_through_the_same_wrapper():
    model = palette_classifier(input_size=(48, 64))
    # Make the graph input float16 with a Cast back to float for the convolution.
    graph = model.graph
    graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    graph.node.insert(0, helper.make_node('Cast', ['input'], ['input_f32'], to=TensorProto.FLOAT))
    for node in graph.node[1:]:
        node.input[:] = ['input_f32' if n == 'input' else n for n in node.input]
    assert_segments(engine_for(model))


def test_native_size_when_the_model_is_fully_dynamic():
    engine = engine_for(palette_classifier(input_size=None))
    assert engine.spec.input_size is None
    rgb, label = palette_scene(3, 50, 70)
    result = engine.segment([rgb])[0]
    np.testing.assert_array_equal(result.class_mask, label)


def test_frames_of_several_sizes_keep_their_order_in_a_batch():
    engine = engine_for(palette_classifier(input_size=None))
    scenes = [palette_scene(seed, h, w) for seed, (h, w) in enumerate([(40, 60), (32, 32), (40, 60)])]
    results = engine.segment([rgb for rgb, _ in scenes])
    for (_, label), result in zip(scenes, results, strict=True):
        np.testing.assert_array_equal(result.class_mask, label)


@pytest.mark.parametrize('batch', [1, 2])
def test_fixed_batch_models_are_fed_in_chunks(batch):
    engine = engine_for(palette_classifier(input_size=(32, 48), batch=batch))
    assert engine.max_batch == batch
    scenes = [palette_scene(seed, 32, 48) for seed in range(3)]
    results = engine.segment([rgb for rgb, _ in scenes])
    for (_, label), result in zip(scenes, results, strict=True):
        np.testing.assert_array_equal(result.class_mask, label)


def test_metadata_is_read_and_overrides_win():
    engine = engine_for(palette_classifier(input_size=(32, 32)))
    assert engine.spec.classes == CITYSCAPES_CLASSES
    assert engine.spec.palette == CITYSCAPES_PALETTE
    names = [f'c{i}' for i in range(19)]
    overridden = engine_for(palette_classifier(input_size=(32, 32)),
                            ModelOverrides(classes=names, palette=[[1, 2, 3]] * 19, input_size=[32, 32]))
    assert overridden.spec.classes == tuple(names)
    assert overridden.spec.palette[0] == (1, 2, 3)


def test_without_metadata_19_classes_are_cityscapes_and_others_generated():
    plain19 = engine_for(palette_classifier(with_metadata=False, input_size=(16, 16)))
    assert plain19.spec.classes == CITYSCAPES_CLASSES
    assert plain19.spec.mean == (0.485, 0.456, 0.406)
    palette5 = distinct_palette(5)
    plain5 = engine_for(palette_classifier(palette5, with_metadata=False, input_size=(16, 16)))
    assert plain5.spec.classes == tuple(f'class_{i}' for i in range(5))
    assert plain5.spec.palette == tuple(palette5)
    assert len(set(plain5.spec.palette)) == 5


def test_custom_normalization_metadata_is_applied_inside_the_graph():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.5, 1.0)
    model = palette_classifier(mean=mean, std=std, input_size=(48, 64))
    assert json.loads({p.key: p.value for p in model.metadata_props}[KEY_STD]) == list(std)
    assert_segments(engine_for(model))
    # The same model read with the wrong normalization must go wrong: the test can fail.
    set_metadata(model, {KEY_MEAN: '[0.0, 0.0, 0.0]', KEY_STD: '[1.0, 1.0, 1.0]'})
    with pytest.raises(AssertionError):
        assert_segments(engine_for(model))


def _two_inputs():
    model = palette_classifier(input_size=(8, 8))
    model.graph.input.append(helper.make_tensor_value_info('extra', TensorProto.FLOAT, [1]))
    return model


def _with_input(elem, dims):
    model = palette_classifier(input_size=(8, 8))
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info('input', elem, dims))
    return model


def _with_output(elem, dims):
    model = palette_classifier(input_size=(8, 8))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info('scores', elem, dims))
    return model


def _with_meta(key, value, model=None):
    model = model or palette_classifier(input_size=(8, 8))
    set_metadata(model, {key: value})
    return model


CONTRACT_ERRORS = [
    (_two_inputs, 'exactly one input tensor, it has 2'),
    (lambda: _with_input(TensorProto.FLOAT, [1, 3, 8]), 'must have rank 4'),
    (lambda: _with_input(TensorProto.FLOAT, [1, 4, 8, 8]), 'must be [N,3,H,W]'),
    (lambda: _with_input(TensorProto.UINT8, [1, 8, 8, 4]), 'must be [N,H,W,3]'),
    (lambda: _with_input(TensorProto.INT32, [1, 3, 8, 8]), 'has type INT32'),
    (lambda: _with_output(TensorProto.FLOAT, [1, 19]), 'expected float scores [N,C,h,w] or integer'),
    (lambda: _with_output(TensorProto.FLOAT, [1, None, 8, 8]), 'fixed class dimension'),
    (lambda: palette_classifier(output='class_ids', with_metadata=False, input_size=(8, 8)),
     'must name its classes'),
    (lambda: _with_meta(KEY_PALETTE, '[[0, 0, 0]]'), 'palette has 1 colours for 19 classes'),
    (lambda: _with_meta(KEY_CLASSES, '["a", "b"]'), '2 class names given for a model that predicts 19'),
    (lambda: _with_meta(KEY_MEAN, '[0.5, 0.5'), 'seg_node.mean is not valid JSON'),
    (lambda: _with_meta(KEY_STD, '[0.2, 0.0, 0.2]'), 'std must be positive'),
    (lambda: _with_meta(KEY_PALETTE, '[[0, 0, 300]]'), 'palette must be a list of [r, g, b]'),
    (lambda: palette_classifier(distinct_palette(300), classes=None, input_size=(8, 8)),
     'predicts 300 classes'),
]


@pytest.mark.parametrize(('make', 'message'), CONTRACT_ERRORS)
def test_models_outside_the_contract_fail_with_one_clear_sentence(make, message):
    with pytest.raises(EngineError, match='does not meet the model contract') as info:
        engine_for(make())
    assert message in str(info.value)
    assert '\n' not in str(info.value)


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(LOAD_ERRORS, match=r"model file '.*nope\.onnx' does not exist"):
        load_model(ModelRequest(str(tmp_path / 'nope.onnx'), config=CPU))
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not a protobuf at all')
    with pytest.raises(EngineError, match='is not a valid ONNX file'):
        load_model(ModelRequest(str(bad), config=CPU))


def test_provider_selection_follows_the_machine(gpu_present, tmp_path):
    assert usable_providers(['tensorrt', 'cuda', 'cpu'])[-1] == 'cpu'
    config = EngineConfig(trt_cache_dir=str(tmp_path / 'trt'))
    engine = SegmentationEngine(palette_classifier(input_size=(8, 8)).SerializeToString(), config)
    if not gpu_present:  # only the CPU can run it
        assert engine.provider == 'cpu'
    else:  # with a GPU, the first provider whose libraries load on this machine
        assert engine.provider == usable_providers(['tensorrt', 'cuda', 'cpu'])[0]
    with pytest.raises(EngineError, match="unknown execution provider 'openvino'"):
        usable_providers(['openvino'])


def test_gpu_only_provider_list_fails_clearly_without_a_gpu(monkeypatch):
    monkeypatch.setattr(engine_module, '_cuda_driver_present', lambda: False)  # any machine, GPU or not
    with pytest.raises(EngineError, match=r"none of the execution providers \['cuda'\] can run"):
        SegmentationEngine(palette_classifier(input_size=(8, 8)).SerializeToString(),
                           EngineConfig(providers=('cuda',)))


def test_wrapped_model_takes_uint8_and_returns_one_byte_per_pixel():
    engine = engine_for(palette_classifier(input_size=(16, 16)))
    for session in (engine.session, engine.confidence_session()):
        assert [(i.name, i.type) for i in session.get_inputs()] == [('image', 'tensor(uint8)')]
    # Masks come from a graph without the confidence branch (ONNX Runtime would compute it anyway).
    assert {o.name: o.type for o in engine.session.get_outputs()} == {'class_mask': 'tensor(uint8)'}
    outputs = {o.name: o.type for o in engine.confidence_session().get_outputs()}
    assert outputs == {'class_mask': 'tensor(uint8)', 'confidence': 'tensor(uint8)'}


def test_saved_model_file_round_trip(tmp_path):
    path = tmp_path / 'm.onnx'
    onnx.save(palette_classifier(input_size=(32, 32)), path)
    assert_segments(load_model(ModelRequest(str(path), config=CPU)).engine, size=(32, 32))
