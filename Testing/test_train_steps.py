"""One training iteration: the steps each preset runs, and batch-norm statistics from clean batches only."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from asymseg.nets import build_network
from asymseg.techniques import TECHNIQUES, get_technique
from asymseg.train.steps import IterationRunner, batchnorm_layers, frozen_batchnorm_stats
from helpers.nets import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RARE = [False, True]


def tiny_net(seed=0):
    return build_network("deepmedic", 2, 2, generator=torch.Generator().manual_seed(seed), **TINY)


def batch(seed=0, b=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, 33, 33, 33, generator=g)
    y = torch.zeros(b, 9, 9, 9, dtype=torch.int64)
    y[: b // 2, 2:6, 3:7, 1:5] = 1  # half the samples hold a rare blob
    x[: b // 2, :, 14:19, 15:20, 13:18] += 2.0
    return x, y


def buffers(net):
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}


def test_frozen_batchnorm_stats_restores_running_statistics_exactly():
    net = tiny_net().train()
    before = buffers(net)
    with frozen_batchnorm_stats(net):
        net(batch()[0])
        assert any(not torch.equal(before[k], v) for k, v in buffers(net).items())
    after = buffers(net)
    assert before.keys() == after.keys() and len(before) >= 3 * len(batchnorm_layers(net)) > 0
    for k in before:
        assert torch.equal(before[k], after[k]), k


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_each_preset_runs_its_updates_and_stays_finite(name):
    torch.manual_seed(0)
    technique = get_technique(name)
    net = tiny_net()
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-4, momentum=0.6)
    updates = []
    opt.register_step_post_hook(lambda *a: updates.append(1))
    runner = IterationRunner(net, net, opt, technique, RARE, torch.Generator().manual_seed(1))
    for it in range(3):
        losses = runner(*batch(seed=it))
        assert all(math.isfinite(v) for v in losses.to_dict().values())
        assert set(losses.to_dict()) == set(technique.steps)
    assert len(updates) == 3 * len(technique.steps)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_adversarial_and_mixup_steps_leave_running_statistics_to_the_clean_batch():
    x, y = batch()
    combo = tiny_net()
    reference = copy.deepcopy(combo)
    opt = torch.optim.RMSprop(combo.parameters(), lr=1e-3, momentum=0.6)
    IterationRunner(combo, combo, opt, get_technique("combo"), RARE, torch.Generator().manual_seed(1))(x, y)
    reference.train()
    with torch.no_grad():
        reference(x)  # only the clean forward pass may move the running statistics
    got, want = buffers(combo), buffers(reference)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    # ... while the three updates did change the weights.
    assert not torch.equal(combo.classifier.weight, reference.classifier.weight)


@pytest.mark.parametrize("inputs", ["pathways", "image"])
def test_the_adversarial_step_trains_on_a_perturbation_of_norm_eps_per_perturbed_input(inputs):
    x, y = batch()
    net = tiny_net()
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3)
    technique = get_technique("a-at", eps=3.0, adversarial_inputs=inputs)
    IterationRunner(net, net, opt, technique, RARE, torch.Generator().manual_seed(2))(x, y)
    # forward passes: direction (inputs + d0, at the weights before the update), clean, adversarial
    assert len(seen) == 3
    assert torch.equal(seen[1], x)
    # "pathways": each pathway input perturbed on its own; "image": the full-resolution input once.
    clean_inputs, perturbed_inputs = (net.pathway_inputs(x), seen[2]) if inputs == "pathways" else ([x], [seen[2]])
    assert isinstance(perturbed_inputs, list) and len(perturbed_inputs) == len(clean_inputs) == \
        (2 if inputs == "pathways" else 1)
    for clean, perturbed in zip(clean_inputs, perturbed_inputs):
        norms = (perturbed.detach() - clean).flatten(1).norm(dim=1).numpy()
        # Every sample: the ones without rare voxels get their direction through batch norm.
        np.testing.assert_allclose(norms, [3.0] * 4, rtol=1e-4)


def test_an_iteration_is_repeatable_with_the_same_generators():
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        net = tiny_net()
        opt = torch.optim.RMSprop(net.parameters(), lr=1e-3, momentum=0.6)
        runner = IterationRunner(net, net, opt, get_technique("combo"), RARE, torch.Generator().manual_seed(3))
        runner(*batch())
        results.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(results[0], results[1])
