"""Dataset layouts, label maps and clear errors for bad data (each naming the file)."""

import json

import cv2
import numpy as np
import pytest

from seg_node.model.classes import CAMVID_CLASSES, CITYSCAPES_CLASSES
from seg_node.synthetic import (
    dataset_frame,
    render_scene,
    write_camvid_dataset,
    write_cityscapes_dataset,
)
from seg_node.training.datasets import DatasetError, class_table, get_dataset


def _write_pair(root, split, name, image, label):
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f'{split}_annotation').mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / split / f'{name}.png'), image)
    if label is not None:
        cv2.imwrite(str(root / f'{split}_annotation' / f'{name}.png'), label)


@pytest.fixture
def sagemaker_root(tmp_path):
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 2] = 200  # BGR on disk: red
    label = np.array([[0, 1, 2, 255, 0, 1]] * 4, np.uint8)
    for split in ('train', 'validation'):
        _write_pair(tmp_path, split, 'a', image, label)
    return tmp_path


def test_sagemaker_layout_reads_rgb_and_labels(sagemaker_root):
    ds = get_dataset(sagemaker_root, split='validation', num_classes=3)
    image, label = ds[0]
    assert image.shape == (4, 6, 3)
    assert image[0, 0].tolist() == [200, 0, 0]  # RGB
    assert label[0].tolist() == [0, 1, 2, 255, 0, 1]


def test_label_map_scale(sagemaker_root):
    label = np.array([[0, 3, 6, 7, 255, 5]] * 4, np.uint8)
    cv2.imwrite(str(sagemaker_root / 'train_annotation' / 'a.png'), label)
    (sagemaker_root / 'label_map').mkdir()
    (sagemaker_root / 'label_map' / 'train_label_map.json').write_text(json.dumps({'scale': '3'}))
    _, mapped = get_dataset(sagemaker_root, split='train', num_classes=3)[0]
    assert mapped[0].tolist() == [0, 1, 2, 2, 255, 1]


def test_label_map_keyed_by_pixel_value_on_request_ignores_unlisted_values(sagemaker_root):
    # seg_train's reading before #19, now only when the file says so ("keys": "pixel_value").
    (sagemaker_root / 'label_map').mkdir()
    (sagemaker_root / 'label_map' / 'validation_label_map.json').write_text(
        json.dumps({'map': {'0': 2, '1': 0}, 'keys': 'pixel_value'}))
    _, mapped = get_dataset(sagemaker_root, split='validation', num_classes=3)[0]
    assert mapped[0].tolist() == [2, 0, 255, 255, 2, 0]


def test_label_map_keyed_by_class_is_the_default(sagemaker_root):
    # The same file without "keys": class 0 is pixel value 2, class 1 pixel value 0; pixel value 1
    # is listed nowhere, which is an error naming the file rather than a silent "ignore".
    (sagemaker_root / 'label_map').mkdir()
    (sagemaker_root / 'label_map' / 'validation_label_map.json').write_text(json.dumps({'map': {'0': 2, '1': 0}}))
    ds = get_dataset(sagemaker_root, split='validation', num_classes=3)
    with pytest.raises(DatasetError, match=r'a\.png has values \[1\] that are neither a pixel value listed in '
                                           r'label map .*validation_label_map\.json nor 255'):
        ds[0]


def test_bad_label_map_names_the_file(sagemaker_root):
    (sagemaker_root / 'label_map').mkdir()
    path = sagemaker_root / 'label_map' / 'train_label_map.json'
    path.write_text('{"scale": "zero"}')
    with pytest.raises(DatasetError, match=rf'label map {path}: scale must be a positive integer'):
        get_dataset(sagemaker_root, split='train', num_classes=3)


def test_missing_label_names_the_image(sagemaker_root):
    _write_pair(sagemaker_root, 'train', 'b', np.zeros((4, 6, 3), np.uint8), None)
    expected = sagemaker_root / 'train_annotation' / 'b.png'
    with pytest.raises(DatasetError, match=f'image .*b.png has no label: expected {expected}'):
        get_dataset(sagemaker_root, split='train', num_classes=3)


