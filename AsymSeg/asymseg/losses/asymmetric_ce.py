"""Asymmetric large-margin and focal cross-entropy (Li, Kamnitsas & Glocker, MICCAI 2019 / TMI 2021).

One loss covers the cross-entropy baseline, the large-margin loss (LM), the focal loss and their
asymmetric variants, alone or combined (METHOD.md techniques 1-3 and 7):

    z~[v,c] = z[v,c] - m * r[c] * y[v,c]                     (margin on the true-class logit)
    q[v,c]  = softmax_c(z~[v, :])
    f[v,c]  = 1                  if r[c] = 1                 (rare classes keep plain CE)
              (1 - q[v,c])^gamma otherwise                   (focal attenuation)
    L       = -(1/N) sum_v sum_c f[v,c] * y[v,c] * log q[v,c]

r[c] = 1 for the rare classes (``rare``). ``symmetric=True`` gives the original losses: the
margin on every true class (r = all ones in z~) and the attenuation on every class. N counts the voxels that carry a loss (the voxels
not in ``ignore_mask``). m = 0 and gamma = 0 give exactly the cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asymseg.losses._masking import (
    FOCAL_BASE_MIN,
    PreparedTarget,
    RareLike,
    check_logits,
    masked_mean,
    prepare_target,
    rare_vector,
)
from asymseg.errors import InputError


def asymmetric_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    rare: RareLike,
    margin: float = 0.0,
    gamma: float = 0.0,
    symmetric: bool = False,
    ignore_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Asymmetric large-margin focal cross-entropy, averaged over the voxels that carry a loss.

    With z the logits, y the one-hot (or soft) target, r[c] = 1 for rare classes::

        z~[v,c] = z[v,c] - m * r[c] * y[v,c]
        q       = softmax(z~)  over c
        L       = -(1/N) sum_v sum_c f[v,c] y[v,c] log q[v,c],
        f[v,c]  = 1 if r[c] = 1 else (1 - q[v,c])^gamma

    - Large margin (Li et al. 2019, Sec. 2.2; METHOD.md 2): the margin m is subtracted from the
      true-class logit only where the true class is rare, so a rare voxel needs
      z_true - z_other > m for the loss a plain CE gives at 0. With soft targets (mixup) the
      margin scales with the target: m * r[c] * y[v,c]. The margin exists only in training.
    - Focal (METHOD.md 3): rare classes keep the plain CE; only non-rare classes are
      attenuated by (1 - q)^gamma, where q is the margin-adjusted probability when m > 0.
    - ``symmetric=True`` gives the original LM and focal losses: the margin applies to every
      true class (r = all ones in z~) and the attenuation to every class (f = (1 - q)^gamma
      for all c).
    - m = 0 and gamma = 0 give exactly ``torch.nn.functional.cross_entropy`` (mean reduction).

    Numerics: computed in float32 (float64 stays float64) with ``log_softmax``, which is exact
    and finite for any finite logits, so the authors' log(q + 1e-6) stabiliser (METHOD.md,
    ``constants.EPS_LOG``) is not needed and is not applied: it would break the exact CE limit.
    The focal base is 1 - q = -expm1(log q), exact near q = 1 and clamped at
    ``FOCAL_BASE_MIN`` only where q rounds to 1, so gradients stay finite for any gamma >= 0.

    Paper defaults (METHOD.md, BraTS DeepMedic configs): m = 0.2 (range 0.2-2), gamma = 4 alone
    and 2 in the combination (range 2-6).

    Args:
        logits: ``(B, C, *spatial)`` raw network outputs (not probabilities), any float dtype.
        target: int class map ``(B, *spatial)`` (or ``(B, 1, *spatial)``), or a soft / one-hot
            float target ``(B, C, *spatial)``; soft targets need not sum to 1 (an all-zero
            vector contributes 0 but still counts in N unless ignored).
        rare: C booleans, r[c] = True for the rare classes (any subset, e.g. ``[False, True]``
            for the binary tumour core).
        margin: m >= 0. Defaults to 0 (no margin).
        gamma: focusing parameter >= 0. Defaults to 0 (no attenuation).
        symmetric: apply the margin and the attenuation to every class.
        ignore_mask: optional bool ``(B, *spatial)``; True = the voxel carries no loss and is
            excluded from N. Integer targets may hold any value there.

    Returns:
        Scalar float32 (float64 for float64 logits). When no voxel carries a loss the result is
        a zero whose gradient is zero (no NaN).

    Raises:
        InputError: bad shapes or dtypes (both shapes named), ``rare`` of the wrong length,
            a negative or non-finite margin/gamma, class values outside [0, C).

    Shape:
        logits ``(B, C, *spatial)``; target ``(B, *spatial)`` int or ``(B, C, *spatial)`` float;
        ignore_mask ``(B, *spatial)`` bool; output scalar.

    Example:
        >>> z = torch.randn(2, 2, 9, 9, 9); y = torch.randint(0, 2, (2, 9, 9, 9))
        >>> loss = asymmetric_ce(z, y, rare=[False, True], margin=0.2, gamma=2.0)
    """
    loss_map, valid = _loss_map(logits, target, rare, margin, gamma, symmetric, ignore_mask)
    return masked_mean(loss_map, valid)


