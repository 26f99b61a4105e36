"""Soft Dice loss and the asymmetric focal-Dice loss (baselines; Li et al., TMI 2021).

Batch Dice in the nnU-Net form: true positives, false positives and false negatives are summed
over the batch and all voxels that carry a loss, per class c, with q = softmax(z~)::

    TP_c = sum_v q[v,c] y[v,c]      FP_c = sum_v q[v,c] (1 - y[v,c])      FN_c = sum_v (1 - q[v,c]) y[v,c]
    soft Dice:   L = mean_c (FP_c + FN_c) / (2 TP_c + FP_c + FN_c + s)  = 1 - mean_c DSC_c,
                 DSC_c = (2 TP_c + s) / (2 TP_c + FP_c + FN_c + s)
    focal Dice:  L = mean_c (FP_c + FN~_c) / (2 TP_c + FP_c + FN_c + s),
                 FN~_c = sum_v f[v,c] (1 - q[v,c]) y[v,c],  f = 1 for rare c, (1 - q)^gamma otherwise

The mean runs over the foreground classes (c >= 1) unless ``include_background``. A class absent
from both target and prediction scores DSC 1 (loss 0). Ignored voxels are left out of every sum.
"""

from __future__ import annotations

import torch

from asymseg.errors import InputError
from asymseg.losses._masking import (
    FOCAL_BASE_MIN,
    RareLike,
    check_logits,
    one_hot,
    prepare_target,
    rare_flags,
)
from asymseg.losses.asymmetric_ce import _power, check_hyper_parameters, margin_adjusted_logits

#: Dice smoothing s, as in nnU-Net (the authors' U-Net baseline, METHOD.md 1).
DICE_SMOOTH = 1e-5


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_mask: torch.Tensor | None = None,
    include_background: bool = False,
    smooth: float = DICE_SMOOTH,
) -> torch.Tensor:
    """Soft (batch) Dice loss 1 - mean_c DSC_c on softmax(z) (METHOD.md 1, Dice baseline).

    ``DSC_c = (2 TP_c + s) / (2 TP_c + FP_c + FN_c + s)`` with TP/FP/FN summed over the batch and
    every voxel that carries a loss (not in ``ignore_mask``); the mean runs over the classes
    c >= 1 (all classes with ``include_background``). Equals MONAI's
    ``DiceLoss(softmax=True, batch=True, smooth_nr=s, smooth_dr=s)``.

    Args:
        logits: ``(B, C, *spatial)`` raw network outputs, any float dtype (computed in float32).
        target: int class map ``(B, *spatial)`` or soft / one-hot float ``(B, C, *spatial)``.
        ignore_mask: optional bool ``(B, *spatial)``; True = left out of every sum.
        include_background: average over class 0 as well. Defaults to False (nnU-Net).
        smooth: s > 0. Defaults to 1e-5.

    Returns:
        Scalar in [0, 1] (float32, float64 for float64 logits).

    Raises:
        InputError: bad shapes or dtypes, class values outside [0, C), smooth <= 0.
    """
    return focal_dice_loss(logits, target, rare=None, gamma=0.0, ignore_mask=ignore_mask,
                           include_background=include_background, smooth=smooth)


def focal_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    rare: RareLike | None,
    gamma: float = 2.0,
    margin: float = 0.0,
    symmetric: bool = False,
    ignore_mask: torch.Tensor | None = None,
    include_background: bool = False,
    smooth: float = DICE_SMOOTH,
) -> torch.Tensor:
    """Asymmetric focal Dice loss (Li et al., TMI 2021; METHOD.md 3, "focal-Dice").

    The false-negative term of the soft Dice is weighted per voxel by f = (1 - q)^gamma for
    non-rare classes and by 1 for rare classes; the false positives and the denominator keep
    the plain soft-Dice terms::

        L = mean_c (FP_c + sum_v f[v,c] (1 - q[v,c]) y[v,c]) / (2 TP_c + FP_c + FN_c + s)

    q = softmax(z~) with the large-margin logits z~ = z - m r y when ``margin`` > 0, as in the
    authors' U-Net. gamma = 0 (or every class rare) gives exactly :func:`soft_dice_loss`.
    ``symmetric=True`` weights every class by (1 - q)^gamma and puts the margin on every class.
    The authors add this term to the (focal) CE; :class:`asymseg.techniques.Technique` does so
    for ``loss="focal-dice"``.

    Args:
        logits: ``(B, C, *spatial)`` raw network outputs, any float dtype (computed in float32).
        target: int class map ``(B, *spatial)`` or soft / one-hot float ``(B, C, *spatial)``.
        rare: C booleans, True for the rare classes (None: no class is rare).
        gamma: focusing parameter >= 0. Defaults to 2.
        margin: large margin m >= 0 on the rare true-class logits. Defaults to 0.
        symmetric: attenuate every class (and margin on every class).
        ignore_mask: optional bool ``(B, *spatial)``; True = left out of every sum.
        include_background: average over class 0 as well. Defaults to False.
        smooth: s > 0. Defaults to 1e-5.

    Returns:
        Scalar (float32, float64 for float64 logits).

    Raises:
        InputError: bad shapes or dtypes, ``rare`` of the wrong length, negative gamma/margin,
            smooth <= 0.
    """
    check_hyper_parameters(margin, gamma)
    if not (isinstance(smooth, (int, float)) and smooth > 0.0):
        raise InputError(f"smooth must be > 0, got {smooth!r}")
    z = check_logits(logits)
    num_classes = z.shape[1]
    prepared = prepare_target(z, target, ignore_mask)
    if symmetric:
        flags = (True,) * num_classes
    else:
        flags = rare_flags(rare, num_classes) if rare is not None else (False,) * num_classes
    flag_tensor = torch.tensor(flags, dtype=torch.bool, device=z.device)
    z_adj = z
    if margin != 0.0 and any(flags):
        z_adj = margin_adjusted_logits(z, prepared, flag_tensor, float(margin), all_rare=all(flags))
    q = torch.softmax(z_adj, dim=1)
    y = prepared.soft if prepared.soft is not None else one_hot(prepared.index, num_classes, z.dtype)
    if prepared.valid is not None:
        keep = prepared.valid.unsqueeze(1).to(z.dtype)
        q, y = q * keep, y * keep

    dims = [0, *range(2, z.dim())]
    tp = (q * y).sum(dims)
    q_sum = q.sum(dims)
    y_sum = y.sum(dims)
    fp = q_sum - tp
    fn = y_sum - tp
    denominator = q_sum + y_sum + smooth                    # 2TP + FP + FN + s
    attenuated = (True,) * num_classes if symmetric else tuple(not f for f in flags)
    if gamma != 0.0 and any(attenuated):
        weight = _power((1.0 - q).clamp_min(FOCAL_BASE_MIN), float(gamma))          # (1 - q)^gamma
        if not all(attenuated):
            class_shape = (1, num_classes) + (1,) * (z.dim() - 2)
            attenuated_class = torch.tensor(attenuated, dtype=torch.bool, device=z.device).view(class_shape)
            weight = torch.where(attenuated_class, weight, torch.ones_like(weight))
        fn = (weight * (y - q * y)).sum(dims)               # sum_v f (1 - q) y
    per_class = (fp + fn) / denominator
    if not include_background:
        per_class = per_class[1:]
    return per_class.mean()
