"""SageMaker's metric definition and answer formats: all-classes mIoU, indexed PNG masks, probabilities.

SageMaker's ``validation:mIOU`` comes from GluonCV's ``SegmentationMetric``: per class,
intersection / (eps + union) over the whole validation set, averaged over all classes. Its
endpoint answers ``image/png`` with an indexed PNG of class ids and
``application/x-recordio-protobuf`` with a RecordIO record holding a protobuf ``Record`` whose
features are ``shape`` (int32 ``[1, C, H, W]``) and ``target`` (float32 probabilities).
"""

import json
import struct

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from png_chunks import PALETTE_COLOUR_TYPE, colour_type_and_palette

from seg_node.bag.bagio import BagError, open_bag
from seg_node.bag.label import LabelOptions, label_bag
from seg_node.bag.synth import SynthOptions, write_drive
from seg_node.model.classes import CITYSCAPES_PALETTE
from seg_node.model.known_answer import palette_classifier, palette_scene
from seg_node.msg.image import message_to_rgb
from seg_node.runtime.config import EngineConfig, EngineError
from seg_node.runtime.engine import SegmentationEngine
from seg_node.runtime.metrics import ConfusionMatrix
from seg_node.training.evaluate import OutputOptions, evaluate_model, main, resize_probabilities
from seg_node.training.png import read_label_image
from seg_node.training.sagemaker import all_classes_iou, encode_probabilities, validation_scores

CPU = EngineConfig(providers=('cpu',))


# --- the all-classes mIoU ----------------------------------------------------------------------------


def gluoncv_style_miou(labels, predictions, nclass):
    """GluonCV's SegmentationMetric as its documentation and code describe it, re-derived here.

    Labels and predictions are shifted by one so that ignored pixels (-1, i.e. 255 mapped to -1)
    become 0 and fall outside the histogram range [1, nclass]; predictions on ignored pixels are
    zeroed first. Totals are summed over images, IoU = inter / (eps + union), mean over all classes.
    """
    inter_total, union_total = np.zeros(nclass), np.zeros(nclass)
    for label, pred in zip(labels, predictions, strict=True):
        target = np.where(label == 255, -1, label.astype(np.int64)) + 1
        predict = (pred.astype(np.int64) + 1) * (target > 0)
        intersection = predict * (predict == target)
        area_inter, _ = np.histogram(intersection, bins=nclass, range=(1, nclass))
        area_pred, _ = np.histogram(predict, bins=nclass, range=(1, nclass))
        area_lab, _ = np.histogram(target, bins=nclass, range=(1, nclass))
        inter_total += area_inter
        union_total += area_pred + area_lab - area_inter
    return (inter_total / (np.spacing(1) + union_total)).mean()


def test_all_classes_miou_counts_absent_classes_as_zero():
    m = ConfusionMatrix(4)
    m.update(np.array([0, 0, 1, 255]), np.array([0, 1, 1, 3]))
    # class 0: 1/2, class 1: 1/2, classes 2 and 3 absent from labels and predictions (the 3 is on an ignored pixel)
    mean, iou = all_classes_iou(m)
    assert iou == pytest.approx((0.5, 0.5, 0.0, 0.0))
    assert mean == pytest.approx(0.25)
    scores = validation_scores(m)
    assert scores['validation:mIOU_present_classes'] == pytest.approx(0.5)
    assert scores['validation:mIOU_all_classes'] == pytest.approx(0.25)
    assert scores['validation:mIOU'] == scores['validation:mIOU_present_classes']
    assert validation_scores(m, 'all')['validation:mIOU'] == pytest.approx(0.25)
    assert scores['validation:pixel_accuracy'] == pytest.approx(2 / 3)


