"""Numerical robustness of the losses: huge logits, half precision, saturation, empty batches."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from asymseg.losses import asymmetric_ce, focal_dice_loss, soft_dice_loss

SETTINGS = [  # (margin, gamma, symmetric)
    (0.0, 0.0, False), (0.2, 0.0, False), (0.0, 0.5, False), (0.2, 2.0, False), (1.0, 4.0, False),
    (0.2, 2.0, True), (0.0, 0.5, True),
]


def _labels(classes: int, seed: int = 0, shape=(2, 4, 4, 4)) -> torch.Tensor:
    return torch.randint(0, classes, shape, generator=torch.Generator().manual_seed(seed))


def _one_hot(labels: torch.Tensor, classes: int, dtype=torch.float32) -> torch.Tensor:
    return F.one_hot(labels, classes).movedim(-1, 1).to(dtype)


def _finite_loss_and_gradient(logits: torch.Tensor, target: torch.Tensor, **kwargs) -> tuple[float, torch.Tensor]:
    z = logits.clone().requires_grad_(True)
    loss = asymmetric_ce(z, target, **kwargs)
    loss.backward()
    assert torch.isfinite(loss), kwargs
    assert bool(torch.isfinite(z.grad).all()), kwargs
    return loss.item(), z.grad


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize(("margin", "gamma", "symmetric"), SETTINGS)
@pytest.mark.parametrize("soft", [False, True])
def test_logits_of_plus_minus_1e4_give_finite_losses_and_gradients(classes, margin, gamma, symmetric, soft):
    g = torch.Generator().manual_seed(1)
    labels = _labels(classes)
    logits = torch.where(torch.rand((2, classes, 4, 4, 4), generator=g) < 0.5, -1e4, 1e4)
    target = _one_hot(labels, classes) if soft else labels
    rare = [False] + [True] * (classes - 1)
    value, _ = _finite_loss_and_gradient(logits, target, rare=rare, margin=margin, gamma=gamma, symmetric=symmetric)
    assert 0.0 <= value <= 2.1e4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("margin", "gamma", "symmetric"), SETTINGS)
def test_half_precision_logits_are_computed_in_float32(dtype, margin, gamma, symmetric):
    g = torch.Generator().manual_seed(2)
    labels = _labels(3)
    logits = (torch.randn((2, 3, 4, 4, 4), generator=g) * 4).to(dtype)
    rare = [False, True, True]
    z = logits.clone().requires_grad_(True)
    loss = asymmetric_ce(z, labels, rare=rare, margin=margin, gamma=gamma, symmetric=symmetric)
    loss.backward()
    assert loss.dtype == torch.float32
    assert z.grad.dtype == dtype and bool(torch.isfinite(z.grad).all())
    reference = asymmetric_ce(logits.float(), labels, rare=rare, margin=margin, gamma=gamma, symmetric=symmetric)
    assert loss.item() == reference.item()
    big = torch.full_like(logits, 6e4).masked_fill(torch.rand(logits.shape, generator=g) < 0.5, -6e4)
    _finite_loss_and_gradient(big, labels, rare=rare, margin=margin, gamma=gamma, symmetric=symmetric)


@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("soft", [False, True])
def test_saturated_probabilities_keep_the_focal_gradient_finite(gamma, soft):
    # q_t rounds to exactly 1 (and 0): (1 - q)^(gamma - 1) would be inf for gamma < 1.
    logits = torch.tensor([[[200.0, -200.0, 0.0], [-200.0, 200.0, 0.0]]])       # (1, 2, 3)
    labels = torch.tensor([[0, 0, 1]])
    for symmetric in (False, True):
        target = _one_hot(labels, 2) if soft else labels
        _finite_loss_and_gradient(logits, target, rare=[False, True], margin=0.5, gamma=gamma, symmetric=symmetric)


@pytest.mark.parametrize(("margin", "gamma", "symmetric"), SETTINGS)
def test_a_batch_without_rare_voxels_is_defined(margin, gamma, symmetric):
    logits = torch.randn((2, 2, 4, 4, 4), generator=torch.Generator().manual_seed(3))
    background = torch.zeros((2, 4, 4, 4), dtype=torch.int64)
    value, _ = _finite_loss_and_gradient(logits, background, rare=[False, True], margin=margin, gamma=gamma,
                                         symmetric=symmetric)
    if not symmetric:   # no rare voxel: the margin does nothing; only the focal term acts
        assert value == pytest.approx(asymmetric_ce(logits, background, rare=[False, True], gamma=gamma).item())


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize(("margin", "gamma", "symmetric"), SETTINGS)
def test_an_all_ignored_batch_gives_a_zero_loss_with_a_zero_gradient(soft, margin, gamma, symmetric):
    logits = torch.randn((2, 3, 4, 4, 4), generator=torch.Generator().manual_seed(4))
    labels = _labels(3)
    target = _one_hot(labels, 3) if soft else labels
    z = logits.clone().requires_grad_(True)
    loss = asymmetric_ce(z, target, rare=[False, True, True], margin=margin, gamma=gamma, symmetric=symmetric,
                         ignore_mask=torch.ones_like(labels, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert bool((z.grad == 0).all())


def test_ignored_voxels_with_garbage_soft_targets_do_not_leak():
    logits = torch.randn((1, 2, 6), generator=torch.Generator().manual_seed(5))
    soft = torch.tensor([[[1.0, 0.0, 0.3, float("nan"), float("inf"), -5.0], [0.0, 1.0, 0.7, 1.0, 1.0, 1.0]]])
    ignore = torch.tensor([[False, False, False, True, True, True]])
    z = logits.clone().requires_grad_(True)
    loss = asymmetric_ce(z, soft, rare=[False, True], margin=0.2, gamma=2.0, ignore_mask=ignore)
    loss.backward()
    assert torch.isfinite(loss) and bool(torch.isfinite(z.grad).all()) and bool((z.grad[..., 3:] == 0).all())
    clean = asymmetric_ce(logits[..., :3], soft[..., :3], rare=[False, True], margin=0.2, gamma=2.0)
    torch.testing.assert_close(loss, clean)


@pytest.mark.parametrize("loss_fn", ["dice", "focal-dice"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dice_losses_stay_finite_for_huge_half_precision_logits_and_empty_batches(loss_fn, dtype):
    labels = _labels(3)
    logits = torch.full((2, 3, 4, 4, 4), 6e4).masked_fill(
        torch.rand((2, 3, 4, 4, 4), generator=torch.Generator().manual_seed(6)) < 0.5, -6e4).to(dtype)
    for ignore in (None, torch.ones_like(labels, dtype=torch.bool)):
        for gamma, symmetric in itertools.product([0.5, 2.0], [False, True]):
            z = logits.clone().requires_grad_(True)
            if loss_fn == "dice":
                loss = soft_dice_loss(z, labels, ignore_mask=ignore)
            else:
                loss = focal_dice_loss(z, labels, rare=[False, True, False], gamma=gamma, margin=0.2,
                                       symmetric=symmetric, ignore_mask=ignore)
            loss.backward()
            assert torch.isfinite(loss) and bool(torch.isfinite(z.grad).all())
            if ignore is not None:
                assert loss.item() == 0.0   # nothing left: every class "absent from both" scores DSC 1
