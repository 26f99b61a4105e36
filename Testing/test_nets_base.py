"""Shared network pieces: the fast convolution helpers, initialisation, float64 gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from asymseg.nets import build_network
from asymseg.nets.base import conv3d, kaiming_normal_, pointwise_conv3d


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_pointwise_conv_equals_conv3d_and_keeps_the_layout(layout):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 7, 8, generator=gen)
    w = torch.randn(3, 5, 1, 1, 1, generator=gen)
    b = torch.randn(3, generator=gen)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    elif layout == "strided":
        x = torch.randn(2, 5, 6, 7, 16, generator=gen)[..., ::2]
    y = pointwise_conv3d(x, w, b)
    torch.testing.assert_close(y, F.conv3d(x, w, b), atol=1e-5, rtol=1e-5)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(pointwise_conv3d(x, w), F.conv3d(x, w), atol=1e-5, rtol=1e-5)


def test_conv3d_helper_equals_torch_for_small_channel_counts_and_keeps_channels_last():
    gen = torch.Generator().manual_seed(1)
    # 4 * 20 * 20 <= 20480: torch's own choice would be its slow reference kernel.
    x = torch.randn(1, 4, 20, 20, 20, generator=gen).contiguous(memory_format=torch.channels_last_3d)
    w = torch.randn(6, 4, 3, 3, 3, generator=gen)
    y = conv3d(x, w)
    torch.testing.assert_close(y, F.conv3d(x.double(), w.double()).float(), atol=1e-4, rtol=1e-4)
    if torch.backends.mkldnn.is_available():
        assert y.is_contiguous(memory_format=torch.channels_last_3d)
    y2 = conv3d(x, w, torch.ones(6), stride=2, padding=1)
    torch.testing.assert_close(y2, F.conv3d(x, w, torch.ones(6), stride=2, padding=1), atol=1e-4, rtol=1e-4)


def test_kaiming_init_has_the_he_standard_deviation():
    w = torch.empty(64, 32, 3, 3, 3)
    kaiming_normal_(w, 0.25, torch.Generator().manual_seed(0))
    expected = (2.0 / ((1 + 0.25 ** 2) * 32 * 27)) ** 0.5
    assert abs(w.std().item() / expected - 1) < 0.02 and abs(w.mean().item()) < 0.01


TINY = {"normal_features": [3, 3], "lowres_features": [2, 2], "fc_features": [4], "dropout": [0.0, 0.0],
        "training_output_size": 3}


@pytest.mark.parametrize("arch,hp", [
    ("deepmedic", dict(TINY, lowres_factors=[3])),
    ("deepmedic-tmi", dict(TINY, lowres_factors=[2, 3], fc_first_kernel=3)),
])
@pytest.mark.parametrize("train", [False, True])
def test_gradients_pass_gradcheck_in_float64(arch, hp, train):
    net = build_network(arch, 2, 2, generator=torch.Generator().manual_seed(0), **hp).double().train(train)
    n = net.output_multiple
    x = torch.randn(2, 2, *net.input_shape((n, n, n)), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: net(t).sum(dim=(2, 3, 4)), (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_float32_gradients_through_onednn_match_float64():
    net = build_network("deepmedic", 2, 2, generator=torch.Generator().manual_seed(0),
                        **dict(TINY, normal_features=[8, 8], lowres_features=[8, 8])).eval()
    x = torch.randn(1, 2, *net.input_shape((6, 6, 6)))
    grads = []
    for dtype in (torch.float32, torch.float64):
        net = net.to(dtype)
        xi = x.to(dtype).detach().clone().requires_grad_(True)
        net(xi).pow(2).sum().backward()
        grads.append((xi.grad.double(), net.normal[0].conv.weight.grad.double()))
        net.zero_grad()
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-3, rtol=1e-3)
