"""model.tar.gz in and out: seg_node's artifact (manifest + checkpoint [+ ONNX]) and what is refused.

What SageMaker's built-in semantic segmentation container writes into its model.tar.gz is not
documented (it is an MXNet/GluonCV model); such an artifact is refused in one sentence.
"""

import io
import json
import tarfile

import pytest
import torch

from seg_node.training.artifact import ArtifactError, read_artifact, write_artifact, write_manifest
from seg_node.training.train import load_checkpoint, main

CHECKPOINT = {'model': {'w': torch.arange(4.0)}, 'epoch': 2, 'hyperparameters': {'algorithm': 'fcn',
              'backbone': 'resnet-50', 'num_classes': 3, 'crop_size': 48, 'output_stride': 16, 'decoder': 'none'},
              'classes': ['a', 'b', 'c'], 'metrics': {'validation:mIOU': 0.5, 'validation:iou': {'a': 0.1}}}


def checkpoint_bytes(payload=None):
    buffer = io.BytesIO()
    torch.save(payload or CHECKPOINT, buffer)
    return buffer.getvalue()


def make_tar(path, members):
    with tarfile.open(path, 'w:gz') as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_artifact_round_trip(tmp_path):
    path = write_artifact(tmp_path / 'model.tar.gz', CHECKPOINT, {'checkpoint': ('model.pt', checkpoint_bytes()),
                                                                 'onnx': ('model.onnx', b'onnx bytes')},
                          writer='test', hyperparameters={'epochs': '10'})
    with tarfile.open(path) as tar:
        assert sorted(tar.getnames()) == ['hyperparameters.json', 'manifest.json', 'model.onnx', 'model.pt']
        manifest = json.load(tar.extractfile('manifest.json'))
        assert json.load(tar.extractfile('hyperparameters.json')) == {'epochs': '10'}
    assert manifest['format'] == 'seg_node.model'
    assert manifest['files'] == {'checkpoint': 'model.pt', 'onnx': 'model.onnx'}
    assert manifest['network'] == {'algorithm': 'fcn', 'backbone': 'resnet-50', 'num_classes': 3, 'crop_size': 48,
                                   'output_stride': 16, 'decoder': 'none'}
    assert manifest['metrics'] == {'validation:mIOU': 0.5}
    artifact = read_artifact(path)
    assert artifact.read('onnx') == b'onnx bytes'
    loaded = load_checkpoint(path)
    assert torch.equal(loaded['model']['w'], CHECKPOINT['model']['w'])
    assert not (tmp_path / 'model.tar.gz.partial').exists()


def test_a_tarball_of_a_run_folder_is_an_artifact(tmp_path):
    # SageMaker tars /opt/ml/model itself; names then start with './'.
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'model_best.pt').write_bytes(checkpoint_bytes())
    (run / 'checkpoint.pt').write_bytes(checkpoint_bytes(CHECKPOINT | {'epoch': 3, 'optimizer': {}}))
    write_manifest(run, CHECKPOINT, {'checkpoint': 'model_best.pt', 'resume_checkpoint': 'checkpoint.pt'},
                   writer='test')
    path = tmp_path / 'model.tar.gz'
    with tarfile.open(path, 'w:gz') as tar:
        tar.add(run, arcname='.')
    assert load_checkpoint(path)['epoch'] == 2
    assert load_checkpoint(path, role='resume_checkpoint')['epoch'] == 3


def test_sagemaker_mxnet_artifact_is_refused_in_one_sentence(tmp_path):
    path = make_tar(tmp_path / 'model.tar.gz', {'model_algo-1-symbol.json': b'{}', 'model_algo-1-0000.params': b'x',
                                                'hyperparams.json': b'{}'})
    message = (f"{path} holds an MXNet model (model_algo-1-0000.params, model_algo-1-symbol.json), as SageMaker's "
               'built-in algorithm writes it: it cannot be loaded without MXNet, which seg_node does not use')
    with pytest.raises(ArtifactError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == message


def test_incremental_training_from_an_mxnet_artifact_stops_with_that_sentence(tmp_path, capsys):
    path = make_tar(tmp_path / 'model.tar.gz', {'model_algo-1-0000.params': b'x'})
    (tmp_path / 'data').mkdir()
    argv = ['--data', str(tmp_path / 'data'), '--output', str(tmp_path / 'run'), '--num_classes', '3',
            '--use_pretrained_model', 'false', '--init_checkpoint', str(path)]
    assert main(argv) == 2
    assert 'cannot be loaded without MXNet' in capsys.readouterr().err


@pytest.mark.parametrize(('members', 'message'), [
    ({'weights.pt': b'x'}, 'holds no manifest.json, so it is not a seg_node model artifact'),
    ({'manifest.json': b'{"format": '}, 'manifest.json is not valid JSON'),
    ({'manifest.json': b'{"format": "other", "files": {}}'}, 'manifest.json is not a seg_node.model manifest'),
    ({'manifest.json': b'{"format": "seg_node.model", "version": 9, "files": {}}'},
     'is a version 9 artifact; this seg_node reads up to version 1'),
    ({'manifest.json': b'{"format": "seg_node.model", "version": 1, "files": {"checkpoint": "m.pt"}}'},
     'lists m.pt in manifest.json but does not hold it'),
    ({'manifest.json': b'{"format": "seg_node.model", "version": 1, "files": {"onnx": "m.onnx"}}'},
     r"holds no checkpoint \(its manifest.json lists \{'onnx': 'm.onnx'\}\)"),
    ({'manifest.json': b'{"format": "seg_node.model", "version": 1, "files": {"checkpoint": "m.pt"}, '
                       b'"sha256": {"m.pt": "00"}}', 'm.pt': b'x'},
     'm.pt does not match its SHA-256 in manifest.json'),
])
def test_bad_artifacts_are_one_sentence_naming_the_file(tmp_path, members, message):
    path = make_tar(tmp_path / 'model.tar.gz', members)
    with pytest.raises(ArtifactError, match=message):
        load_checkpoint(path)


def test_corrupt_archive_is_named(tmp_path):
    good = write_artifact(tmp_path / 'a.tar.gz', CHECKPOINT, {'checkpoint': ('m.pt', checkpoint_bytes())},
                          writer='test')
    data = good.read_bytes()
    broken = tmp_path / 'b.tar.gz'
    broken.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=f'(cannot read model artifact {broken}|cannot read checkpoint {broken}|'
                                         f'cannot read m.pt from model artifact {broken})'):
        load_checkpoint(broken)


def test_artifact_needs_a_checkpoint(tmp_path):
    with pytest.raises(ArtifactError, match="an artifact needs a checkpoint and only the roles"):
        write_artifact(tmp_path / 'x.tar.gz', CHECKPOINT, {'onnx': ('m.onnx', b'')}, writer='test')
