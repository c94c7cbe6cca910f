"""seg_eval: engine path = checkpoint path = training's validation, and the CLI's outputs."""

import json

import cv2
import numpy as np
import pytest
import torch
from png_chunks import PALETTE_COLOUR_TYPE, colour_type_and_palette

from seg_node.runtime.config import EngineConfig
from seg_node.runtime.loader import ModelRequest, load_model
from seg_node.runtime.render import resize_nearest
from seg_node.synthetic import write_cityscapes_dataset, write_sagemaker_dataset
from seg_node.training.datasets import get_dataset
from seg_node.training.evaluate import OutputOptions, evaluate_model, main
from seg_node.training.export import ExportOptions, export_checkpoint
from seg_node.training.hyperparameters import Hyperparameters, RunConfig
from seg_node.training.png import read_label_image
from seg_node.training.train import train

torch.set_num_threads(2)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A briefly trained model, its SageMaker-layout data and its ONNX export (uint8, argmax)."""
    root = tmp_path_factory.mktemp('eval')
    data = write_sagemaker_dataset(root / 'data', n_train=8, n_val=4, width=96, height=48, seed=5)
    hp = Hyperparameters(num_classes=19, use_pretrained_model=False, output_stride=16, workers=0,
                         epochs=1, mini_batch_size=4, base_size=96, crop_size=48, optimizer='adamw',
                         learning_rate=0.002, head_lr_mult=1.0, eval_size=[48, 96])
    hp.validate()
    best = train(RunConfig(data=data, output=root / 'run', hp=hp))
    onnx_path = root / 'model.onnx'
    export_checkpoint(root / 'run' / 'model_best.pt', onnx_path,
                      ExportOptions(input_format='uint8', argmax=True, height=48, width=96))
    return {'data': data, 'best': best, 'checkpoint': root / 'run' / 'model_best.pt', 'onnx': onnx_path}


def test_training_engine_and_checkpoint_report_the_same_miou(run):
    engine = evaluate_model(run['onnx'], run['data'])
    checkpoint = evaluate_model(run['checkpoint'], run['data'])
    assert engine.frames == checkpoint.frames == 4
    assert engine.matrix.compute().mean_iou == pytest.approx(run['best']['validation:mIOU'], abs=2e-3)
    assert checkpoint.matrix.compute().mean_iou == pytest.approx(run['best']['validation:mIOU'], abs=1e-6)
    differing = np.abs(engine.matrix.mat - checkpoint.matrix.mat).sum() / 2
    assert differing / checkpoint.matrix.mat.sum() < 1e-3


def test_engine_metrics_equal_a_manual_count(run):
    result = evaluate_model(run['onnx'], run['data'], batch_size=3)
    engine = load_model(ModelRequest(str(run['onnx']), config=EngineConfig(providers=('cpu',)))).engine
    dataset = get_dataset(run['data'], split='validation', num_classes=19)
    tp, union, correct, total = np.zeros(19), np.zeros(19), 0, 0
    for i in range(len(dataset)):
        image, label = dataset.read(i)
        pred = resize_nearest(engine.segment([image])[0].class_mask, label.shape)
        valid = label != 255
        for c in range(19):
            t, p = (label == c) & valid, (pred == c) & valid
            tp[c] += (t & p).sum()
            union[c] += (t | p).sum()
        correct += (pred == label)[valid].sum()
        total += valid.sum()
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    m = result.matrix.compute()
    np.testing.assert_allclose(m.iou, iou)
    assert m.mean_iou == pytest.approx(np.nanmean(iou))
    assert m.pixel_accuracy == pytest.approx(correct / total)


def test_cli_prints_metrics_and_writes_masks_and_json(run, tmp_path, capsys):
    assert main([str(run['onnx']), '--data', str(run['data']), '--masks', str(tmp_path / 'masks'),
                 '--json', str(tmp_path / 'm.json'), '--confusion']) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / 'm.json').read_text())
    assert f'validation:mIOU={saved["validation:mIOU"]:.4f}' in out
    assert 'validation:pixel_accuracy=' in out
    assert 'confusion matrix' in out
    assert 'road' in out
    assert len(saved['confusion_matrix']) == 19
    # SageMaker's image/png answer: an indexed PNG whose palette indices are the class ids.
    colour_type, palette = colour_type_and_palette(tmp_path / 'masks' / 'frame_00000_mask.png')
    assert colour_type == PALETTE_COLOUR_TYPE
    assert palette[:19] == [tuple(c) for c in torch.load(run['checkpoint'], weights_only=False)['palette']]
    mask = read_label_image(tmp_path / 'masks' / 'frame_00000_mask.png')
    assert mask.shape == (48, 96)
    assert mask.max() < 19
    assert (tmp_path / 'masks' / 'frame_00003_overlay.png').is_file()
    assert f'validation:mIOU_all_classes={saved["validation:mIOU_all_classes"]:.4f}' in out
    assert saved['validation:mIOU'] == saved['validation:mIOU_present_classes']


def test_gray_mask_format_keeps_plain_grayscale_pngs(run, tmp_path):
    evaluate_model(run['onnx'], run['data'], limit=1,
                   outputs=OutputOptions(masks_dir=tmp_path, mask_format='gray'))
    gray = cv2.imread(str(tmp_path / 'frame_00000_mask.png'), cv2.IMREAD_UNCHANGED)
    assert gray.shape == (48, 96)
    indexed = tmp_path / 'indexed'
    evaluate_model(run['onnx'], run['data'], limit=1, outputs=OutputOptions(masks_dir=indexed))
    assert np.array_equal(read_label_image(indexed / 'frame_00000_mask.png'), gray)


def test_bad_output_formats_are_named(run, tmp_path):
    with pytest.raises(ValueError, match=r"mask format must be one of \('indexed', 'gray'\), got 'rgb'"):
        evaluate_model(run['onnx'], run['data'], outputs=OutputOptions(masks_dir=tmp_path, mask_format='rgb'))
    with pytest.raises(ValueError, match=r"probabilities format must be one of \('npy', 'recordio-protobuf'\)"):
        evaluate_model(run['onnx'], run['data'], outputs=OutputOptions(probabilities_format='pb'))
    with pytest.raises(ValueError, match=r"miou classes must be one of \('present', 'all'\), got 'seen'"):
        evaluate_model(run['onnx'], run['data'], miou_classes='seen')


def test_cityscapes_layout(run, tmp_path):
    root = write_cityscapes_dataset(tmp_path, n_train=1, n_val=2, width=96, height=48)
    assert evaluate_model(run['onnx'], root, fmt='cityscapes').frames == 2


def test_cli_errors(run, tmp_path, capsys):
    assert main([str(tmp_path / 'missing.onnx'), '--data', str(run['data'])]) == 1
    assert 'missing.onnx' in capsys.readouterr().err
    assert main([str(run['onnx']), '--data', str(tmp_path)]) == 1
    assert f'dataset folder {tmp_path / "validation"} does not exist' in capsys.readouterr().err
