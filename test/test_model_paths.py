"""Where a model_path points: absolute, ~, relative (working directory, user model directory, share), package://."""

from pathlib import Path

import onnx
import pytest

from seg_node.model.file import ModelFileError, models_dir, read_verified, resolve_model_path
from seg_node.model.known_answer import palette_classifier
from seg_node.runtime.config import EngineConfig
from seg_node.runtime.loader import ModelRequest, load_model


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A working directory, a user data home and an ament prefix with a package 'seg_node' and 'other'."""
    work, data, prefix = tmp_path / 'work', tmp_path / 'data', tmp_path / 'prefix'
    for package in ('seg_node', 'other'):
        (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages').mkdir(parents=True, exist_ok=True)
        (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / package).write_text('')
        (prefix / 'share' / package / 'models').mkdir(parents=True)
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv('XDG_DATA_HOME', str(data))
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(prefix))
    return work, data / 'seg_node' / 'models', prefix / 'share'


def save(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(palette_classifier(input_size=(8, 8)), path)
    return path


def test_relative_paths_are_looked_up_in_order(places):
    work, user, share = places
    assert models_dir() == user
    shipped = save(share / 'seg_node' / 'models' / 'demo.onnx')
    assert resolve_model_path('demo.onnx') == shipped
    built = save(user / 'demo.onnx')
    assert resolve_model_path('demo.onnx') == built
    local = save(work / 'demo.onnx')
    assert resolve_model_path('demo.onnx') == work / 'demo.onnx' == local


def test_package_urls_home_and_absolute_paths(places, monkeypatch, tmp_path):
    _, _, share = places
    other = save(share / 'other' / 'models' / 'm.onnx')
    assert resolve_model_path('package://other/models/m.onnx') == other
    monkeypatch.setenv('HOME', str(tmp_path))
    assert resolve_model_path('~/prefix/share/other/models/m.onnx') == other
    assert resolve_model_path(str(other)) == other


def test_the_loader_resolves_and_names_the_resolved_file(places):
    _, user, _ = places
    built = save(user / 'demo.onnx')
    model = load_model(ModelRequest('demo.onnx', config=EngineConfig(providers=('cpu',))))
    assert model.path == str(built)
    assert model.engine.model_name == str(built)


@pytest.mark.parametrize(('text', 'message'), [
    ('', 'model_path is empty; build the demo model with "python3 -m seg_node.training.demo_model"'),
    ('demo.onnx', "model file 'demo.onnx' was not found (looked in {work}/demo.onnx, {user}/demo.onnx, "
                  '{share}/seg_node/models/demo.onnx); build the demo model'),
    ('/nowhere/m.onnx', "model file '/nowhere/m.onnx' does not exist"),
    ('package://nosuch/m.onnx', "model path 'package://nosuch/m.onnx' names the ROS package 'nosuch', which is "
                                'not installed here'),
    ('package://other/models/gone.onnx', "model file 'package://other/models/gone.onnx' does not exist"),
    ('models', "model path 'models' is a directory ({work}/models), not an ONNX file; name the .onnx file"),
])
def test_bad_model_paths_say_where_they_looked_in_one_sentence(places, text, message):
    work, user, share = places
    (work / 'models').mkdir()
    with pytest.raises(ModelFileError) as info:
        resolve_model_path(text)
    assert message.format(work=work, user=user, share=share) in str(info.value)
    assert '\n' not in str(info.value)


def test_an_unreadable_model_file(places, monkeypatch):
    work, _, _ = places
    save(work / 'locked.onnx')

    def denied(self):
        raise PermissionError(13, 'Permission denied')
    # The tests run as root, which reads any file: the denial is simulated where the read happens.
    monkeypatch.setattr(Path, 'read_bytes', denied)
    with pytest.raises(ModelFileError, match=r"model file 'locked\.onnx' cannot be read \(Permission denied\)"):
        read_verified('locked.onnx')