def test_label_of_wrong_size_names_the_file(sagemaker_root):
    cv2.imwrite(str(sagemaker_root / 'train_annotation' / 'a.png'), np.zeros((5, 6), np.uint8))
    ds = get_dataset(sagemaker_root, split='train', num_classes=3)
    with pytest.raises(DatasetError, match=r'label .*train_annotation/a.png is 6x5 but image .*a.png'):
        ds[0]


def test_label_value_above_num_classes_names_the_file(sagemaker_root):
    cv2.imwrite(str(sagemaker_root / 'train_annotation' / 'a.png'), np.full((4, 6), 40, np.uint8))
    ds = get_dataset(sagemaker_root, split='train', num_classes=3)
    expected = r'train_annotation/a.png has values \[40\] that are neither a class id \(0..2\) nor 255'
    with pytest.raises(DatasetError, match=expected):
        ds[0]


def test_colour_label_names_the_file(sagemaker_root):
    cv2.imwrite(str(sagemaker_root / 'train_annotation' / 'a.png'), np.zeros((4, 6, 3), np.uint8))
    ds = get_dataset(sagemaker_root, split='train', num_classes=3)
    with pytest.raises(DatasetError, match=r'a\.png must be a single-channel 8-bit PNG'):
        ds[0]


def test_unreadable_image_names_the_file(sagemaker_root):
    (sagemaker_root / 'train' / 'a.png').write_bytes(b'not a png')
    ds = get_dataset(sagemaker_root, split='train', num_classes=3)
    with pytest.raises(DatasetError, match=r'cannot read image .*train/a.png'):
        ds[0]


def test_missing_channel_folder(tmp_path):
    with pytest.raises(DatasetError, match=f'dataset folder {tmp_path / "train"} does not exist'):
        get_dataset(tmp_path, split='train', num_classes=3)


def test_sagemaker_needs_num_classes(sagemaker_root):
    with pytest.raises(DatasetError, match='num_classes is required'):
        get_dataset(sagemaker_root, split='train')


def test_cityscapes_round_trip_gives_train_ids(tmp_path):
    root = write_cityscapes_dataset(tmp_path, n_train=1, n_val=2, width=96, height=48, seed=4)
    ds = get_dataset(root, fmt='cityscapes', split='validation')
    assert len(ds) == 2
    _, label = ds[1]
    _, expected = dataset_frame(9, 1, width=96, height=48)  # validation split seed = 2 * 4 + 1
    assert np.array_equal(label, expected)
    assert class_table('cityscapes', None).names[13] == 'car'


# Cityscapes class -> the CamVid (SegNet 11-class) class it belongs to, written out by name here so the
# test does not read the mapping from the code it checks.
CITYSCAPES_AS_CAMVID = {
    'road': 'road', 'sidewalk': 'sidewalk', 'building': 'building', 'wall': 'building', 'fence': 'fence',
    'pole': 'pole', 'traffic light': 'sign symbol', 'traffic sign': 'sign symbol', 'vegetation': 'tree',
    'terrain': 'tree', 'sky': 'sky', 'person': 'pedestrian', 'rider': 'bicyclist', 'car': 'car',
    'truck': 'car', 'bus': 'car', 'train': 'car', 'motorcycle': 'bicyclist', 'bicycle': 'bicyclist',
}


def test_camvid_round_trip(tmp_path):
    root = write_camvid_dataset(tmp_path, n_train=1, n_val=1, width=96, height=48)
    _, label = get_dataset(root, fmt='camvid', split='validation')[0]
    _, train_ids = dataset_frame(1, 0, width=96, height=48)
    table = np.full(256, 255, np.uint8)
    for train_id, name in enumerate(CITYSCAPES_CLASSES):
        table[train_id] = CAMVID_CLASSES.index(CITYSCAPES_AS_CAMVID[name])
    assert np.array_equal(label, table[train_ids])
    assert set(np.unique(label)) >= {CAMVID_CLASSES.index('road'), CAMVID_CLASSES.index('car')}


def test_render_scene_is_a_valid_sagemaker_sample(tmp_path):
    rgb, label = render_scene(2, width=64, height=32)
    _write_pair(tmp_path, 'train', 'x', rgb[..., ::-1], label)
    image, read = get_dataset(tmp_path, split='train', num_classes=19)[0]
    assert np.array_equal(image, rgb)
    assert np.array_equal(read, label)