@pytest.mark.parametrize('seed', range(4))
def test_all_classes_miou_equals_gluoncvs_computation(seed):
    rng = np.random.default_rng(seed)
    n = 6
    labels = rng.integers(0, n - 1, (3, 20, 30)).astype(np.uint8)  # class 5 never labelled
    labels[rng.random(labels.shape) < 0.1] = 255
    predictions = np.where(rng.random(labels.shape) < 0.7, np.where(labels == 255, 0, labels),
                           rng.integers(0, n - 2, labels.shape)).astype(np.uint8)
    m = ConfusionMatrix(n)
    for label, pred in zip(labels, predictions, strict=True):
        m.update(label, pred)
    assert all_classes_iou(m)[0] == pytest.approx(gluoncv_style_miou(labels, predictions, n), abs=1e-12)


# --- the recordio-protobuf answer --------------------------------------------------------------------


def record_class():
    """SageMaker's ``aialgs.data.Record`` (record.proto in the SageMaker Python SDK), built at run time."""
    file = descriptor_pb2.FileDescriptorProto(name='sagemaker_record_test.proto', package='aialgs.data',
                                              syntax='proto2')
    field = descriptor_pb2.FieldDescriptorProto
    repeated, optional = field.LABEL_REPEATED, field.LABEL_OPTIONAL

    def message(name, fields):
        msg = file.message_type.add(name=name)
        for fname, number, kind, label, type_name in fields:
            entry = msg.field.add(name=fname, number=number, type=kind, label=label)
            if type_name:
                entry.type_name = type_name
            elif label == repeated:
                entry.options.packed = True
        return msg

    for name, kind in (('Float32Tensor', field.TYPE_FLOAT), ('Int32Tensor', field.TYPE_INT32)):
        message(name, [('values', 1, kind, repeated, None), ('keys', 2, field.TYPE_UINT64, repeated, None),
                       ('shape', 3, field.TYPE_UINT64, repeated, None)])
    message('Value', [('float32_tensor', 2, field.TYPE_MESSAGE, optional, '.aialgs.data.Float32Tensor'),
                      ('int32_tensor', 7, field.TYPE_MESSAGE, optional, '.aialgs.data.Int32Tensor')])
    record = message('Record', [('features', 1, field.TYPE_MESSAGE, repeated, '.aialgs.data.Record.FeaturesEntry')])
    entry = record.nested_type.add(name='FeaturesEntry')
    entry.options.map_entry = True
    entry.field.add(name='key', number=1, type=field.TYPE_STRING, label=optional)
    entry.field.add(name='value', number=2, type=field.TYPE_MESSAGE, label=optional, type_name='.aialgs.data.Value')
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName('aialgs.data.Record'))


def decode_answer(data):
    """What SageMaker's example notebook does with the answer: one RecordIO record, then shape and target."""
    magic, length = struct.unpack('<II', data[:8])
    assert magic == 0xCED7230A
    assert len(data) == 8 + length + (-length % 4)  # records are padded to 4 bytes
    record = record_class()()
    record.ParseFromString(data[8:8 + length])
    shape = list(record.features['shape'].int32_tensor.values)
    return np.array(record.features['target'].float32_tensor.values, np.float32).reshape(shape)


@pytest.mark.parametrize('shape', [(3, 5, 7), (19, 2, 1)])
def test_recordio_protobuf_answer_decodes_as_sagemakers(shape):
    probabilities = np.random.default_rng(1).random(shape).astype(np.float32)
    decoded = decode_answer(encode_probabilities(probabilities))
    assert decoded.shape == (1, *shape)
    assert np.array_equal(decoded[0], probabilities)


def test_recordio_protobuf_needs_chw():
    with pytest.raises(ValueError, match=r'probabilities must be \[C, H, W\], got shape \(4, 4\)'):
        encode_probabilities(np.zeros((4, 4)))


# --- per-pixel probabilities from the engine ---------------------------------------------------------


def softmax_of_model(model, batch):
    session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    logits = session.run(None, {session.get_inputs()[0].name: batch})[0].astype(np.float64)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize(('input_format', 'opset', 'batch'), [('uint8', 17, None), ('float', 11, None),
                                                              ('uint8', 13, 2)])
