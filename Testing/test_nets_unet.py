"""3D U-Net: size rules, outputs, flop count, reconstruction from hparams."""

from __future__ import annotations

import pytest
import torch

from asymseg.nets import build_network


def _net(**hp):
    return build_network("unet", 2, 3, generator=torch.Generator().manual_seed(0), **hp)


def test_output_keeps_the_input_size_and_needs_multiples_of_8():
    net = _net().eval()
    assert (net.context, net.output_multiple, net.exact_tiling) == (0, 8, False)
    assert net.training_output_size == 64 and net.training_input_size == 64
    assert net.input_shape((16, 24, 32)) == (16, 24, 32)
    with torch.no_grad():
        y = net(torch.randn(1, 2, 16, 24, 32))
    assert y.shape == (1, 3, 16, 24, 32)
    with pytest.raises(ValueError, match="axis 2: input size 20 must be a positive multiple of 8"):
        net.output_shape((16, 16, 20))
    with pytest.raises(ValueError, match="axis 0: output size 0"):
        net.input_shape((0, 8, 8))


def test_depth_sets_the_multiple_and_features_are_capped():
    net = _net(depth=5, base_features=8, max_features=32)
    assert net.output_multiple == 16
    assert [stage[1][0].out_channels for stage in net.encoder] == [8, 16, 32, 32, 32]
    with pytest.raises(ValueError, match="training_output_size 24 must be a multiple of 16"):
        _net(depth=5, training_output_size=24)
    with pytest.raises(ValueError, match=r"unknown hyper-parameters \['width'\]"):
        _net(width=3)


def test_instance_norm_is_affine_and_there_is_no_batch_norm():
    net = _net()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and all(m.affine for m in norms)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())


def test_flop_count_matches_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    net = _net(depth=3, base_features=4).double().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 2, 16, 8, 24, dtype=torch.float64))
    assert net.flops((16, 8, 24)) == counter.get_total_flops()


def test_hparams_rebuild_the_same_network_and_gradients_flow():
    net = _net(depth=3, base_features=4)
    again = build_network("unet", 2, 3, **net.hparams)
    again.load_state_dict(net.state_dict())
    x = torch.randn(2, 2, 16, 16, 16, requires_grad=True)
    y = net(x)
    torch.testing.assert_close(again(x), y)
    y.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_channels_last_gives_the_same_logits():
    net = _net(depth=3, base_features=4).eval()
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        ref = net(x)
        out = net.to(memory_format=torch.channels_last_3d)(x.to(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
