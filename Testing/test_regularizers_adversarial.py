"""adversarial_perturbation: norm, direction (asymmetric vs symmetric), determinism, model state untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asymseg.errors import InputError
from asymseg.regularizers import adversarial_perturbation, pathway_perturbations, perturbation_rms

RARE = [False, False, True]          # two non-rare classes, one rare


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(2, 4, 3), nn.BatchNorm3d(4), nn.ReLU(), nn.Conv3d(4, 3, 3))  # 10^3 -> 6^3


def _batch(seed: int = 0, batch: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, 2, 10, 10, 10), generator=g)
    labels = torch.randint(0, 2, (batch, 6, 6, 6), generator=g)           # non-rare classes 0 and 1
    labels[:, 2:4, 2:4, 2:4] = 2                                         # rare class 2 in every sample
    return x, labels


def _generator(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("eps", [10.0, 0.5])
def test_every_sample_gets_a_perturbation_of_norm_eps(symmetric, eps):
    x, labels = _batch()
    r = adversarial_perturbation(_net(), x, labels, rare=RARE, eps=eps, symmetric=symmetric, generator=_generator())
    assert r.shape == x.shape and r.dtype == x.dtype and not r.requires_grad
    torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.full((3,), eps), rtol=1e-5, atol=0)


def test_a_sample_without_rare_voxels_gets_its_direction_through_the_batch_as_in_the_authors_code():
    x, labels = _batch()
    labels[1][labels[1] == 2] = 0
    # Training mode: batch norm couples the samples, so sample 1 moves the others' rare losses.
    r = adversarial_perturbation(_net(), x, labels, rare=RARE, generator=_generator())
    torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.full((3,), 10.0), rtol=1e-5, atol=0)
    # Eval mode: no coupling, a zero gradient, no perturbation.
    net = _net().eval()
    r = adversarial_perturbation(net, x, labels, rare=RARE, generator=_generator())
    assert bool((r[1] == 0).all())
    torch.testing.assert_close(r[[0, 2]].flatten(1).norm(dim=1), torch.full((2,), 10.0), rtol=1e-5, atol=0)
    symmetric = adversarial_perturbation(net, x, labels, rare=RARE, symmetric=True, generator=_generator())
    assert symmetric[1].norm().item() == pytest.approx(10.0, rel=1e-5)


def test_ignored_rare_voxels_do_not_count():
    x, labels = _batch()
    ignore = labels == 2
    r = adversarial_perturbation(_net(), x, labels, rare=RARE, generator=_generator(), ignore_mask=ignore)
    assert bool((r == 0).all())


def test_the_asymmetric_direction_does_not_depend_on_the_labels_of_non_rare_voxels():
    x, labels = _batch()
    relabelled = labels.clone()
    non_rare = labels != 2
    relabelled[non_rare] = 1 - labels[non_rare]                           # swap the two non-rare classes
    assert not torch.equal(relabelled, labels)
    first = adversarial_perturbation(_net(), x, labels, rare=RARE, generator=_generator())
    second = adversarial_perturbation(_net(), x, relabelled, rare=RARE, generator=_generator())
    torch.testing.assert_close(first, second, rtol=1e-6, atol=1e-7)
    # ... but it does depend on the rare voxels
    fewer_rare = labels.clone()
    fewer_rare[:, 2, 2, 2] = 0
    third = adversarial_perturbation(_net(), x, fewer_rare, rare=RARE, generator=_generator())
    assert not torch.allclose(first, third, rtol=1e-3, atol=1e-4)


def test_the_symmetric_direction_depends_on_the_labels_of_non_rare_voxels():
    x, labels = _batch()
    relabelled = labels.clone()
    non_rare = labels != 2
    relabelled[non_rare] = 1 - labels[non_rare]
    first = adversarial_perturbation(_net(), x, labels, rare=RARE, symmetric=True, generator=_generator())
    second = adversarial_perturbation(_net(), x, relabelled, rare=RARE, symmetric=True, generator=_generator())
    assert not torch.allclose(first, second, rtol=1e-3, atol=1e-4)


def test_the_perturbation_increases_the_rare_voxels_loss():
    x, labels = _batch()
    net = _net().eval()
    r = adversarial_perturbation(net, x, labels, rare=RARE, eps=0.05, generator=_generator())

    def rare_ce(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            per_voxel = nn.functional.cross_entropy(net(inputs), labels, reduction="none")
        return (per_voxel * (labels == 2)).flatten(1).sum(1)

    assert bool((rare_ce(x + r) > rare_ce(x)).all())
    assert bool((rare_ce(x - r) < rare_ce(x)).all())


def test_a_fixed_generator_gives_the_same_perturbation():
    x, labels = _batch()
    first = adversarial_perturbation(_net(), x, labels, rare=RARE, generator=_generator(3))
    second = adversarial_perturbation(_net(), x, labels, rare=RARE, generator=_generator(3))
    assert torch.equal(first, second)


@pytest.mark.parametrize("training", [True, False])
def test_the_model_state_is_unchanged(training):
    x, labels = _batch()
    net = _net()
    net.train()
    nn.functional.cross_entropy(net(x), labels).backward()              # existing .grad values and BN stats
    net.train(training)
    net[0].weight.requires_grad_(False)                                  # a frozen layer stays frozen
    before = {name: tensor.detach().clone() for name, tensor in net.state_dict().items()}
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in net.named_parameters()}
    flags = {name: p.requires_grad for name, p in net.named_parameters()}

    adversarial_perturbation(net, x, labels, rare=RARE, generator=_generator())
    adversarial_perturbation(net, x, labels, rare=RARE, symmetric=True, generator=_generator())

    assert net.training is training
    for name, tensor in net.state_dict().items():                        # params, running mean/var, counts
        assert torch.equal(tensor, before[name]), name
    for name, p in net.named_parameters():
        assert p.requires_grad is flags[name], name
        if grads[name] is None:
            assert p.grad is None, name
        else:
            assert torch.equal(p.grad, grads[name]), name
    assert net[1].num_batches_tracked.item() == 1


def test_the_training_mode_pass_normalises_with_the_batch_statistics():
    # Same direction as computing the gradient by hand in training mode (not with the running stats).
    x, labels = _batch()
    net = _net().train()
    r = adversarial_perturbation(net, x, labels, rare=RARE, generator=_generator(), xi=1e-12)
    probe = x.clone().requires_grad_(True)
    net_copy = _net().train()
    per_voxel = nn.functional.cross_entropy(net_copy(probe), labels, reduction="none")
    (per_voxel * (labels == 2)).sum().backward()
    g = probe.grad.flatten(1)
    expected = 10.0 * g / g.norm(dim=1, keepdim=True)
    torch.testing.assert_close(r.flatten(1), expected, rtol=1e-3, atol=1e-4)


def test_a_target_at_the_wrong_resolution_is_refused():
    x, labels = _batch()
    with pytest.raises(InputError, match="network output resolution"):
        adversarial_perturbation(_net(), x, torch.zeros((3, 10, 10, 10), dtype=torch.int64), rare=RARE)
    with pytest.raises(InputError, match="eps must be a finite number > 0"):
        adversarial_perturbation(_net(), x, labels, rare=RARE, eps=0.0)
    with pytest.raises(InputError, match="rare has 2 entries"):
        adversarial_perturbation(_net(), x, labels, rare=[False, True])


def _deepmedic(seed: int = 0):
    from asymseg.nets import build_network
    from helpers.nets import TINY

    return build_network("deepmedic", 2, 3, generator=torch.Generator().manual_seed(seed), **TINY)


def test_each_pathway_input_gets_its_own_perturbation_of_norm_eps():
    net = _deepmedic()
    out = net.training_output_size
    g = torch.Generator().manual_seed(2)
    x = torch.randn((3, 2, *net.input_shape((out,) * 3)), generator=g)
    labels = torch.randint(0, 3, (3, out, out, out), generator=g)
    inputs, perturbations = pathway_perturbations(net, x, labels, rare=RARE, eps=10.0, generator=_generator())
    assert len(inputs) == len(perturbations) == 1 + len(net.hparams["lowres_factors"]) > 1
    for clean, expected, r in zip(inputs, net.pathway_inputs(x), perturbations):
        assert torch.equal(clean, expected) and r.shape == clean.shape
        torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.full((3,), 10.0), rtol=1e-5, atol=0)
    # Each perturbation is the normalised gradient with respect to its own input.
    perturbed = [i + r for i, r in zip(inputs, perturbations)]
    assert net(perturbed).shape == net(x).shape
    # A second draw with the same generator seed repeats; the pooled image perturbation differs.
    _, again = pathway_perturbations(net, x, labels, rare=RARE, eps=10.0, generator=_generator())
    assert all(torch.equal(a, b) for a, b in zip(perturbations, again))
    image = adversarial_perturbation(net, x, labels, rare=RARE, eps=10.0, generator=_generator())
    pooled = net.pathway_inputs(x + image)
    assert not torch.allclose(pooled[1] - inputs[1], perturbations[1])


def test_the_pathway_perturbation_of_a_single_input_net_is_the_image_perturbation():
    from asymseg.nets import build_network

    net = build_network("unet", 2, 3, generator=torch.Generator().manual_seed(0), depth=2, base_features=4,
                        training_output_size=8)
    g = torch.Generator().manual_seed(2)
    x = torch.randn((2, 2, 8, 8, 8), generator=g)
    labels = torch.randint(0, 3, (2, 8, 8, 8), generator=g)
    inputs, (r,) = pathway_perturbations(net, x, labels, rare=RARE, generator=_generator())
    assert torch.equal(inputs[0], x)
    assert torch.equal(r, adversarial_perturbation(net, x, labels, rare=RARE, generator=_generator()))


def test_perturbation_rms_per_value():
    assert perturbation_rms(10.0, (4, 37, 37, 37)) == pytest.approx(0.0222, abs=1e-4)
    assert perturbation_rms(10.0, (2, 25, 25, 25)) == pytest.approx(10.0 / (2 * 25 ** 3) ** 0.5, rel=1e-12)