def test_engine_probabilities_are_the_softmax_and_leave_segment_alone(input_format, opset, batch):
    size = (32, 48)
    model = palette_classifier(input_format=input_format, opset=opset, input_size=size if batch else None,
                               batch=batch)
    data = model.SerializeToString()
    engine = SegmentationEngine(data, CPU, name='palette')
    frames = [palette_scene(s, *size)[0] for s in range(3)]
    masks = [r.class_mask for r in engine.segment(frames)]
    probabilities = engine.probabilities(frames, model_bytes=data)
    assert [p.shape for p in probabilities] == [(19, *size)] * 3
    assert all(p.dtype == np.float32 for p in probabilities)
    for frame, mask, p in zip(frames, masks, probabilities, strict=True):
        if input_format == 'uint8':
            expected = softmax_of_model(model, np.repeat(frame[None], batch or 1, axis=0))[0]
            np.testing.assert_allclose(p, expected, atol=1e-5)
        np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
        assert np.array_equal(p.argmax(0), mask)
    assert engine.segment(frames)[0].class_mask.tolist() == masks[0].tolist()  # the fast path is unchanged


def test_engine_probabilities_need_scores(tmp_path):
    data = palette_classifier(output='class_ids').SerializeToString()
    engine = SegmentationEngine(data, CPU, name='ids.onnx')
    with pytest.raises(EngineError, match="model 'ids.onnx': the model outputs class ids, not scores, so it has no "
                                          r'probabilities \(export it without --argmax\)'):
        engine.probabilities([np.zeros((8, 8, 3), np.uint8)], model_bytes=data)


def test_engine_probabilities_read_the_models_file_and_refuse_a_changed_one(tmp_path):
    path = tmp_path / 'm.onnx'
    onnx.save(palette_classifier(), path)
    engine = SegmentationEngine(path.read_bytes(), CPU, name=str(path))
    onnx.save(palette_classifier(palette=CITYSCAPES_PALETTE[::-1]), path)
    with pytest.raises(EngineError, match=f"model '{path}' is not the model this engine runs"):
        engine.probabilities([np.zeros((8, 8, 3), np.uint8)])


# --- seg_eval's SageMaker-format outputs -------------------------------------------------------------


@pytest.fixture(scope='module')
def palette_data(tmp_path_factory):
    """A SageMaker-layout validation set of palette scenes (PNG images) and the exact palette model."""
    root = tmp_path_factory.mktemp('palette')
    for channel in ('train', 'validation'):
        (root / channel).mkdir()
        (root / f'{channel}_annotation').mkdir()
        for i in range(3):
            rgb, label = palette_scene(10 + i, 40, 56)
            cv2.imwrite(str(root / channel / f'f{i}.png'), rgb[..., ::-1])
            cv2.imwrite(str(root / f'{channel}_annotation' / f'f{i}.png'), label)
    model = root / 'palette.onnx'
    onnx.save(palette_classifier(input_format='uint8', input_size=(24, 32)), model)  # resized, as fixed-size models
    return root, model


def test_seg_eval_writes_indexed_masks_and_probabilities(palette_data, tmp_path):
    root, model = palette_data
    for fmt in ('npy', 'recordio-protobuf'):
        outputs = OutputOptions(masks_dir=tmp_path / 'masks', probabilities_dir=tmp_path / fmt,
                                probabilities_format=fmt)
        evaluate_model(model, root, outputs=outputs)
    for i in range(3):
        # An indexed PNG carrying the model's colours, whose palette indices are the class ids.
        colour_type, palette = colour_type_and_palette(tmp_path / 'masks' / f'f{i}_mask.png')
        assert colour_type == PALETTE_COLOUR_TYPE
        assert palette[:19] == [tuple(c) for c in CITYSCAPES_PALETTE]
        mask = read_label_image(tmp_path / 'masks' / f'f{i}_mask.png')
        assert mask.shape == (40, 56)
        saved = np.load(tmp_path / 'npy' / f'f{i}_probabilities.npy')
        assert saved.shape == (19, 40, 56)
        assert np.array_equal(saved.argmax(0), mask)  # the same nearest-neighbour mapping as the mask
        answer = decode_answer((tmp_path / 'recordio-protobuf' / f'f{i}_probabilities.rec').read_bytes())
        assert np.array_equal(answer[0], saved)


