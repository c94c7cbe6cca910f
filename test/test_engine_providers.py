"""Provider choice without a GPU: the TensorRT engine cache key and the engine's own fallback.

The provider options are computed without a GPU, so the cache key is tested on any machine.
A GPU provider that fails is simulated by a stand-in for ``onnxruntime.InferenceSession`` that
raises (or, like ONNX Runtime when a provider's libraries are missing, silently drops it) and
otherwise runs the real CPU session underneath.
"""

import hashlib
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from seg_node.model.contract import ModelOverrides, read_model_spec
from seg_node.model.known_answer import palette_classifier, palette_scene
from seg_node.model.wrap import wrap_model
from seg_node.runtime import engine as engine_module
from seg_node.runtime.build_engine import main as build_engine
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.engine import SegmentationEngine, _provider_options, usable_providers
from seg_node.runtime.loader import ModelRequest, load_model

REAL_SESSION = ort.InferenceSession


def trt_options(model, overrides=None, **config):
    """The TensorRT provider options the engine would pass for ``model`` (no GPU needed)."""
    spec = read_model_spec(model, overrides)
    wrapped = wrap_model(model, spec).SerializeToString()
    return _provider_options('tensorrt', EngineConfig(**config), spec, hashlib.sha256(wrapped).hexdigest())


def test_the_trt_cache_is_keyed_on_the_wrapped_model_and_the_profile(tmp_path):
    model = palette_classifier(input_size=(32, 48))
    cache = str(tmp_path / 'trt')
    base = trt_options(model, trt_cache_dir=cache)
    folder = base['trt_engine_cache_path']
    assert folder.startswith(cache) and folder.endswith('-fp16')
    assert base['trt_profile_max_shapes'] == 'image:4x32x48x3'
    # An unchanged model gets the same folder again, and the engine in it is kept.
    (tmp_path / 'trt' / folder.rsplit('/', 1)[1] / 'engine').write_text('built')
    again = trt_options(palette_classifier(input_size=(32, 48)), trt_cache_dir=cache)
    assert again['trt_engine_cache_path'] == folder
    assert (tmp_path / 'trt' / folder.rsplit('/', 1)[1] / 'engine').read_text() == 'built'
    # Everything baked into the engine gives a folder of its own ...
    changed = {
        'mean': trt_options(model, ModelOverrides(mean=[0.5, 0.5, 0.5]), trt_cache_dir=cache),
        'std': trt_options(model, ModelOverrides(std=[0.2, 0.2, 0.2]), trt_cache_dir=cache),
        'profile batch': trt_options(model, trt_cache_dir=cache, trt_max_batch=2),
        'precision': trt_options(model, trt_cache_dir=cache, trt_fp16=False),
    }
    folders = {name: options['trt_engine_cache_path'] for name, options in changed.items()}
    assert folder not in folders.values()
    assert len(set(folders.values())) == len(folders), folders
    assert folders['precision'].endswith('-fp32')
    assert changed['profile batch']['trt_profile_max_shapes'] == 'image:2x32x48x3'
    # A dynamic-size model run at another input_size is another profile, so another engine.
    dynamic = palette_classifier(input_size=None)
    sizes = [trt_options(dynamic, ModelOverrides(input_size=size), trt_cache_dir=cache)
             for size in ([32, 48], [64, 96], [32, 48])]
    assert [o['trt_profile_opt_shapes'] for o in sizes] == ['image:4x32x48x3', 'image:4x64x96x3', 'image:4x32x48x3']
    assert sizes[0]['trt_engine_cache_path'] == sizes[2]['trt_engine_cache_path'] != sizes[1]['trt_engine_cache_path']
    # ... while what only the renderer uses (class names, colours) shares the engine.
    relabelled = trt_options(model, ModelOverrides(classes=[f'c{i}' for i in range(19)],
                                                   palette=[[1, 2, 3]] * 19), trt_cache_dir=cache)
    assert relabelled['trt_engine_cache_path'] == folder
    # Timing caches are per layer, so every model shares one.
    assert {o['trt_timing_cache_path'] for o in changed.values()} == {base['trt_timing_cache_path']}


