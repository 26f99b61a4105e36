"""asymmetric_ce: CE limit, asymmetric/symmetric margin and focal terms, known answers, MONAI, a toy fit."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from asymseg.errors import InputError
from asymseg.losses import asymmetric_ce, asymmetric_ce_map

RARE_SUBSETS_3 = [list(flags) for flags in itertools.product([False, True], repeat=3)]


def _batch(classes: int, *, seed: int = 0, shape=(2, 3, 4, 5), scale: float = 3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn((shape[0], classes, *shape[1:]), generator=g) * scale).to(dtype)
    labels = torch.randint(0, classes, shape, generator=g)
    ignore = torch.rand(shape, generator=g) < 0.3
    return logits, labels, ignore


def _one_hot(labels: torch.Tensor, classes: int, dtype=torch.float64) -> torch.Tensor:
    return F.one_hot(labels, classes).movedim(-1, 1).to(dtype)


# -- the cross-entropy limit ---------------------------------------------------------------------
@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("use_ignore", [False, True])
def test_zero_margin_and_gamma_equal_cross_entropy_for_class_maps(classes, use_ignore):
    logits, labels, ignore = _batch(classes, dtype=torch.float32)
    ignore = ignore if use_ignore else None
    z1 = logits.clone().requires_grad_(True)
    z2 = logits.clone().requires_grad_(True)
    ours = asymmetric_ce(z1, labels, rare=[False] + [True] * (classes - 1), ignore_mask=ignore)
    reference = F.cross_entropy(z2, labels if ignore is None else labels.masked_fill(ignore, -100))
    ours.backward()
    reference.backward()
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(z1.grad, z2.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("use_ignore", [False, True])
def test_zero_margin_and_gamma_equal_cross_entropy_for_one_hot_targets(classes, use_ignore):
    logits, labels, ignore = _batch(classes, seed=1, dtype=torch.float32)
    ignore = ignore if use_ignore else None
    ours = asymmetric_ce(logits, _one_hot(labels, classes, torch.float32), rare=[False, True] + [False] * (classes - 2),
                         ignore_mask=ignore)
    reference = F.cross_entropy(logits, labels if ignore is None else labels.masked_fill(ignore, -100))
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)


def test_zero_margin_and_gamma_equal_cross_entropy_for_soft_targets():
    logits, _, _ = _batch(3, seed=2, dtype=torch.float32)
    soft = torch.softmax(torch.randn(logits.shape, generator=torch.Generator().manual_seed(3)), dim=1)
    ours = asymmetric_ce(logits, soft, rare=[False, True, True])
    torch.testing.assert_close(ours, F.cross_entropy(logits, soft), atol=1e-6, rtol=1e-6)


def test_a_class_map_with_a_channel_axis_is_accepted():
    logits, labels, _ = _batch(2, seed=4)
    assert asymmetric_ce(logits, labels.unsqueeze(1), rare=[False, True], margin=0.5) == \
        asymmetric_ce(logits, labels, rare=[False, True], margin=0.5)


# -- known answers -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("z", "label", "rare", "margin", "gamma", "symmetric", "expected"),
    [
        # margin ln 3 on a rare true class: z~ = [0, -ln 3] -> q_t = 1/4 -> CE = ln 4
        ([0.0, 0.0], 1, [False, True], math.log(3), 0.0, False, math.log(4)),
        # the same margin on a non-rare true class does nothing (asymmetric): CE = ln 2
        ([0.0, 0.0], 0, [False, True], math.log(3), 0.0, False, math.log(2)),
        # symmetric margin acts on class 0 as well
        ([0.0, 0.0], 0, [False, True], math.log(3), 0.0, True, math.log(4)),
        # focal on a non-rare voxel: q_0 = 3/4 -> (1/4)^2 * ln(4/3)
        ([math.log(3), 0.0], 0, [False, True], 0.0, 2.0, False, (1 / 16) * math.log(4 / 3)),
        # a rare voxel keeps the plain CE: q_1 = 3/4 -> ln(4/3)
        ([0.0, math.log(3)], 1, [False, True], 0.0, 2.0, False, math.log(4 / 3)),
        # symmetric focal attenuates the rare voxel too
        ([0.0, math.log(3)], 1, [False, True], 0.0, 2.0, True, (1 / 16) * math.log(4 / 3)),
        # margin and focal together, non-rare voxel of a 3-class problem: q_0 = 1/2, gamma 1
        ([math.log(2), 0.0, 0.0], 0, [False, True, True], 5.0, 1.0, False, 0.5 * math.log(2)),
        # margin then focal on a rare class with rare = [T, F, F] (rare class 0): z~ = [ln2 - ln2, 0, 0]
        ([math.log(2), 0.0, 0.0], 0, [True, False, False], math.log(2), 3.0, False, math.log(3)),
    ],
)
def test_known_answers(z, label, rare, margin, gamma, symmetric, expected):
    logits = torch.tensor(z, dtype=torch.float64).view(1, -1, 1)
    target = torch.tensor([[label]])
    value = asymmetric_ce(logits, target, rare=rare, margin=margin, gamma=gamma, symmetric=symmetric)
    assert value.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    soft = asymmetric_ce(logits, _one_hot(target, len(z)), rare=rare, margin=margin, gamma=gamma,
                         symmetric=symmetric)
    assert soft.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)


# -- focal ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rare", RARE_SUBSETS_3)
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 4.0])
def test_asymmetric_focal_keeps_ce_on_rare_voxels_and_attenuates_the_rest(rare, gamma):
    logits, labels, _ = _batch(3, seed=5)
    per_voxel = asymmetric_ce_map(logits, labels, rare=rare, gamma=gamma)
    ce = F.cross_entropy(logits, labels, reduction="none")
    q_true = torch.softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    rare_voxel = torch.tensor(rare)[labels]
    expected = torch.where(rare_voxel, ce, (1 - q_true) ** gamma * ce)
    torch.testing.assert_close(per_voxel, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("classes", [2, 3])
def test_asymmetric_focal_gradient_on_rare_voxels_equals_the_ce_gradient(classes):
    logits, labels, ignore = _batch(classes, seed=6)
    rare = [False] + [True] * (classes - 1)
    z1 = logits.clone().requires_grad_(True)
    z2 = logits.clone().requires_grad_(True)
    asymmetric_ce(z1, labels, rare=rare, gamma=2.0, ignore_mask=ignore).backward()
    F.cross_entropy(z2, labels.masked_fill(ignore, -100)).backward()
    rare_voxel = (labels > 0).unsqueeze(1).expand_as(logits)
    torch.testing.assert_close(z1.grad[rare_voxel], z2.grad[rare_voxel], rtol=1e-12, atol=1e-15)
    # Non-rare voxels: the focal gradient w (q - y), w = f + gamma q_t (1 - q_t)^(gamma - 1) CE.
    q = torch.softmax(logits, dim=1)
    q_true = q.gather(1, labels.unsqueeze(1)).squeeze(1)
    ce = -torch.log(q_true)
    weight = (1 - q_true) ** 2 + 2.0 * q_true * (1 - q_true) * ce
    expected = weight.unsqueeze(1) * (q - _one_hot(labels, classes)) / (~ignore).sum()
    expected = expected * (~ignore).unsqueeze(1)
    background = (labels == 0).unsqueeze(1).expand_as(logits)
    torch.testing.assert_close(z1.grad[background], expected[background], rtol=1e-10, atol=1e-15)
    assert not torch.allclose(z1.grad[background & ~ignore.unsqueeze(1)], z2.grad[background & ~ignore.unsqueeze(1)])


@pytest.mark.parametrize("gamma", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("classes", [2, 4])
def test_symmetric_focal_matches_monai_focal_loss(gamma, classes):
    monai_losses = pytest.importorskip("monai.losses")
    logits, labels, _ = _batch(classes, seed=7, dtype=torch.float32)
    monai = monai_losses.FocalLoss(use_softmax=True, gamma=gamma, include_background=True, to_onehot_y=True,
                                   reduction="none")
    # MONAI returns the (B, C, *spatial) terms; its "mean" would also average over the class axis.
    reference = monai(logits, labels.unsqueeze(1)).sum(dim=1).mean()
    ours = asymmetric_ce(logits, labels, rare=[False] * classes, gamma=gamma, symmetric=True)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)
    soft = asymmetric_ce(logits, _one_hot(labels, classes, torch.float32), rare=[False] * classes, gamma=gamma,
                         symmetric=True)
    torch.testing.assert_close(soft, reference, atol=1e-6, rtol=1e-6)
    mean_reduced = monai_losses.FocalLoss(use_softmax=True, gamma=gamma, to_onehot_y=True)(logits, labels.unsqueeze(1))
    torch.testing.assert_close(ours / classes, mean_reduced, atol=1e-6, rtol=1e-6)


def test_symmetric_focal_matches_monai_on_soft_targets():
    monai_losses = pytest.importorskip("monai.losses")
    logits, _, _ = _batch(3, seed=8, dtype=torch.float32)
    soft = torch.softmax(torch.randn(logits.shape, generator=torch.Generator().manual_seed(9)), dim=1)
    reference = monai_losses.FocalLoss(use_softmax=True, gamma=2.0, reduction="none")(logits, soft).sum(1).mean()
    ours = asymmetric_ce(logits, soft, rare=[False, True, False], gamma=2.0, symmetric=True)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)


def test_every_class_rare_gives_plain_ce_in_asymmetric_mode():
    logits, labels, _ = _batch(3, seed=10)
    plain = asymmetric_ce(logits, labels, rare=[True, True, True])
    assert asymmetric_ce(logits, labels, rare=[True, True, True], gamma=3.0) == plain


# -- margin --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rare", [[False, True], [True, False], [False, True, True], [False, True, False]])
def test_large_margin_changes_the_loss_of_rare_voxels_only(rare):
    logits, labels, _ = _batch(len(rare), seed=11)
    before = asymmetric_ce_map(logits, labels, rare=rare)
    after = asymmetric_ce_map(logits, labels, rare=rare, margin=5.0)
    rare_voxel = torch.tensor(rare)[labels]
    assert torch.equal(after[~rare_voxel], before[~rare_voxel])
    assert bool((after[rare_voxel] > before[rare_voxel]).all())


def test_symmetric_large_margin_changes_the_loss_of_every_voxel():
    logits, labels, _ = _batch(3, seed=12)
    before = asymmetric_ce_map(logits, labels, rare=[False, True, False])
    after = asymmetric_ce_map(logits, labels, rare=[False, True, False], margin=5.0, symmetric=True)
    assert bool((after > before).all())


def test_margin_is_cross_entropy_on_the_shifted_true_class_logit():
    logits, labels, _ = _batch(3, seed=13)
    rare = torch.tensor([False, True, True])
    shift = 0.7 * _one_hot(labels, 3) * rare.view(1, 3, 1, 1, 1)
    expected = F.cross_entropy(logits - shift, labels, reduction="none")
    torch.testing.assert_close(asymmetric_ce_map(logits, labels, rare=rare, margin=0.7), expected,
                               rtol=1e-12, atol=1e-14)


def test_soft_target_margin_scales_with_the_target():
    logits = torch.tensor([[[0.3], [-0.2]]], dtype=torch.float64)      # (1, 2, 1)
    soft = torch.tensor([[[0.4], [0.6]]], dtype=torch.float64)
    adjusted = logits - 2.0 * soft * torch.tensor([0.0, 1.0], dtype=torch.float64).view(1, 2, 1)
    expected = -(soft * torch.log_softmax(adjusted, dim=1)).sum()
    assert asymmetric_ce(logits, soft, rare=[False, True], margin=2.0).item() == pytest.approx(expected.item(), rel=1e-12)


# -- the fused integer-target kernel against the autograd soft-target path ---------------------------
@pytest.mark.parametrize("classes", [2, 3, 4])
@pytest.mark.parametrize(("margin", "gamma"), [(0.0, 0.0), (0.7, 0.0), (0.0, 0.5), (0.7, 1.0), (0.2, 2.0), (1.5, 3.3),
                                               (0.2, 4.0)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_class_map_and_one_hot_targets_give_the_same_loss_and_gradient(classes, margin, gamma, symmetric):
    for rare in itertools.product([False, True], repeat=classes):
        logits, labels, ignore = _batch(classes, seed=14 + classes)
        z1 = logits.clone().requires_grad_(True)
        z2 = logits.clone().requires_grad_(True)
        kwargs = dict(rare=list(rare), margin=margin, gamma=gamma, symmetric=symmetric, ignore_mask=ignore)
        hard = asymmetric_ce(z1, labels, **kwargs)
        soft = asymmetric_ce(z2, _one_hot(labels, classes), **kwargs)
        hard.backward()
        soft.backward()
        torch.testing.assert_close(hard, soft, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("classes", [2, 3])
def test_fused_kernel_passes_gradcheck(classes):
    logits, labels, ignore = _batch(classes, seed=20, shape=(2, 3, 3))
    z = logits.clone().requires_grad_(True)
    rare = [False, True] + [True] * (classes - 2)
    assert torch.autograd.gradcheck(
        lambda t: asymmetric_ce(t, labels, rare=rare, margin=0.3, gamma=2.5, ignore_mask=ignore), (z,))
    assert torch.autograd.gradcheck(
        lambda t: asymmetric_ce_map(t, labels, rare=rare, margin=0.3, gamma=0.5, symmetric=True), (z,))


def test_the_loss_map_is_zero_on_ignored_voxels_and_averages_to_the_loss():
    logits, labels, ignore = _batch(3, seed=21)
    per_voxel = asymmetric_ce_map(logits, labels, rare=[False, True, True], margin=0.2, gamma=2.0, ignore_mask=ignore)
    assert bool((per_voxel[ignore] == 0).all())
    mean = asymmetric_ce(logits, labels, rare=[False, True, True], margin=0.2, gamma=2.0, ignore_mask=ignore)
    torch.testing.assert_close(per_voxel.sum() / (~ignore).sum(), mean, rtol=1e-12, atol=1e-14)


# -- training behaviour ------------------------------------------------------------------------------
def _fit(margin: float, symmetric: bool = False) -> tuple[float, float]:
    """Fit a logistic layer on 1-D features: 20 rare samples around +1, 400 common around -1.

    Returns the mean decision variable z_1 - z_0 of the rare samples and the boundary x*.
    """
    g = torch.Generator().manual_seed(0)
    rare_x = torch.randn(20, generator=g) + 1.0
    common_x = torch.randn(400, generator=g) - 1.0
    x = torch.cat([rare_x, common_x]).view(-1, 1)
    y = torch.cat([torch.ones(20), torch.zeros(400)]).long()
    model = torch.nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(300):
        optimiser.zero_grad()
        asymmetric_ce(model(x), y, rare=[False, True], margin=margin, symmetric=symmetric).backward()
        optimiser.step()
    with torch.no_grad():
        z = model(x[:20])
        slope = model.weight[1, 0] - model.weight[0, 0]
        offset = model.bias[1] - model.bias[0]
    return (z[:, 1] - z[:, 0]).mean().item(), (-offset / slope).item()


def test_training_with_the_asymmetric_margin_moves_rare_logits_further_from_the_boundary():
    rare_ce, boundary_ce = _fit(0.0)
    rare_lm, boundary_lm = _fit(1.0)
    rare_sym, _ = _fit(1.0, symmetric=True)
    assert rare_lm > rare_ce + 0.3                        # rare logits pushed away from the boundary
    assert boundary_lm < boundary_ce - 0.1                # the boundary moves towards the common class
    assert rare_sym < rare_lm                             # the symmetric margin does not do that


# -- errors ----------------------------------------------------------------------------------------
def test_errors_name_the_problem():
    logits, labels, _ = _batch(2, seed=22)
    with pytest.raises(InputError, match=r"target shape \(2, 3, 4\) does not match logits \(2, 2, 3, 4, 5\)"):
        asymmetric_ce(logits, labels[..., 0], rare=[False, True])
    with pytest.raises(InputError, match="rare has 3 entries but the logits have 2 classes"):
        asymmetric_ce(logits, labels, rare=[False, True, True])
    with pytest.raises(InputError, match="margin must be finite and >= 0, got -1"):
        asymmetric_ce(logits, labels, rare=[False, True], margin=-1.0)
    with pytest.raises(InputError, match="gamma must be finite and >= 0, got inf"):
        asymmetric_ce(logits, labels, rare=[False, True], gamma=float("inf"))
    with pytest.raises(InputError, match=r"class values \[2\] outside \[0, 1\]"):
        asymmetric_ce(logits, labels + 1, rare=[False, True])
    with pytest.raises(InputError, match="logits must be a float tensor"):
        asymmetric_ce(labels.unsqueeze(1).repeat(1, 2, 1, 1, 1), labels, rare=[False, True])
    with pytest.raises(InputError, match="ignore_mask must be a bool tensor"):
        asymmetric_ce(logits, labels, rare=[False, True], ignore_mask=labels)
    with pytest.raises(InputError, match="rare must hold booleans"):
        asymmetric_ce(logits, labels, rare=[0, 2])


def test_any_class_value_is_accepted_at_ignored_voxels():
    logits, labels, ignore = _batch(2, seed=23)
    garbage = labels.masked_fill(ignore, 255)
    assert asymmetric_ce(logits, garbage, rare=[False, True], margin=0.3, gamma=2.0, ignore_mask=ignore) == \
        asymmetric_ce(logits, labels, rare=[False, True], margin=0.3, gamma=2.0, ignore_mask=ignore)
