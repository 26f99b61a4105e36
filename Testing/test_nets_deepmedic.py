"""DeepMedic: size arithmetic, receptive field, exact tiling, parameter counts."""

from __future__ import annotations

import pytest
import torch

from asymseg.nets import DEFAULT_HPARAMS, build_network


def _net(arch: str, cin: int = 2, k: int = 2, seed: int = 0, dtype=torch.float32, **hp):
    net = build_network(arch, cin, k, generator=torch.Generator().manual_seed(seed), **hp)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode is not an identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return net.to(dtype).eval()


def test_original_training_segment_is_57_cubed_for_a_9_cubed_output():
    net = build_network("deepmedic", 4, 2)
    assert net.context == 24 and net.output_multiple == 3 and net.exact_tiling
    assert net.training_output_size == 9 and net.training_input_size == 57
    assert net.input_shape((9, 9, 9)) == (57, 57, 57)
    assert net.output_shape((57, 57, 57)) == (9, 9, 9)
    # The normal pathway sees a 25^3 segment: 8 valid 3^3 layers remove 16 voxels.
    assert 9 + 2 * len(net.hparams["normal_features"]) == 25
    assert net.receptive_field == 51
    assert net.output_shape((72, 75, 78)) == (24, 27, 30)


def test_tmi_configuration_gives_21_cubed_from_111_cubed():
    net = build_network("deepmedic-tmi", 4, 2)
    assert net.context == 45 and net.output_multiple == 15
    assert net.training_output_size == 21 and net.training_input_size == 111
    # Valid 3^3 first FC: the normal-pathway segment is 21 + 2 * (8 + 1) = 39.
    assert 21 + 2 * (len(net.hparams["normal_features"]) + 1) == 39
    assert net.receptive_field == 90
    for n in range(1, 40):  # the x3 and x5 blocks fit into the context for every size
        assert net.output_shape(net.input_shape((n, n, n))) == (n, n, n)


def test_impossible_sizes_are_refused_with_the_rule():
    net = build_network("deepmedic", 2, 2)
    with pytest.raises(ValueError, match="axis 1: output size 10 is not supported.*multiples of 3"):
        net.input_shape((9, 10, 9))
    with pytest.raises(ValueError, match="axis 0: the output would have 0 voxels.*at least 49"):
        net.output_shape((48, 60, 60))
    with pytest.raises(ValueError, match="expected 2 input channels, got 3"):
        net(torch.zeros(1, 3, 57, 57, 57))


def test_parameter_counts_match_the_published_configurations():
    count = lambda net: sum(p.numel() for p in net.parameters())
    assert count(build_network("deepmedic", 4, 2)) == 662_702
    assert count(build_network("deepmedic-tmi", 4, 2)) == 2_013_002


@pytest.mark.parametrize("cin,k", [(1, 2), (3, 5)])
def test_any_channels_and_classes(cin, k):
    net = _net("deepmedic", cin, k)
    y = net(torch.randn(2, cin, 57, 60, 57))
    assert y.shape == (2, k, 9, 12, 9) and y.dtype == torch.float32


def test_hparams_rebuild_the_same_network():
    net = _net("deepmedic-tmi", 2, 3)
    again = build_network(net.architecture, net.in_channels, net.num_classes, **net.hparams)
    again.load_state_dict(net.state_dict())
    x = torch.randn(1, 2, 111, 111, 111)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), net(x))
    assert dict(DEFAULT_HPARAMS["deepmedic"]) == build_network("deepmedic", 1, 2).hparams


def test_unknown_hyperparameters_are_refused():
    with pytest.raises(ValueError, match=r"unknown hyper-parameters \['depth'\]"):
        build_network("deepmedic", 2, 2, depth=3)
    with pytest.raises(ValueError, match="dropout needs 3 rates"):
        build_network("deepmedic", 2, 2, dropout=[0.5])
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_network("resnet", 2, 2)


def _expected_box(net, i: int, n: int) -> tuple[int, int]:
    """Input interval [lo, hi) (input coordinates) that influences output voxel i of an aligned tile."""
    c = net.context
    e = (net.hparams["fc_first_kernel"] - 1) // 2
    layers = len(net.hparams["normal_features"])
    lo, hi = i - layers - e, i + layers + e + 1
    low_layers = len(net.hparams["lowres_features"])
    for f in net.hparams["lowres_factors"]:
        first, last = (i - e) // f, (i + e) // f          # blocks anchored at the output origin
        lo = min(lo, f * (first - low_layers))
        hi = max(hi, f * (last + 1 + low_layers))
    return lo + c, hi + c


