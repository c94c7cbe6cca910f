"""seg_build_engine on a machine without TensorRT: it builds what it can and says so."""

import hashlib

import onnx

from seg_node.model.known_answer import palette_classifier
from seg_node.runtime.build_engine import main
from seg_node.runtime.engine import usable_providers


def test_build_reports_the_provider_and_exit_code(tmp_path, capsys, gpu_present):
    path = tmp_path / 'm.onnx'
    onnx.save(palette_classifier(input_size=(32, 48)), path)
    assert main([str(path), '--providers', 'cpu']) == 0
    assert 'cpu engine ready' in capsys.readouterr().out
    code = main([str(path), '--providers', 'tensorrt', 'cpu', '--trt-cache-dir', str(tmp_path / 'trt')])
    out = capsys.readouterr().out
    if not gpu_present:  # TensorRT cannot load: the CPU builds it, and the exit code says it was not TensorRT
        assert code == 1 and 'cpu engine ready' in out
    else:  # TensorRT where its libraries load here, else the next provider and exit 1
        assert ('tensorrt engine ready' in out) == bool(usable_providers(['tensorrt']))
        assert code == (0 if 'tensorrt engine ready' in out else 1)


def test_dynamic_models_need_a_size_and_bad_models_exit_2(tmp_path, capsys):
    path = tmp_path / 'dyn.onnx'
    onnx.save(palette_classifier(input_size=None), path)
    assert main([str(path), '--providers', 'cpu']) == 2
    assert '--height and --width' in capsys.readouterr().err
    assert main([str(path), '--providers', 'cpu', '--height', '16', '--width', '16']) == 0
    assert main([str(tmp_path / 'missing.onnx'), '--providers', 'cpu']) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_a_model_whose_sha256_differs_exits_2(tmp_path, capsys):
    path = tmp_path / 'm.onnx'
    onnx.save(palette_classifier(input_size=(32, 48)), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main([str(path), '--providers', 'cpu', '--sha256', digest]) == 0
    assert main([str(path), '--providers', 'cpu', '--sha256', '0' * 64]) == 2
    assert f'has SHA-256 {digest}, not the expected {"0" * 64}' in capsys.readouterr().err
