"""Property tests (hypothesis): image conversion and the node's input path, for any frame.

Every frame is either converted/segmented correctly or rejected with ImageConversionError and a
reason; no other exception escapes; good frames between bad ones still come out right.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import FRONT, LEFT, compressed_msg, image_msg, node_in_process, png_msg, save_model
from sensor_msgs.msg import Image

from seg_node.model.known_answer import palette_scene
from seg_node.msg.image import ImageConversionError, compressed_to_rgb, encode_compressed, image_to_rgb
from seg_node.ros.harness import wait_for

# Modest example counts: the suite runs on 2 cores next to DDS tests.
FAST = settings(max_examples=60, deadline=None, print_blob=True)
NODE = settings(max_examples=25, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

EIGHT_BIT = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}
SIXTEEN_BIT = {'rgb16': 3, 'bgr16': 3, 'rgba16': 4, 'bgra16': 4, 'mono16': 1}
REP118 = [*EIGHT_BIT, *SIXTEEN_BIT, '8UC1', '8UC3', '8UC4', '16UC1', '16UC3', '32FC1', '64FC1', '8SC1',
          '16SC1', 'bayer_rggb8', 'bayer_bggr8', 'bayer_gbrg8', 'bayer_grbg8', 'bayer_rggb16',
          'yuv422', 'yuv422_yuy2', 'uyvy', 'yuyv', 'nv12', 'nv21']

sizes = st.integers(1, 12)
paddings = st.integers(0, 7)


def rgb_of(encoding, pixels):
    """The RGB a reader must produce from 8-bit ``pixels`` of ``encoding`` (independent of conversion.py)."""
    if encoding == 'mono8':
        return np.repeat(pixels[..., None], 3, axis=2)
    rgb = pixels[..., :3]
    return rgb[..., ::-1] if encoding.startswith('bgr') else rgb


def assert_rgb_or_rejected(convert, msg, height=None, width=None):
    """``convert(msg)`` gives an RGB uint8 frame (of the header's size) or ImageConversionError."""
    try:
        rgb, reason = convert(msg), None
    except ImageConversionError as err:
        rgb, reason = None, str(err)
    if rgb is None:
        assert reason, 'a rejection must carry a reason'
        return None
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    if height is not None:
        assert rgb.shape[:2] == (height, width)
    return rgb


# -- conversion ---------------------------------------------------------------------------------

@FAST
@given(encoding=st.sampled_from(sorted(EIGHT_BIT)), height=sizes, width=sizes, padding=paddings,
       extra=st.integers(0, 9), data=st.data())
def test_eight_bit_frames_convert_exactly_whatever_the_padding_and_trailing_bytes(
        encoding, height, width, padding, extra, data):
    channels = EIGHT_BIT[encoding]
    shape = (height, width, channels) if channels > 1 else (height, width)
    pixels = data.draw(st.binary(min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    pixels = np.frombuffer(pixels, np.uint8).reshape(shape)
    msg = image_msg(pixels, 0, encoding=encoding, padding=padding)
    msg.data = bytes(msg.data) + b'\x7f' * extra  # oversized: bytes past step*height are ignored
    np.testing.assert_array_equal(image_to_rgb(msg), rgb_of(encoding, pixels))


@FAST
@given(encoding=st.sampled_from(sorted(SIXTEEN_BIT)), height=sizes, width=sizes, padding=paddings,
       seed=st.integers(0, 2**16))
def test_sixteen_bit_frames_read_the_same_in_either_byte_order(encoding, height, width, padding, seed):
    channels = SIXTEEN_BIT[encoding]
    shape = (height, width, channels) if channels > 1 else (height, width)
    eight = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    wide = eight.astype(np.uint16) * 257  # 8-bit v as 16-bit v*257: exactly v after scaling
    little = image_to_rgb(image_msg(wide, 0, encoding=encoding, padding=2 * padding))
    big = image_to_rgb(image_msg(wide, 0, encoding=encoding, padding=2 * padding, bigendian=True))
    np.testing.assert_array_equal(little, big)
    expected = rgb_of(encoding.replace('16', '8'), eight)
    np.testing.assert_array_equal(little, expected)


@FAST
@given(encoding=st.sampled_from(REP118), height=sizes, width=sizes, padding=paddings,
       missing=st.integers(1, 64))
def test_data_shorter_than_step_times_height_is_rejected_with_the_sizes(encoding, height, width, padding,
                                                                       missing):
    msg = Image(height=height, width=width, encoding=encoding, step=width * 8 + padding)
    rows = height * 3 // 2 if encoding in ('nv12', 'nv21') else height
    msg.data = b'\0' * max(0, msg.step * rows - missing)
    with pytest.raises(ImageConversionError) as info:
        image_to_rgb(msg)
    assert str(info.value)


@FAST
@given(encoding=st.one_of(st.sampled_from(REP118), st.text(max_size=12)), height=st.integers(0, 9),
       width=st.integers(0, 9), step=st.integers(0, 80), length=st.integers(0, 800),
       bigendian=st.booleans())
def test_any_header_and_data_give_rgb_of_the_header_size_or_a_reason(encoding, height, width, step, length,
                                                                    bigendian):
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=int(bigendian))
    msg.data = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    assert_rgb_or_rejected(image_to_rgb, msg, height, width)


@pytest.fixture(scope='module')
def encoded():
    rgb, _ = palette_scene(3, 20, 28, min_block=4)
    return rgb, {fmt: encode_compressed(rgb, fmt) for fmt in ('png', 'jpeg')}


@FAST
@given(fmt=st.sampled_from(['png', 'jpeg']), fraction=st.floats(0, 0.999))
def test_truncated_compressed_frames_are_rejected(encoded, fmt, fraction):
    data = encoded[1][fmt]
    with pytest.raises(ImageConversionError, match=r'no data|could not be decoded'):
        compressed_to_rgb(compressed_msg(data[:int(len(data) * fraction)], 0, fmt=fmt))


@FAST
@given(fmt=st.sampled_from(['png', 'jpeg']), flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(1, 255)),
                                                             min_size=1, max_size=4))