def test_a_changed_model_file_gets_a_new_folder_and_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    first = trt_options(palette_classifier(input_size=(32, 48)), trt_cache_dir='~/trt')
    assert first['trt_engine_cache_path'].startswith(str(tmp_path / 'trt'))
    other = palette_classifier(input_size=(32, 48), mean=(0.4, 0.4, 0.4))  # mean in the metadata
    assert trt_options(other, trt_cache_dir='~/trt')['trt_engine_cache_path'] != first['trt_engine_cache_path']


class FakeGpuSession:
    """Stands in for ``ort.InferenceSession``: GPU providers "load" unless told to fail."""

    fail: frozenset = frozenset()  # provider names that raise at session creation
    drop: frozenset = frozenset()  # provider names ONNX Runtime silently leaves out
    calls: list

    def __init__(self, model, sess_options=None, providers=(), **kwargs):
        self.calls.append({'providers': list(providers), 'kwargs': kwargs})
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        failing = [n for n in names if n in self.fail]
        if failing:
            msg = f'{failing[0]}: CUDA failure 100: no CUDA-capable device is detected'
            raise RuntimeError(msg)
        self._names = [n for n in names if n not in self.drop]
        self._real = REAL_SESSION(model, sess_options, providers=['CPUExecutionProvider'])
        self.fallback_disabled = False

    def get_providers(self):
        return self._names

    def disable_fallback(self):
        self.fallback_disabled = True

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def gpu(monkeypatch):
    """A pretend GPU machine: every requested provider is 'usable'; sessions are FakeGpuSession."""
    monkeypatch.setattr(engine_module, 'usable_providers', list)
    fake = type('Fake', (FakeGpuSession,), {'calls': []})
    monkeypatch.setattr(engine_module.ort, 'InferenceSession', fake)
    return fake


def _engine(config, overrides=None):
    return SegmentationEngine(palette_classifier(input_size=(32, 48)).SerializeToString(), config, overrides)


def _segments_right(engine):
    rgb, label = palette_scene(1, 32, 48)
    np.testing.assert_array_equal(engine.segment([rgb])[0].class_mask, label)


def test_tensorrt_failing_at_creation_falls_back_to_cuda_with_its_options(gpu, tmp_path, caplog):
    gpu.fail = frozenset({'TensorrtExecutionProvider'})
    config = EngineConfig(device_id=1, trt_cache_dir=str(tmp_path / 'trt'))
    with caplog.at_level(logging.WARNING, logger='seg_node.runtime.engine'):
        engine = _engine(config)
    assert engine.provider == 'cuda'
    assert engine.trt_cache is None
    # ONNX Runtime's own fallback is off at creation and in run(): the engine's loop decided.
    assert [call['kwargs'] for call in gpu.calls] == [{'enable_fallback': 0}] * 2
    assert engine.session.fallback_disabled
    # The retry is the next provider with its options intact (ORT's retry would drop device_id).
    assert gpu.calls[1]['providers'] == [('CUDAExecutionProvider', {'device_id': 1}),
                                         ('CPUExecutionProvider', {})]
    assert 'execution provider tensorrt failed to load (TensorrtExecutionProvider: CUDA failure 100' in caplog.text
    _segments_right(engine)


def test_cuda_failing_at_creation_ends_on_the_cpu_the_loader_reports(gpu, tmp_path, caplog):
    gpu.fail = frozenset({'TensorrtExecutionProvider', 'CUDAExecutionProvider'})
    path = tmp_path / 'm.onnx'
    onnx.save(palette_classifier(input_size=(32, 48)), path)
    config = EngineConfig(device_id=2, trt_cache_dir=str(tmp_path / 'trt'))
    with caplog.at_level(logging.WARNING, logger='seg_node.runtime.engine'):
        # load_model is what the node, seg_bag and seg_eval call; its engine's provider is what
        # the node logs and publishes in /diagnostics.
        model = load_model(ModelRequest(str(path), config=config))
    assert model.engine.provider == 'cpu'
    assert [c['providers'][0][0] for c in gpu.calls] == ['TensorrtExecutionProvider', 'CUDAExecutionProvider',
                                                         'CPUExecutionProvider']
    assert gpu.calls[1]['providers'][0] == ('CUDAExecutionProvider', {'device_id': 2})
    assert caplog.text.count('failed to load') == 2
    _segments_right(model.engine)