def test_seg_eval_cli_names_both_miou_definitions(palette_data, tmp_path, capsys):
    root, model = palette_data
    assert main([str(model), '--data', str(root), '--miou-classes', 'all', '--json', str(tmp_path / 'm.json')]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / 'm.json').read_text())
    assert saved['validation:mIOU'] == saved['validation:mIOU_all_classes'] < saved['validation:mIOU_present_classes']
    for name in ('validation:mIOU', 'validation:mIOU_all_classes', 'validation:mIOU_present_classes'):
        assert f'{name}={saved[name]:.4f}' in out


def test_seg_eval_probabilities_of_a_class_id_model_are_refused(palette_data, tmp_path, capsys):
    root, _ = palette_data
    model = tmp_path / 'ids.onnx'
    onnx.save(palette_classifier(output='class_ids'), model)
    assert main([str(model), '--data', str(root), '--probabilities', str(tmp_path / 'p')]) == 1
    assert 'the model outputs class ids, not scores, so it has no probabilities' in capsys.readouterr().err


def test_resize_probabilities_follows_the_mask_mapping():
    p = np.random.default_rng(0).random((5, 7, 9)).astype(np.float32)
    mask = p.argmax(0).astype(np.uint8)
    big = resize_probabilities(p, (20, 13))
    assert big.shape == (5, 20, 13)
    assert np.array_equal(big.argmax(0), cv2.resize(mask, (13, 20), interpolation=cv2.INTER_NEAREST))


# --- seg_bag label --probabilities -------------------------------------------------------------------


@pytest.fixture(scope='module')
def palette_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp('bag') / 'palette'
    write_drive(path, SynthOptions(cameras=1, frames=3, width=48, height=32, scene='palette'))
    return path


def test_bag_label_writes_probabilities(palette_bag, tmp_path):
    model = tmp_path / 'palette.onnx'
    onnx.save(palette_classifier(), model)
    folder = tmp_path / 'probabilities'
    label_bag(palette_bag, tmp_path / 'out', model, LabelOptions(providers=('cpu',), probabilities_dir=folder))
    files = sorted((folder / 'cam_front_image_raw').glob('*.npy'))
    assert len(files) == 3
    with open_bag(palette_bag) as reader:
        frames = {t: message_to_rgb(reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages()
                  if c.topic == '/cam_front/image_raw'}
    engine = SegmentationEngine(model.read_bytes(), CPU)
    for path in files:
        saved = np.load(path)
        assert saved.shape == (19, 32, 48)
        expected = engine.segment([frames[int(path.stem)]])[0].class_mask
        assert np.array_equal(saved.argmax(0), expected)


def test_bag_label_probabilities_errors(palette_bag, tmp_path):
    ids = tmp_path / 'ids.onnx'
    onnx.save(palette_classifier(output='class_ids'), ids)
    refusal = r'--probabilities: model .*ids\.onnx.*: the model outputs class ids, not scores'
    with pytest.raises(BagError, match=refusal):
        label_bag(palette_bag, tmp_path / 'a', ids, LabelOptions(providers=('cpu',), probabilities_dir=tmp_path / 'p'))
    assert not (tmp_path / 'a').exists()  # refused before anything was written
    scores = tmp_path / 'scores.onnx'
    onnx.save(palette_classifier(), scores)
    busy = tmp_path / 'busy'
    busy.mkdir()
    (busy / 'x.npy').write_bytes(b'')
    with pytest.raises(BagError, match=f"probabilities folder '{busy}' exists and is not empty"):
        label_bag(palette_bag, tmp_path / 'b', scores, LabelOptions(providers=('cpu',), probabilities_dir=busy))
