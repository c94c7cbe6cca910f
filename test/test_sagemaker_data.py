"""SageMaker data moves over unchanged: indexed (palette) PNG annotations and label maps as AWS defines them.

The label-map cases are AWS's own examples from the SageMaker developer guide's "Semantic
Segmentation Algorithm" page (input/output interface): ``{"scale": "3"}`` maps encoded [0, 3, 6] to
[0, 1, 2]; ``{"map": {"0": 5, "1": 0, "2": 2}}`` maps encoded [0, 5, 2] to [1, 0, 2].
"""

import json

import cv2
import numpy as np
import pytest

from seg_node.training.datasets import DatasetError, get_dataset, read_label_map
from seg_node.training.png import encode_indexed_png, read_label_image, write_indexed_png

PIL = pytest.importorskip('PIL.Image')


def voc_palette():
    """PASCAL VOC's colour map (bit-interleaved class index), 256 entries; 255 is the cream 'void' border."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append((r, g, b))
    return palette


def save_palette_png(path, indices, palette, **options):
    image = PIL.fromarray(indices, 'P')
    image.putpalette([v for colour in palette for v in colour])
    image.save(path, **options)


def sagemaker_root(tmp_path, label_writer, encoded, split='train'):
    """One 4x3 image and its annotation written by ``label_writer(path, array)`` in both channels."""
    for channel in ('train', 'validation'):
        (tmp_path / channel).mkdir(exist_ok=True)
        (tmp_path / f'{channel}_annotation').mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / channel / 'a.jpg'), np.full((3, 4, 3), 128, np.uint8))
        label_writer(tmp_path / f'{channel}_annotation' / 'a.png', encoded)
    return tmp_path


def gray_writer(path, array):
    cv2.imwrite(str(path), array)


def write_label_map(root, spec, split='train'):
    (root / 'label_map').mkdir(exist_ok=True)
    path = root / 'label_map' / f'{split}_label_map.json'
    path.write_text(json.dumps(spec))
    return path


# --- indexed (palette) PNG annotations ---------------------------------------------------------------


def test_voc_style_palette_png_reads_as_palette_indices(tmp_path):
    # VOC: class 15 (person) is drawn in (192, 128, 128), the object border is index 255.
    indices = np.array([[0, 15, 15, 255], [0, 15, 255, 3], [20, 20, 255, 3]], np.uint8)
    root = sagemaker_root(tmp_path, lambda p, a: save_palette_png(p, a, voc_palette()), indices)
    _, label = get_dataset(root, split='train', num_classes=21)[0]
    assert label.tolist() == indices.tolist()
    # What OpenCV alone makes of it: colours, three channels, which the loader refused before #19.
    colours = cv2.imread(str(root / 'train_annotation' / 'a.png'), cv2.IMREAD_UNCHANGED)
    assert colours.shape == (3, 4, 3)
    assert colours[0, 1, ::-1].tolist() == [192, 128, 128]


@pytest.mark.parametrize('bits', [1, 2, 4, 8])
def test_every_palette_bit_depth_and_transparency(tmp_path, bits):
    rng = np.random.default_rng(bits)
    indices = rng.integers(0, 2 ** bits, (7, 11)).astype(np.uint8)
    path = tmp_path / 'l.png'
    save_palette_png(path, indices, voc_palette()[:2 ** bits], bits=bits, transparency=0)
    assert path.read_bytes()[24] == bits  # IHDR bit depth: Pillow wrote what was asked
    assert np.array_equal(read_label_image(path), indices)


def test_grayscale_png_reads_as_before(tmp_path):
    values = np.array([[0, 1, 2, 255]] * 3, np.uint8)
    root = sagemaker_root(tmp_path, gray_writer, values)
    _, label = get_dataset(root, split='validation', num_classes=3)[0]
    assert label.tolist() == values.tolist()


def test_written_indexed_png_carries_the_palette_and_reads_back(tmp_path):
    mask = np.random.default_rng(0).integers(0, 19, (33, 47)).astype(np.uint8)
    palette = voc_palette()[:19]
    write_indexed_png(tmp_path / 'm.png', mask, palette)
    image = PIL.open(tmp_path / 'm.png')
    assert image.mode == 'P'
    assert np.array_equal(np.asarray(image), mask)
    assert image.getpalette()[:57] == [v for colour in palette for v in colour]
    assert np.array_equal(read_label_image(tmp_path / 'm.png'), mask)


def test_indexed_png_encoder_rejects_what_it_cannot_write():
    with pytest.raises(ValueError, match=r'an indexed PNG needs a uint8 \[H, W\] mask, got int64 \(2, 2\)'):
        encode_indexed_png(np.zeros((2, 2), np.int64), [(0, 0, 0)])
    with pytest.raises(ValueError, match='a PNG palette holds at most 256 colours, got 300'):
        encode_indexed_png(np.zeros((2, 2), np.uint8), [(0, 0, 0)] * 300)


def test_truncated_palette_png_is_an_unreadable_label(tmp_path):
    indices = np.zeros((3, 4), np.uint8)
    root = sagemaker_root(tmp_path, lambda p, a: save_palette_png(p, a, voc_palette()), indices)
    path = root / 'train_annotation' / 'a.png'
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetError, match=rf'cannot read label {path} \(missing, unreadable or not an image\)'):
        get_dataset(root, split='train', num_classes=3)[0]


def test_rgb_annotation_is_still_refused(tmp_path):
    root = sagemaker_root(tmp_path, gray_writer, np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match=r'a\.png must be a single-channel 8-bit PNG \(grayscale or indexed\)'):
        get_dataset(root, split='train', num_classes=3)[0]


# --- label maps, on AWS's own examples ---------------------------------------------------------------


def test_aws_scale_example(tmp_path):
    root = sagemaker_root(tmp_path, gray_writer, np.array([[0, 3, 6, 0]] * 3, np.uint8))
    write_label_map(root, {'scale': '3'})
    _, label = get_dataset(root, split='train', num_classes=3)[0]
    assert label[0, :3].tolist() == [0, 1, 2]  # encoded_label [0, 3, 6] -> mapped_label [0, 1, 2]


def test_aws_default_label_map_is_scale_1(tmp_path):
    root = sagemaker_root(tmp_path, gray_writer, np.array([[0, 1, 2, 255]] * 3, np.uint8))
    write_label_map(root, {'scale': '1'})
    _, label = get_dataset(root, split='train', num_classes=3)[0]
    assert label[0].tolist() == [0, 1, 2, 255]


@pytest.mark.parametrize('writer', [gray_writer, lambda p, a: save_palette_png(p, a, voc_palette())],
                         ids=['grayscale', 'indexed'])
def test_aws_map_example_reads_keys_as_classes(tmp_path, writer):
    # AWS: {"map": {"0": 5, "1": 0, "2": 2}} turns encoded [0, 5, 2] into [1, 0, 2]: the key is
    # the class and the value the pixel value that encodes it (key = pixel value would give [5, ?, 2]).
    root = sagemaker_root(tmp_path, writer, np.array([[0, 5, 2, 255]] * 3, np.uint8))
    write_label_map(root, {'map': {'0': 5, '1': 0, '2': 2}})
    _, label = get_dataset(root, split='train', num_classes=3)[0]
    assert label[0, :3].tolist() == [1, 0, 2]
    assert label[0, 3] == 255  # 255 stays "ignore"


def test_map_reading_is_logged(tmp_path):
    root = sagemaker_root(tmp_path, gray_writer, np.array([[0, 5, 2, 0]] * 3, np.uint8))
    path = write_label_map(root, {'map': {'0': 5, '1': 0, '2': 2}})
    assert get_dataset(root, split='train', num_classes=3).note == (
        f"label map {path}: 3 classes, keys read as class ids and values as pixel values (AWS's reading)")


def test_map_values_may_be_strings_and_the_opposite_reading_must_be_asked_for(tmp_path):
    path = tmp_path / 'm.json'
    path.write_text(json.dumps({'map': {'0': '5', '1': '0', '2': '2'}}))
    table = read_label_map(path, 3).table
    assert table[[0, 5, 2]].tolist() == [1, 0, 2]
    path.write_text(json.dumps({'map': {'0': 5, '1': 0, '2': 2}, 'keys': 'pixel_value'}))
    table = read_label_map(path, 6).table
    assert table[[0, 1, 2, 3]].tolist() == [5, 0, 2, 255]


@pytest.mark.parametrize(('content', 'message'), [
    ('{"map": ', 'cannot read label map {path}: Expecting value'),
    ('[1, 2]', r'label map {path} must hold \{{"scale": N\}} or \{{"map": \{{...\}}\}}'),
    ('{"map": {"0": 1}, "scale": "1"}', r'label map {path} must hold \{{"scale": N\}} or'),
    ('{"scale": "1", "offset": 2}', r"label map {path} has unknown keys \['offset'\]: it holds \"scale\""),
    ('{"map": {}}', 'label map {path}: "map" must be a non-empty object of class id -> pixel value'),
    ('{"map": {"0": 1}, "keys": "colour"}', r'label map {path}: "keys" must be one of \(\'class\', \'pixel_value\'\)'),
    ('{"map": {"3": 1}}', r"label map {path}: key '3' is not a class id 0\.\.2 \(map keys are class ids"),
    ('{"map": {"x": 1}}', r"label map {path}: key 'x' is not a class id 0\.\.2"),
    ('{"map": {"0": 255}}', r'label map {path}: class 0 has value 255, which is not a pixel value 0\.\.254'),
    ('{"map": {"0": 1.5}}', r'label map {path}: class 0 has value 1\.5, which is not a pixel value'),
    ('{"map": {"0": 7, "2": 7}}', 'label map {path}: pixel value 7 is given to both class 0 and class 2'),
    ('{"map": {"0": 300}, "keys": "pixel_value"}', r"label map {path}: entry '0': 300 is not value 0\.\.255"),
    ('{"scale": "zero"}', 'label map {path}: scale must be a positive integer'),
])
def test_bad_label_maps_are_one_sentence_naming_the_file(tmp_path, content, message):
    path = tmp_path / 'train_label_map.json'
    path.write_text(content)
    with pytest.raises(DatasetError, match=message.format(path=path)):
        read_label_map(path, 3)


def test_scaled_value_beyond_num_classes_names_the_label(tmp_path):
    root = sagemaker_root(tmp_path, gray_writer, np.array([[0, 3, 9, 0]] * 3, np.uint8))
    write_label_map(root, {'scale': 3})
    with pytest.raises(DatasetError, match=r'has values \[9\] that are neither a pixel value 0\.\.8 \(class = '
                                           r'value // 3\) nor 255'):
        get_dataset(root, split='train', num_classes=3)[0]