def test_a_provider_onnxruntime_drops_silently_is_reported_as_dropped(gpu, tmp_path, caplog):
    gpu.drop = frozenset({'CUDAExecutionProvider'})  # its libraries missing: ORT only logs it
    with caplog.at_level(logging.WARNING, logger='seg_node.runtime.engine'):
        engine = _engine(EngineConfig(providers=('cuda', 'cpu')))
    assert engine.provider == 'cpu'
    assert 'execution provider cuda did not load (ONNX Runtime dropped it); running on cpu' in caplog.text


def test_the_engine_reports_its_trt_cache_folder_and_reuses_it(gpu, tmp_path):
    config = EngineConfig(providers=('tensorrt', 'cpu'), trt_cache_dir=str(tmp_path / 'trt'))
    first, same = _engine(config), _engine(config)
    other_mean = _engine(config, ModelOverrides(mean=[0.5, 0.5, 0.5]))
    assert first.provider == 'tensorrt'
    assert first.trt_cache == same.trt_cache != other_mean.trt_cache
    assert first.trt_cache.is_dir() and other_mean.trt_cache.is_dir()
    assert gpu.calls[0]['providers'][0][1]['trt_engine_cache_path'] == str(first.trt_cache)
    assert gpu.calls[2]['providers'][0][1]['trt_engine_cache_path'] == str(other_mean.trt_cache)


def test_the_real_onnxruntime_takes_the_fallback_switch():
    engine = _engine(EngineConfig(providers=('cpu',)))
    # The keyword the engine passes is honoured by the installed ORT (it would ignore a typo).
    assert engine.session._enable_fallback is False
    _segments_right(engine)


def test_a_gpu_provider_without_its_libraries_is_not_usable(monkeypatch):
    monkeypatch.setattr(engine_module, '_cuda_driver_present', lambda: True)
    monkeypatch.setattr(engine_module.ort, 'get_available_providers',
                        lambda: ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider'])
    monkeypatch.setattr(engine_module, '_missing_library',
                        lambda key: 'libnvinfer.so.10' if key == 'tensorrt' else '')
    assert usable_providers(['tensorrt', 'cuda', 'cpu']) == ['cuda', 'cpu']
    monkeypatch.setattr(engine_module, '_cuda_driver_present', lambda: False)
    assert usable_providers(['tensorrt', 'cuda', 'cpu']) == ['cpu']


@pytest.mark.skipif('TensorrtExecutionProvider' not in ort.get_available_providers(),
                    reason='this onnxruntime has no TensorRT provider')
def test_the_libraries_a_provider_needs_are_read_from_onnxruntime():
    needed = engine_module._provider_libraries('tensorrt')
    assert any(name.startswith('libnvinfer.so.') for name in needed), needed
    assert any(name.startswith('libcudart.so.') for name in engine_module._provider_libraries('cuda'))


def test_seg_build_engine_takes_the_node_overrides(tmp_path, capsys):
    path = tmp_path / 'dyn.onnx'
    onnx.save(palette_classifier(input_size=None), path)
    assert build_engine([str(path), '--providers', 'cpu', '--height', '16']) == 2
    assert 'give both --height and --width' in capsys.readouterr().err
    assert build_engine([str(path), '--providers', 'cpu', '--height', '16', '--width', '24',
                         '--mean', '0.5', '0.5', '0.5', '--std', '0.25', '0.25', '0.25']) == 0
    assert 'cpu engine ready' in capsys.readouterr().out
