"""Asymmetric large-margin and focal cross-entropy (Li, Kamnitsas & Glocker, MICCAI 2019 / TMI 2021).

One loss covers the cross-entropy baseline, the large-margin loss (LM), the focal loss and their
asymmetric variants, alone or combined (METHOD.md techniques 1-3 and 7):

    z~[v,c] = z[v,c] - m * r[c] * y[v,c]                     (margin on the true-class logit)
    q[v,c]  = softmax_c(z~[v, :])
    f[v,c]  = 1                  if r[c] = 1                 (rare classes keep plain CE)
              (1 - q[v,c])^gamma otherwise                   (focal attenuation)
    L       = -(1/N) sum_v sum_c f[v,c] * y[v,c] * log q[v,c]

r[c] = 1 for the rare classes (``rare``). ``symmetric=True`` gives the original losses: the
margin on every true class (r = all ones in z~) and the attenuation on every class. N counts
the voxels that carry a loss (the voxels not in ``ignore_mask``). m = 0 and gamma = 0 give
exactly the cross-entropy.

Integer targets run through a fused kernel with an analytic gradient (:class:`_HardTargetFocalCE`);
soft targets through plain autograd. Tests check that both agree to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from asymseg.errors import InputError
from asymseg.losses._masking import (
    FOCAL_BASE_MIN,
    PreparedTarget,
    RareLike,
    check_logits,
    masked_mean,
    prepare_target,
    rare_flags,
)


def asymmetric_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    rare: RareLike,
    margin: float = 0.0,
    gamma: float = 0.0,
    symmetric: bool = False,
    ignore_mask: torch.Tensor | None = None,
    margin_symmetric: bool | None = None,
    focal_symmetric: bool | None = None,
    count_ignored: bool = False,
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
        margin_symmetric, focal_symmetric: the symmetry of each part on its own (None: as
            ``symmetric``), e.g. an asymmetric margin with a symmetric focal term.
        count_ignored: divide by every voxel, ignored ones included, as the authors' mixup step
            does (their cost divides by the whole segment); default: by the voxels with a loss.

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
    return _compute(logits, target, rare, margin, gamma, symmetric, ignore_mask, reduce=True,
                    margin_symmetric=margin_symmetric, focal_symmetric=focal_symmetric,
                    count_ignored=count_ignored)


def asymmetric_ce_map(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    rare: RareLike,
    margin: float = 0.0,
    gamma: float = 0.0,
    symmetric: bool = False,
    ignore_mask: torch.Tensor | None = None,
    margin_symmetric: bool | None = None,
    focal_symmetric: bool | None = None,
) -> torch.Tensor:
    """Per-voxel loss of :func:`asymmetric_ce`, without the reduction.

    ``loss[v] = -sum_c f[v,c] y[v,c] log q[v,c]`` (see :func:`asymmetric_ce` for the terms);
    ignored voxels hold 0.

    Args:
        logits, target, rare, margin, gamma, symmetric, ignore_mask, margin_symmetric,
            focal_symmetric: as in :func:`asymmetric_ce`.

    Returns:
        ``(B, *spatial)`` float32 (float64 for float64 logits).
    """
    return _compute(logits, target, rare, margin, gamma, symmetric, ignore_mask, reduce=False,
                    margin_symmetric=margin_symmetric, focal_symmetric=focal_symmetric)


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
    return _power((-torch.expm1(log_q)).clamp_min(FOCAL_BASE_MIN), float(gamma))


def check_hyper_parameters(margin: float, gamma: float) -> None:
    """Raise InputError unless margin and gamma are finite and >= 0."""
    for name, value in (("margin", margin), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{name} must be a number >= 0, got {value!r}")
        if not (value >= 0.0 and value != float("inf")):
            raise InputError(f"{name} must be finite and >= 0, got {value}")


def _compute(logits: torch.Tensor, target: torch.Tensor, rare: RareLike, margin: float, gamma: float,
             symmetric: bool, ignore_mask: torch.Tensor | None, *, reduce: bool,
             margin_symmetric: bool | None = None, focal_symmetric: bool | None = None,
             count_ignored: bool = False) -> torch.Tensor:
    """Validate, then run the integer-target kernel or the soft-target autograd path."""
    check_hyper_parameters(margin, gamma)
    margin, gamma = float(margin), float(gamma)
    z = check_logits(logits)
    prepared = prepare_target(z, target, ignore_mask)
    num_classes = z.shape[1]
    margin_sym = symmetric if margin_symmetric is None else bool(margin_symmetric)
    focal_sym = symmetric if focal_symmetric is None else bool(focal_symmetric)
    # The margin acts on the classes with r[c] = 1, the attenuation on those with r[c] = 0;
    # a symmetric part acts on every class.
    flags = rare_flags(rare, num_classes)
    margin_flags = (True,) * num_classes if margin_sym else flags
    margin_none = margin == 0.0 or not any(margin_flags)
    attenuate_all = focal_sym or not any(flags)
    attenuate_none = gamma == 0.0 or (not attenuate_all and all(flags))

    if prepared.index is not None:
        margins = None if margin_none else tuple(margin if f else 0.0 for f in margin_flags)     # m r[c]
        attenuated = None if attenuate_none or attenuate_all else tuple(0.0 if f else 1.0 for f in flags)
        return _HardTargetFocalCE.apply(z, prepared.index, margins, attenuated,
                                        0.0 if attenuate_none else gamma, prepared.valid, reduce, count_ignored)

    class_shape = (1, num_classes) + (1,) * (z.dim() - 2)
    flag_tensor = torch.tensor(flags, dtype=torch.bool, device=z.device)
    margin_tensor = torch.tensor(margin_flags, dtype=torch.bool, device=z.device)
    z_adj = z if margin_none else margin_adjusted_logits(z, prepared, margin_tensor, margin,
                                                         all_rare=all(margin_flags))
    log_q = F.log_softmax(z_adj, dim=1)
    terms = -(prepared.soft * log_q)
    if not attenuate_none:
        attenuation = focal_factor(log_q, gamma)
        if not attenuate_all:
            attenuation = torch.where(flag_tensor.view(class_shape), torch.ones_like(attenuation), attenuation)
        terms = terms * attenuation
    loss_map = terms.sum(dim=1)
    if reduce:
        return loss_map.mean() if count_ignored else masked_mean(loss_map, prepared.valid)
    if prepared.valid is None:
        return loss_map
    return torch.where(prepared.valid, loss_map, torch.zeros_like(loss_map))


def _power(base: torch.Tensor, exponent: float) -> torch.Tensor:
    """base ** exponent; small integer exponents by repeated squaring (much faster than pow on CPU)."""
    if exponent == 0.0:
        return torch.ones_like(base)
    if exponent.is_integer() and 1 <= exponent <= 16:
        n, result, square = int(exponent), None, base
        while n:
            if n & 1:
                result = square if result is None else result * square
            n >>= 1
            if n:
                square = square * square
        return result
    return base.pow(exponent)


class _HardTargetFocalCE(torch.autograd.Function):
    """:func:`asymmetric_ce` for integer targets, fused, with an analytic backward.

    With t = y_v, z~ = z - m r y, q = softmax(z~), CE_v = -log q_t and f_v = (1 - q_t)^gamma on
    voxels whose true class is attenuated (1 otherwise)::

        dL_v/dz[c] = w_v * (q[c] - y[v,c]),
        w_v = f_v + gamma * q_t * (1 - q_t)^(gamma - 1) * CE_v   (attenuated), 1 otherwise.

    One scalar per voxel scales the familiar softmax-minus-target gradient; the margin is a
    constant shift, so dz~/dz = I. (1 - q_t)^(gamma - 1) is taken as f_v / base with
    base = max(1 - q_t, FOCAL_BASE_MIN), finite for every gamma >= 0. The mean over the voxels
    that carry a loss is folded in (``reduce``), so no extra autograd nodes are created.

    Two kernels, same maths: C = 2 works on the logit difference only (u = z_t - z_other - m_t,
    CE = softplus(-u), 1 - q_t = sigmoid(-u)); C > 2 on the softmax over classes. Both use
    fewer transcendental calls than log_softmax plus its backward, so loss and gradient cost
    about as much as torch's cross-entropy.

    Arguments: z (B, C, *S) compute dtype; index (B, *S) int64; margins: C floats m r[c] or
    None; attenuated: C floats (1 = the class is attenuated) or None (every class, when
    gamma > 0); gamma (0 = no focal term); valid: bool (B, *S) or None; reduce: return the
    mean over valid voxels instead of the per-voxel map; count_ignored: with ``reduce``,
    divide by every voxel instead of the valid ones.
    """

    @staticmethod
    def forward(ctx, z, index, margins, attenuated, gamma, valid, reduce, count_ignored=False):  # noqa: D102
        binary = z.shape[1] == 2
        if binary:
            loss, saved = _binary_forward(z, index, margins, attenuated, gamma)
        else:
            loss, saved = _general_forward(z, index, margins, attenuated, gamma)
        weights = None if valid is None else valid.to(z.dtype)
        ctx.binary, ctx.reduce = binary, reduce
        if reduce:
            if weights is None:
                count = float(max(loss.numel(), 1))
                out = loss.mean() if loss.numel() else loss.sum()
            else:
                count = float(max(loss.numel(), 1)) if count_ignored else max(float(weights.sum()), 1.0)
                out = (loss * weights).sum() / count
            ctx.count = count
        else:
            out = loss if weights is None else loss * weights
        ctx.save_for_backward(weights, *saved)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        weights, *saved = ctx.saved_tensors
        if ctx.reduce:
            scale = grad_out / ctx.count                          # 0-dim
            if weights is not None:
                scale = weights * scale
        else:
            scale = grad_out if weights is None else grad_out * weights
        if ctx.binary:
            (coefficient,) = saved                                # w_v (1 - q_t) sign_v
            grad = torch.empty((coefficient.shape[0], 2, *coefficient.shape[1:]),
                               dtype=coefficient.dtype, device=coefficient.device)
            torch.mul(coefficient, scale, out=grad[:, 0])         # dL/dz0 = +w (1 - q_t) sign
            torch.neg(grad[:, 0], out=grad[:, 1])                 # dL/dz1 = -w (1 - q_t) sign
        else:
            q, onehot, weight = saved
            if weight is not None:
                scale = weight * scale
            if scale.dim() == 0:
                grad = (q - onehot) * scale
            else:
                grad = (q - onehot) * scale.unsqueeze(1)
        return grad, None, None, None, None, None, None, None


def _binary_forward(z, index, margins, attenuated, gamma):
    """C = 2: everything from u = z_t - z_other - m r[t], per voxel.

    Buffers are updated in place where a temporary is not needed again, and the attenuation
    mask is folded into the base (base 1 where not attenuated gives f = 1) and into the gamma
    term, to keep the number of tensor operations low (this runs outside autograd).
    """
    y1 = index.to(z.dtype)                                     # 1 where the true class is 1
    minus_u = z[:, 1] - z[:, 0]                                # d = z1 - z0
    minus_u.addcmul_(minus_u, y1, value=-2.0)                  # (1 - 2 y1) d = z_other - z_t
    if margins is not None:                                    # + m r[t]
        m0, m1 = margins
        if m0 == m1:
            minus_u.add_(m0)
        elif m0 == 0.0:
            minus_u.add_(y1, alpha=m1)
        else:
            minus_u.add_(y1, alpha=m1 - m0).add_(m0)
    ce = F.softplus(minus_u)                                   # -log q_t
    base = minus_u.sigmoid_()                                  # 1 - q_t, exact in both tails
    if gamma == 0.0:
        return ce, (torch.addcmul(-base, base, y1, value=2.0),)   # (1 - q_t)(2 y1 - 1)
    # f = b^gamma and w = f + gamma q_t CE b^(gamma - 1), with b = 1 - q_t where attenuated
    # and b = 1, q_t CE -> 0 elsewhere (so f = w = 1 there).
    focal_base = base.clamp_min(FOCAL_BASE_MIN) if gamma < 1.0 else base
    q_ce = torch.rsub(base, 1.0).mul_(ce)                      # q_t CE
    if attenuated is not None:                                 # one class attenuated, the other not
        keep = 1.0 - y1 if attenuated[1] == 1.0 else y1        # 1 where NOT attenuated
        mask = 1.0 - keep
        focal_base = torch.addcmul(keep, focal_base, mask)
        q_ce.mul_(mask)
    ratio = _power(focal_base, gamma - 1.0) if gamma != 1.0 else None      # b^(gamma - 1)
    factor = focal_base * ratio if ratio is not None else focal_base.clone()
    if ratio is not None:
        q_ce.mul_(ratio)
    weight = torch.add(factor, q_ce, alpha=gamma)
    loss = factor.mul_(ce)
    weight.mul_(base)
    return loss, (torch.addcmul(-weight, weight, y1, value=2.0),)         # w (1 - q_t)(2 y1 - 1)


def _general_forward(z, index, margins, attenuated, gamma):
    """C > 2: softmax over the classes."""
    num_classes = z.shape[1]
    class_shape = (1, num_classes) + (1,) * (z.dim() - 2)
    classes = torch.arange(num_classes, device=z.device).view(class_shape)
    onehot = (index.unsqueeze(1) == classes).to(z.dtype)
    if margins is not None:
        z = torch.addcmul(z, onehot, torch.tensor(margins, dtype=z.dtype, device=z.device).view(class_shape),
                          value=-1.0)                          # z - m r y
    shifted = z - z.amax(dim=1, keepdim=True)
    exp = torch.exp(shifted)
    total = exp.sum(dim=1, keepdim=True)
    q = exp / total
    ce = torch.log(total.squeeze(1)) - (onehot * shifted).sum(dim=1)       # -log q_t
    if gamma == 0.0:
        return ce, (q, onehot, None)
    q_true_terms = onehot * q
    base = (q - q_true_terms).sum(dim=1).clamp_min(FOCAL_BASE_MIN)         # 1 - q_t from the others
    factor = _power(base, gamma)
    weight = factor + (factor / base) * (q_true_terms.sum(dim=1) * ce) * gamma
    if attenuated is not None:
        mask = (onehot * torch.tensor(attenuated, dtype=z.dtype, device=z.device).view(class_shape)).sum(dim=1)
        keep = 1.0 - mask
        factor = torch.addcmul(keep, factor, mask)
        weight = torch.addcmul(keep, weight, mask)
    return factor * ce, (q, onehot, weight)
