"""soft_dice_loss and focal_dice_loss: hand-computed answers, MONAI, masks, limits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from asymseg.errors import InputError
from asymseg.losses import focal_dice_loss, soft_dice_loss

S = 1e-5
# Four voxels, two classes, foreground probabilities q1 = [0.9, 0.2, 0.6, 0.1], labels [1, 0, 1, 0].
Q1 = torch.tensor([0.9, 0.2, 0.6, 0.1], dtype=torch.float64)
LOGITS = torch.log(torch.stack([1 - Q1, Q1])).unsqueeze(0)          # (1, 2, 4): softmax gives (1 - q1, q1)
LABELS = torch.tensor([[1, 0, 1, 0]])
# foreground: TP = 1.5, FP = 0.3, FN = 0.5; background: TP = 1.7, FP = 0.5, FN = 0.3
DSC_FG = (3.0 + S) / (3.8 + S)
DSC_BG = (3.4 + S) / (4.2 + S)


def test_soft_dice_known_answers():
    assert soft_dice_loss(LOGITS, LABELS).item() == pytest.approx(1 - DSC_FG, rel=1e-12)
    both = soft_dice_loss(LOGITS, LABELS, include_background=True).item()
    assert both == pytest.approx(1 - (DSC_FG + DSC_BG) / 2, rel=1e-12)


def test_focal_dice_known_answers():
    # Rare foreground: no attenuation, the plain soft Dice.
    assert focal_dice_loss(LOGITS, LABELS, rare=[False, True], gamma=2.0).item() == pytest.approx(1 - DSC_FG, rel=1e-12)
    # Non-rare foreground: FN~ = sum (1 - q)^3 y = 0.1^3 + 0.4^3 = 0.065.
    assert focal_dice_loss(LOGITS, LABELS, rare=[False, False], gamma=2.0).item() == \
        pytest.approx((0.3 + 0.065) / (3.8 + S), rel=1e-12)
    # Background too (non-rare): FN~ = 0.2^3 + 0.1^3 = 0.009.
    value = focal_dice_loss(LOGITS, LABELS, rare=[False, True], gamma=2.0, include_background=True).item()
    assert value == pytest.approx(((0.5 + 0.009) / (4.2 + S) + (1 - DSC_FG)) / 2, rel=1e-12)
    # Symmetric: every class attenuated.
    value = focal_dice_loss(LOGITS, LABELS, rare=[False, True], gamma=2.0, symmetric=True).item()
    assert value == pytest.approx((0.3 + 0.065) / (3.8 + S), rel=1e-12)


def test_focal_dice_with_gamma_zero_is_the_soft_dice():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 3, 5, 5, 5), generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 5, 5, 5), generator=g)
    for include_background in (False, True):
        torch.testing.assert_close(
            focal_dice_loss(logits, labels, rare=[False, True, False], gamma=0.0, include_background=include_background),
            soft_dice_loss(logits, labels, include_background=include_background), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("include_background", [False, True])
def test_soft_dice_matches_monai_batch_dice(include_background):
    monai_losses = pytest.importorskip("monai.losses")
    g = torch.Generator().manual_seed(1)
    logits = torch.randn((2, 3, 6, 6, 6), generator=g)
    labels = torch.randint(0, 3, (2, 6, 6, 6), generator=g)
    reference = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=True, include_background=include_background,
                                      smooth_nr=S, smooth_dr=S)(logits, labels.unsqueeze(1))
    ours = soft_dice_loss(logits, labels, include_background=include_background)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)


def test_ignored_voxels_are_left_out_of_every_sum():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn((2, 3, 4, 4, 4), generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 4, 4, 4), generator=g)
    ignore = torch.rand((2, 4, 4, 4), generator=g) < 0.4
    kept_logits = logits.movedim(1, -1)[~ignore].T.unsqueeze(0)            # (1, C, kept voxels)
    kept_labels = labels[~ignore].unsqueeze(0)
    garbage = labels.masked_fill(ignore, 99)
    torch.testing.assert_close(soft_dice_loss(logits, garbage, ignore_mask=ignore),
                               soft_dice_loss(kept_logits, kept_labels), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        focal_dice_loss(logits, garbage, rare=[False, True, False], gamma=2.0, margin=0.3, ignore_mask=ignore),
        focal_dice_loss(kept_logits, kept_labels, rare=[False, True, False], gamma=2.0, margin=0.3),
        rtol=1e-12, atol=1e-14)


def test_one_hot_and_class_map_targets_agree():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn((2, 3, 4, 4, 4), generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 4, 4, 4), generator=g)
    one_hot = F.one_hot(labels, 3).movedim(-1, 1).double()
    for kwargs in ({"rare": [False, True, True], "gamma": 2.0, "margin": 0.5}, {"rare": None, "gamma": 0.0}):
        torch.testing.assert_close(focal_dice_loss(logits, labels, **kwargs), focal_dice_loss(logits, one_hot, **kwargs),
                                   rtol=1e-12, atol=1e-14)


def test_focal_dice_uses_margin_adjusted_probabilities():
    # One rare voxel with z = [0, 0] and margin ln 3: q~_fg = 1/4 -> TP = 1/4, FP = 0, FN = 3/4.
    logits = torch.zeros((1, 2, 1), dtype=torch.float64)
    labels = torch.tensor([[1]])
    value = focal_dice_loss(logits, labels, rare=[False, True], gamma=2.0, margin=math.log(3)).item()
    assert value == pytest.approx(0.75 / (0.5 + 0.75 + S), rel=1e-12)


def test_perfect_prediction_scores_almost_zero_and_gradients_flow():
    labels = torch.tensor([[0, 1, 1, 0]])
    logits = (F.one_hot(labels, 2).movedim(-1, 1).double() * 40 - 20).requires_grad_(True)
    loss = soft_dice_loss(logits, labels)
    assert loss.item() < 1e-8
    focal_dice_loss(logits, labels, rare=[False, True], gamma=2.0).backward()
    assert bool(torch.isfinite(logits.grad).all())


def test_dice_errors():
    with pytest.raises(InputError, match="smooth must be > 0"):
        soft_dice_loss(LOGITS, LABELS, smooth=0.0)
    with pytest.raises(InputError, match="rare has 3 entries"):
        focal_dice_loss(LOGITS, LABELS, rare=[False, True, True])
    with pytest.raises(InputError, match="gamma must be finite and >= 0"):
        focal_dice_loss(LOGITS, LABELS, rare=[False, True], gamma=-2.0)