@pytest.mark.parametrize("arch", ["deepmedic", "deepmedic-tmi"])
def test_receptive_field_is_exactly_the_expected_box(arch):
    torch.manual_seed(0)
    net = _net(arch, 1, 2, dtype=torch.float64, lowres_features=[2] * 8, normal_features=[2] * 8,
               fc_features=[4, 4])
    n = net.output_multiple
    x = torch.randn(1, 1, *net.input_shape((n, n, n)), dtype=torch.float64, requires_grad=True)
    i = n // 2 + 1  # not at a block border
    y = net(x)
    y[0, 1, i, i, i].backward()
    support = (x.grad[0, 0] != 0).nonzero()
    lo, hi = _expected_box(net, i, n)
    for axis in range(3):
        assert (support[:, axis].min().item(), support[:, axis].max().item() + 1) == (lo, hi)
    assert hi - lo <= net.receptive_field
    # Perturbation: outside the box the output does not move, inside it does.
    with torch.no_grad():
        base = net(x)[0, :, i, i, i]
        far = torch.full(x.shape, 100.0, dtype=x.dtype)
        far[..., lo:hi, lo:hi, lo:hi] = 0.0
        outside = x + far
        assert torch.equal(net(outside)[0, :, i, i, i], base)
        inside = x.clone()
        inside[0, 0, lo, i + net.context, i + net.context] += 100.0
        assert not torch.equal(net(inside)[0, :, i, i, i], base)


@pytest.mark.parametrize("arch", ["deepmedic", "deepmedic-tmi"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_aligned_tiles_reproduce_one_big_forward(arch, channels_last):
    torch.manual_seed(1)
    # Full widths for the original; narrower FC layers keep the x3+x5 configuration quick.
    net = _net(arch, 2, 3) if arch == "deepmedic" else _net(arch, 2, 3, fc_features=[16, 16])
    m, c = net.output_multiple, net.context
    sizes = (3 * m, 2 * m, m) if arch == "deepmedic" else (2 * m, 2 * m, m)
    x = torch.randn(1, 2, *net.input_shape(sizes))
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        whole = net(x)
        # Split axis 0 at output voxel m and axis 1 at output voxel m: four tiles.
        d_cuts = [(0, m), (m, sizes[0])]
        h_cuts = [(0, m), (m, sizes[1])]
        rows = []
        for d0, d1 in d_cuts:
            row = [net(x[:, :, d0:d1 + 2 * c, h0:h1 + 2 * c]) for h0, h1 in h_cuts]
            rows.append(torch.cat(row, dim=3))
        tiled = torch.cat(rows, dim=2)
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_flop_count_matches_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    for arch in ("deepmedic", "deepmedic-tmi"):
        # float64 runs through F.conv3d and matmul, which the counter sees (direct oneDNN calls
        # for float32 are invisible to it).
        net = _net(arch, 2, 2, dtype=torch.float64, fc_features=[8, 8], normal_features=[4] * 8,
                   lowres_features=[4] * 8)
        shape = net.input_shape((net.output_multiple,) * 3)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, 2, *shape, dtype=torch.float64))
        assert net.flops(shape) == counter.get_total_flops()
    # The original configuration's asymptotic cost is ~0.72 MFLOP per output voxel (ml-anchors 5).
    per_voxel = build_network("deepmedic", 4, 2).flops_per_output_voxel(300)
    assert 0.72e6 < per_voxel < 0.80e6


def test_gradients_flow_to_every_parameter_in_training_mode():
    net = build_network("deepmedic", 2, 2, generator=torch.Generator().manual_seed(0)).train()
    x = torch.randn(2, 2, 57, 57, 57, requires_grad=True)
    net(x).logsumexp(1).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_same_generator_seed_gives_the_same_weights():
    a = build_network("deepmedic", 2, 2, generator=torch.Generator().manual_seed(5))
    b = build_network("deepmedic", 2, 2, generator=torch.Generator().manual_seed(5))
    c = build_network("deepmedic", 2, 2, generator=torch.Generator().manual_seed(6))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["classifier.weight"], sc["classifier.weight"])


def test_unaligned_training_segment_centres_its_x5_blocks():
    """A 21^3 output puts ceil(23 / 5) = 5 blocks of x5 at offset -2 (centred), x3 blocks at 0.

    So a 21^3 segment whose output origin is 12 (a multiple of 3, and 12 - 2 a multiple of 5)
    sees exactly the blocks of a big tile anchored at 0, and must reproduce that tile's values.
    """
    torch.manual_seed(2)
    net = _net("deepmedic-tmi", 1, 2, fc_features=[8, 8], normal_features=[4] * 8, lowres_features=[4] * 8)
    c = net.context
    x = torch.randn(1, 1, *net.input_shape((45, 45, 45)))
    with torch.no_grad():
        whole = net(x)
        part = net(x[:, :, 12:12 + 21 + 2 * c, 12:12 + 21 + 2 * c, 12:12 + 21 + 2 * c])
        shifted = net(x[:, :, 13:13 + 21 + 2 * c, 12:12 + 21 + 2 * c, 12:12 + 21 + 2 * c])
    torch.testing.assert_close(part, whole[:, :, 12:33, 12:33, 12:33], atol=1e-5, rtol=0)
    assert not torch.allclose(shifted, whole[:, :, 13:34, 12:33, 12:33], atol=1e-3)


def test_relu_variant_matches_its_float64_twin_and_tiles_exactly():
    net = _net("deepmedic", 2, 2, activation="relu")
    assert not any(isinstance(m, torch.nn.PReLU) for m in net.modules())
    x = torch.randn(1, 2, *net.input_shape((6, 3, 3)))
    with torch.no_grad():
        whole = net(x)
        tiled = torch.cat([net(x[:, :, :51]), net(x[:, :, 3:])], dim=2)
        twin = net.double()(x.double())
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(whole.double(), twin, atol=1e-4, rtol=1e-4)