def asymmetric_ce_map(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    rare: RareLike,
    margin: float = 0.0,
    gamma: float = 0.0,
    symmetric: bool = False,
    ignore_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-voxel loss of :func:`asymmetric_ce`, without the reduction.

    ``loss[v] = -sum_c f[v,c] y[v,c] log q[v,c]`` (see :func:`asymmetric_ce` for the terms);
    ignored voxels hold 0.

    Args:
        logits, target, rare, margin, gamma, symmetric, ignore_mask: as in :func:`asymmetric_ce`.

    Returns:
        ``(B, *spatial)`` float32 (float64 for float64 logits).
    """
    loss_map, valid = _loss_map(logits, target, rare, margin, gamma, symmetric, ignore_mask)
    if valid is None:
        return loss_map
    return torch.where(valid, loss_map, torch.zeros_like(loss_map))


def margin_adjusted_logits(z: torch.Tensor, prepared: PreparedTarget, rare_flags: torch.Tensor,
                           margin: float, *, all_rare: bool) -> torch.Tensor:
    """z~ = z - m * r[c] * y[v,c] on validated inputs (compute dtype, see ``_masking``).

    Args:
        z: ``(B, C, *spatial)`` logits in the compute dtype.
        prepared: the validated target.
        rare_flags: bool ``(C,)`` r on z's device.
        margin: m (0 returns z unchanged).
        all_rare: every class is rare (skips the r product).

    Returns:
        ``(B, C, *spatial)`` margin-adjusted logits.
    """
    if margin == 0.0:
        return z
    num_classes = z.shape[1]
    class_shape = (1, num_classes) + (1,) * (z.dim() - 2)
    if prepared.index is not None:
        classes = torch.arange(num_classes, device=z.device).view(class_shape)
        hit = prepared.index.unsqueeze(1) == classes          # y[v,c] as bool
        if not all_rare:
            hit = hit & rare_flags.view(class_shape)           # r[c] * y[v,c]
        return torch.where(hit, z - margin, z)
    soft = prepared.soft
    if not all_rare:
        soft = soft * rare_flags.view(class_shape).to(z.dtype)
    return z - margin * soft


def focal_factor(log_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """(1 - q)^gamma from log q, computed as (-expm1(log q))^gamma with the base clamped at
    ``FOCAL_BASE_MIN`` (finite value and gradient for every gamma >= 0)."""
    return (-torch.expm1(log_q)).clamp_min(FOCAL_BASE_MIN).pow(gamma)


def check_hyper_parameters(margin: float, gamma: float) -> None:
    """Raise InputError unless margin and gamma are finite and >= 0."""
    for name, value in (("margin", margin), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{name} must be a number >= 0, got {value!r}")
        if not (value >= 0.0 and value != float("inf")):
            raise InputError(f"{name} must be finite and >= 0, got {value}")


def _loss_map(logits, target, rare, margin, gamma, symmetric, ignore_mask):
    check_hyper_parameters(margin, gamma)
    margin, gamma = float(margin), float(gamma)
    z = check_logits(logits)
    prepared = prepare_target(z, target, ignore_mask)
    num_classes = z.shape[1]
    class_shape = (1, num_classes) + (1,) * (z.dim() - 2)
    # Margin on the classes with r[c] = 1; attenuation on the classes with r[c] = 0.
    # Symmetric: margin on every class and attenuation on every class.
    rare_flags = rare_vector(rare, num_classes, z.device)
    if symmetric:
        rare_flags = torch.ones_like(rare_flags)
    flag_list = rare_flags.tolist()
    margin_all, margin_none = all(flag_list), not any(flag_list)
    attenuate_all = symmetric or margin_none
    attenuate_none = not symmetric and margin_all

    z_adj = z if margin_none else margin_adjusted_logits(z, prepared, rare_flags, margin, all_rare=margin_all)
    log_q = F.log_softmax(z_adj, dim=1)

    if prepared.index is not None:
        index = prepared.index
        log_q_true = log_q.gather(1, index.unsqueeze(1)).squeeze(1)    # log q[v, y_v]
        loss = -log_q_true
        if gamma != 0.0 and not attenuate_none:
            attenuation = focal_factor(log_q_true, gamma)
            if not attenuate_all:                                      # rare true class: f = 1
                attenuation = torch.where(rare_flags[index], torch.ones_like(attenuation), attenuation)
            loss = loss * attenuation
        return loss, prepared.valid

    soft = prepared.soft
    terms = -(soft * log_q)
    if gamma != 0.0 and not attenuate_none:
        attenuation = focal_factor(log_q, gamma)
        if not attenuate_all:
            attenuation = torch.where(rare_flags.view(class_shape), torch.ones_like(attenuation), attenuation)
        terms = terms * attenuation
    return terms.sum(dim=1), prepared.valid