def test_corrupt_compressed_bytes_decode_to_a_frame_or_are_rejected(encoded, fmt, flips):
    rgb, by_format = encoded
    data = bytearray(by_format[fmt])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    out = assert_rgb_or_rejected(compressed_to_rgb, compressed_msg(bytes(data), 0, fmt=fmt))
    if fmt == 'png' and out is not None:
        # PNG checks a CRC on every chunk: a frame it accepts is the original one.
        np.testing.assert_array_equal(out, rgb)


@FAST
@given(data=st.binary(max_size=300), fmt=st.sampled_from(['png', 'jpeg', 'bmp', '']))
def test_arbitrary_bytes_as_a_compressed_frame_give_a_frame_or_a_reason(data, fmt):
    assert_rgb_or_rejected(compressed_to_rgb, compressed_msg(data, 0, fmt=fmt))


# -- the node's input path ----------------------------------------------------------------------

@pytest.fixture(scope='module')
def run(context, tmp_path_factory):
    # Native frame size, so the mask of a palette-painted frame is exactly its label.
    model = save_model(tmp_path_factory.mktemp('m') / 'palette.onnx')
    with node_in_process(context, model_path=model, image_topics=[FRONT, LEFT]) as harness:
        yield harness


GOOD_RAW = ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'rgb16', 'bgr16', 'rgba16', 'bgra16']


@st.composite
def good_frames(draw, compressed):
    """(make(stamp) -> message, label) of a palette-painted frame in a random form."""
    height, width = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    rgb, label = palette_scene(draw(st.integers(0, 10**6)), height, width, min_block=1)
    if compressed:
        return (lambda stamp: png_msg(rgb, stamp, 'left')), label
    encoding = draw(st.sampled_from(GOOD_RAW))
    pixels = rgb[..., ::-1] if encoding.startswith('bgr') else rgb
    if encoding[3] == 'a':
        pixels = np.dstack([pixels, np.full((height, width), 9, np.uint8)])
    if encoding.endswith('16'):
        pixels = pixels.astype(np.uint16) * 257
    padding, bigendian, extra = draw(st.integers(0, 5)), draw(st.booleans()), draw(st.integers(0, 7))

    def make(stamp):
        msg = image_msg(np.ascontiguousarray(pixels), stamp, 'front', encoding,
                        padding=padding * pixels.itemsize, bigendian=bigendian)
        msg.data = bytes(msg.data) + b'\x55' * extra  # oversized: ignored past step x height
        return msg
    return make, label


