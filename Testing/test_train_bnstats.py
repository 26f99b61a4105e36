"""The authors' batch-norm statistics: the average of the last clean batches, kept through resume."""

from __future__ import annotations

import pytest
import torch

from asymseg.errors import InputError
from asymseg.nets import build_network
from asymseg.techniques import get_technique
from asymseg.train.bnstats import AUTHORS_WINDOW, BatchNormWindow
from asymseg.train.config import TrainConfig
from asymseg.train.optim import make_optimizer
from asymseg.train.steps import IterationRunner
from helpers.nets import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RARE = [False, True]


def tiny_net(seed=0):
    return build_network("deepmedic", 2, 2, generator=torch.Generator().manual_seed(seed), **TINY)


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 2, 33, 33, 33, generator=g) * (1 + seed) + seed
    y = torch.zeros(4, 9, 9, 9, dtype=torch.int64)
    y[:2, 2:6, 3:7, 1:5] = 1
    return x, y


def first_norm(net):
    return net.normal[0].norm


def test_the_window_holds_the_clean_batches_and_its_average_becomes_the_running_statistics():
    net = tiny_net()
    window = BatchNormWindow(net, length=3)
    opt = make_optimizer("rmsprop", net.parameters(), lr=1e-3)
    runner = IterationRunner(net, net, opt, get_technique("combo-authors"), RARE, torch.Generator().manual_seed(1),
                             bn_window=window)
    expected_means = []
    for seed in range(5):
        x, y = batch(seed)
        # What the first batch-norm layer sees in the clean step: the first conv of the
        # normal pathway on the clean input, with the weights before this iteration's updates.
        with torch.no_grad():
            conv = torch.nn.functional.conv3d(net.pathway_inputs(x)[0], net.normal[0].conv.weight)
        expected_means.append(conv.mean(dim=(0, 2, 3, 4)))
        runner(x, y)
    name = next(iter(window.layers))
    assert len(window.means[name]) == 3                       # the adversarial and mixup steps add none
    for got, want in zip(window.means[name], expected_means[-3:]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first_norm(net).running_mean, torch.stack(expected_means[-3:]).mean(dim=0),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first_norm(net).running_var, torch.stack(list(window.vars[name])).mean(dim=0))


def test_the_window_round_trips_through_checkpoint_tensors():
    net = tiny_net()
    window = BatchNormWindow(net, length=4)
    net.train()
    with window.recording():
        for seed in range(6):
            net(batch(seed)[0])
    with torch.no_grad():
        net(batch(9)[0])                                       # outside recording: not kept
    tensors = window.state_tensors()
    assert all(t.shape[0] == 4 for t in tensors.values()) and len(tensors) == 2 * len(window.layers)
    other = BatchNormWindow(tiny_net(seed=1), length=4)
    other.load_state_tensors({**tensors, "generator.rank0": torch.zeros(3, dtype=torch.uint8)})
    for name in window.layers:
        assert all(torch.equal(a, b) for a, b in zip(window.means[name], other.means[name]))
    window.close()
    assert AUTHORS_WINDOW == 60
    with pytest.raises(ValueError, match="positive"):
        BatchNormWindow(net, length=0)


def test_the_config_option_is_validated():
    assert TrainConfig(train_cases=("a",), output_model="m").batchnorm_stats == "ema"
    assert TrainConfig(train_cases=("a",), output_model="m", batchnorm_stats="window").batchnorm_stats == "window"
    with pytest.raises(InputError, match="batchnorm_stats"):
        TrainConfig(train_cases=("a",), output_model="m", batchnorm_stats="mean")
