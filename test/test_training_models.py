"""Model builders: all three heads at small size, output stride, PSP pooling, backbone weights."""

import pytest
import torch
import torchvision

from seg_node.training.models import (
    PSPHead,
    SkipDecoder,
    adaptive_avg_pool_exact,
    build_network,
    load_backbone_weights,
)

torch.set_num_threads(2)


@pytest.mark.parametrize('algorithm', ['fcn', 'psp', 'deeplab'])
def test_heads_build_and_run(algorithm):
    torch.manual_seed(0)
    model = build_network(algorithm=algorithm, num_classes=5, output_stride=16, aux_loss=True).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 48, 96))
    assert out['out'].shape == (2, 5, 48, 96)
    assert out['aux'].shape == (2, 5, 48, 96)
    assert torch.isfinite(out['out']).all()


def test_output_stride_sets_feature_resolution():
    for stride in (8, 16, 32):
        model = build_network(num_classes=3, output_stride=stride).eval()
        with torch.inference_mode():
            features = model.backbone(torch.randn(1, 3, 64, 64))['out']
        assert features.shape[-2:] == (64 // stride, 64 // stride)
    with pytest.raises(ValueError, match=r'output_stride must be one of \(8, 16, 32\)'):
        build_network(num_classes=3, output_stride=4)
    with pytest.raises(ValueError, match='decoder must be one of'):
        build_network(num_classes=3, decoder='unet')


def test_skip_decoder_feeds_on_stride4_stride2_and_image():
    model = build_network(num_classes=4, output_stride=32, decoder='skip', aux_loss=True).eval()
    with torch.inference_mode():
        features = model.backbone(torch.randn(1, 3, 64, 96))
        out = model(torch.randn(2, 3, 64, 96))
    assert {k: tuple(v.shape[-2:]) for k, v in features.items()} == {
        'out': (2, 3), 'aux': (4, 6), 'stride4': (16, 24), 'stride2': (32, 48)}
    assert out['out'].shape == (2, 4, 64, 96)
    assert out['aux'].shape == (2, 4, 64, 96)


def test_score_offset_shifts_scores_outside_training_only():
    torch.manual_seed(0)
    model = build_network(num_classes=3, output_stride=32, decoder='skip')
    x = torch.randn(2, 3, 32, 64)
    model.eval()
    with torch.inference_mode():
        plain = model(x)['out']
        model.score_offset.copy_(torch.tensor([0.0, -1.5, 2.0]))
        shifted = model(x)['out']
    torch.testing.assert_close(shifted - plain, torch.tensor([0.0, -1.5, 2.0])[:, None, None].expand_as(plain))
    model.train()
    model.score_offset.fill_(1e6)
    assert model(x)['out'].abs().max() < 1e3  # training sees the raw scores


def test_skip_decoder_resolves_a_line_one_pixel_wide():
    # The coarse scores and skip features carry nothing here: only the decoder's full-resolution
    # step can place the line, and it must do so exactly.
    torch.manual_seed(0)
    decoder = SkipDecoder(num_classes=2, stride4_channels=8, stride2_channels=8)
    image = torch.zeros(1, 3, 32, 64)
    image[0, 0, :, 21] = 2.0  # a red one-pixel column
    target = (image[:, 0] > 0).long()
    scores, stride4, stride2 = torch.zeros(1, 2, 1, 2), torch.zeros(1, 8, 8, 16), torch.zeros(1, 8, 16, 32)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=0.01)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(decoder(scores, stride4, stride2, image), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    decoder.eval()
    with torch.inference_mode():
        predicted = decoder(scores, stride4, stride2, image).argmax(1)
    assert torch.equal(predicted, target)


def test_psp_head_pools_at_bins_1_2_3_6():
    head = PSPHead(16, 4).eval()
    pools = [stage[0].output_size for stage in head[0].stages]
    assert pools == [1, 2, 3, 6]
    x = torch.zeros(1, 16, 12, 12)
    x[..., :6, :6] = 1.0  # context differs by quadrant, so the pooled features carry it
    assert head[0](x).shape == (1, 32, 12, 12)
    assert head(x).shape == (1, 4, 12, 12)


@pytest.mark.parametrize(('h', 'w'), [(12, 12), (5, 7), (3, 3), (13, 29)])
def test_exact_adaptive_pooling_matches_pytorch(h, w):
    x = torch.randn(2, 3, h, w)
    for bins in (1, 2, 3, 6):
        expected = torch.nn.functional.adaptive_avg_pool2d(x, bins)
        torch.testing.assert_close(adaptive_avg_pool_exact(x, bins), expected, rtol=1e-5, atol=1e-6)


def test_unknown_names():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        build_network(algorithm='unet', num_classes=3)
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_network(backbone='resnet-18', num_classes=3)


def test_local_backbone_weights_are_loaded(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet50()
    path = tmp_path / 'r50.pth'
    torch.save(source.state_dict(), path)
    model = build_network(num_classes=3, backbone_weights=path)
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)
    assert torch.equal(model.backbone.layer4[2].bn3.weight, source.layer4[2].bn3.weight)


def test_mismatched_weights_list_missing_and_unexpected_keys(tmp_path):
    state = torchvision.models.resnet50().state_dict()
    del state['layer1.0.conv1.weight']
    state['extra.weight'] = torch.zeros(1)
    path = tmp_path / 'bad.pth'
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys \['layer1.0.conv1.weight'\] \(1\), "
                                         r"unexpected keys \['extra.weight'\] \(1\)"):
        build_network(num_classes=3, backbone_weights=path)


def test_weights_of_wrong_shape_and_unsafe_or_broken_files(tmp_path):
    state = torchvision.models.resnet50().state_dict()
    state['conv1.weight'] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / 'shape.pth')
    expected = r'wrong shapes \[.conv1\.weight \(64, 3, 3, 3\) \(needs \(64, 3, 7, 7\)\)'
    with pytest.raises(ValueError, match=expected):
        build_network(num_classes=3, backbone_weights=tmp_path / 'shape.pth')
    (tmp_path / 'junk.pth').write_bytes(b'junk')
    with pytest.raises(ValueError, match='cannot read backbone weights'):
        load_backbone_weights(torchvision.models.resnet50(), tmp_path / 'junk.pth')
    # weights_only loading refuses arbitrary pickled objects
    torch.save({'model': object()}, tmp_path / 'pickle.pth')
    with pytest.raises(ValueError, match='cannot read backbone weights'):
        load_backbone_weights(torchvision.models.resnet50(), tmp_path / 'pickle.pth')