def _raw(**fields):
    def make(stamp):
        msg = Image(**{k: v for k, v in fields.items() if k != 'data'})
        msg.header.stamp.sec, msg.header.frame_id = stamp, 'front'
        msg.data = fields['data']
        return msg
    return make


@st.composite
def bad_frames(draw, compressed):
    """make(stamp) -> a message the node must reject."""
    if compressed:
        rgb, _ = palette_scene(1, 8, 8, min_block=2)
        valid = encode_compressed(rgb, draw(st.sampled_from(['png', 'jpeg'])))
        data = draw(st.one_of(st.just(b''), st.binary(max_size=64).filter(lambda b: b[:2] not in (b'\xff\xd8',
                                                                                                   b'\x89P')),
                              st.integers(0, len(valid) - 1).map(lambda n: valid[:n])))
        return lambda stamp: compressed_msg(data, stamp, 'left', fmt='jpeg')
    height, width = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    kind = draw(st.sampled_from(['truncated', 'encoding', 'step', 'empty', 'odd_yuv', 'depth']))
    if kind == 'truncated':
        return _raw(height=height, width=width, encoding='rgb8', step=3 * width,
                    data=b'\0' * draw(st.integers(0, 3 * width * height - 1)))
    if kind == 'encoding':
        name = draw(st.text(min_size=1, max_size=10).filter(lambda s: s not in REP118))
        return _raw(height=height, width=width, encoding=name, step=3 * width, data=b'\0' * 3 * width * height)
    if kind == 'step':
        return _raw(height=height, width=width, encoding='rgb8', step=draw(st.integers(0, 3 * width - 1)),
                    data=b'\0' * 3 * width * height)
    if kind == 'empty':
        return _raw(height=0, width=width, encoding='rgb8', step=3 * width, data=b'')
    if kind == 'odd_yuv':
        return _raw(height=height, width=2 * width + 1, encoding='yuv422', step=4 * width + 2,
                    data=b'\0' * (4 * width + 2) * height)
    return _raw(height=height, width=width, encoding='32FC1', step=4 * width, data=b'\0' * 4 * width * height)


def one_per_camera(messages):
    """Split (topic, msg) pairs, in order, into runs with no camera twice."""
    group = []
    for topic, msg in messages:
        if any(t == topic for t, _ in group):
            yield group
            group = []
        group.append((topic, msg))
    if group:
        yield group


frames = st.lists(st.tuples(st.booleans(), st.booleans(), st.data()), min_size=1, max_size=6)


@NODE
@given(plan=frames)
def test_every_frame_is_segmented_right_or_rejected_with_a_reason(run, plan):
    """Good and bad frames on two cameras, interleaved and batched together."""
    before = {topic: run.totals(topic) for topic in (FRONT, LEFT)}
    stamp0 = max((o.stamp for o in run.recorder.outputs), default=0) + 1000
    expected, rejected = {}, {FRONT: 0, LEFT: 0}
    messages = []
    for i, (good, compressed, data) in enumerate(plan):
        topic = LEFT if compressed else FRONT
        stamp = stamp0 + i
        if good:
            make, label = data.draw(good_frames(compressed))
            expected[topic, stamp] = label
        else:
            make = data.draw(bad_frames(compressed))
            rejected[topic] += 1
        messages.append((topic, make(stamp)))
    # Send as many frames at once as there are cameras: the worker batches what waits together,
    # and with at most one frame per camera in flight the latest-frame policy never drops one.
    for group in one_per_camera(messages):
        for topic, msg in group:
            run.send(topic, msg)
        for topic, _ in group:
            assert wait_for(lambda t=topic: run.settled(t), 10), run.totals(topic)
    for topic in (FRONT, LEFT):
        outputs = {s: o for s, o in run.recorder.by_stamp(topic).items() if s >= stamp0}
        assert sorted(outputs) == sorted(s for t, s in expected if t == topic)
        for stamp, output in outputs.items():
            np.testing.assert_array_equal(output.mask, expected[topic, stamp])
            assert output.frame_id == ('left' if topic == LEFT else 'front')
        after = run.totals(topic)
        assert after['rejected'] - before[topic]['rejected'] == rejected[topic]
        assert after['dropped'] == before[topic]['dropped'], 'no frame may be dropped here'
    assert run.node.pipeline.unexpected_errors == 0
