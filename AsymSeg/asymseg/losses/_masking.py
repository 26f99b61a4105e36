"""Shared handling of logits, targets, rare-class vectors and ignore masks for the losses.

Every loss in :mod:`asymseg.losses` accepts the same inputs:

- ``logits``: ``(B, C, *spatial)`` raw network outputs (not probabilities), any float dtype.
  They are computed on in float32 (float64 stays float64), so float16/bfloat16 outputs of
  mixed-precision training lose nothing in the log-softmax.
- ``target``: either an integer class map ``(B, *spatial)`` (``(B, 1, *spatial)`` is accepted
  and squeezed) or soft / one-hot targets ``(B, C, *spatial)`` in a float dtype.
- ``ignore_mask``: optional bool ``(B, *spatial)``; True marks a voxel that carries no loss
  (e.g. an ambiguous asymmetric-mixup voxel). Integer targets may hold any value there.
- ``rare``: ``C`` booleans, r[c] in METHOD.md (1 for the rare classes).

N, the divisor of every voxel mean, is the number of voxels that carry a loss: all voxels
minus the ignored ones (METHOD.md, "Notation").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Union

import torch

from asymseg.errors import InputError

#: Smallest base of the focal factor (1 - q)^gamma. The base is computed exactly as
#: -expm1(log q); it is clamped at this value only where q rounds to exactly 1, so that the
#: derivative gamma * (1 - q)^(gamma - 1) stays finite for 0 < gamma < 1 (0^(negative) = inf).
#: The effect on the loss is below 1e-12^gamma * CE, and CE is ~0 where the clamp acts.
FOCAL_BASE_MIN = 1e-12

RareLike = Union[Sequence[bool], torch.Tensor]


class PreparedTarget(NamedTuple):
    """A validated target.

    Exactly one of ``index`` / ``soft`` is set.

    Attributes:
        index: int64 ``(B, *spatial)`` class map (ignored voxels replaced by 0), or None.
        soft: float ``(B, C, *spatial)`` target in the logits' compute dtype (zero where
            ignored), or None.
        valid: bool ``(B, *spatial)`` voxels that carry a loss, or None when all do.
    """

    index: torch.Tensor | None
    soft: torch.Tensor | None
    valid: torch.Tensor | None


def compute_dtype(logits: torch.Tensor) -> torch.dtype:
    """float64 stays float64; every other float dtype is computed on in float32."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def check_logits(logits: torch.Tensor) -> torch.Tensor:
    """Validate ``(B, C, *spatial)`` float logits with C >= 2 and return them in the compute dtype.

    Raises:
        InputError: not a float tensor, fewer than 2 dimensions or fewer than 2 classes.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise InputError(f"logits must be a float tensor (B, C, *spatial), got {_describe(logits)}")
    if logits.dim() < 2 or logits.shape[1] < 2:
        raise InputError(f"logits must have shape (B, C, *spatial) with C >= 2, got {tuple(logits.shape)}")
    return logits.to(compute_dtype(logits))


def rare_flags(rare: RareLike, num_classes: int) -> tuple[bool, ...]:
    """r as a tuple of C Python booleans.

    Raises:
        InputError: ``rare`` does not hold exactly one boolean (or 0/1) per class.
    """
    if isinstance(rare, torch.Tensor):
        values = rare.detach().flatten().tolist()
    else:
        try:
            values = list(rare)
        except TypeError as err:
            raise InputError(f"rare must be a sequence of {num_classes} booleans, got {rare!r}") from err
    if len(values) != num_classes:
        raise InputError(f"rare has {len(values)} entries but the logits have {num_classes} classes")
    flags = []
    for value in values:
        if isinstance(value, bool) or value in (0, 1):
            flags.append(bool(value))
        else:
            raise InputError(f"rare must hold booleans (or 0/1), got {values}")
    return tuple(flags)


def rare_vector(rare: RareLike, num_classes: int, device: torch.device,
                *, symmetric: bool = False) -> torch.Tensor:
    """r as a bool tensor ``(C,)`` on ``device``; all True when ``symmetric``.

    Raises:
        InputError: ``rare`` does not hold exactly one boolean per class.
    """
    flags = rare_flags(rare, num_classes)
    if symmetric:
        flags = (True,) * num_classes
    return torch.tensor(flags, dtype=torch.bool, device=device)


def prepare_target(logits: torch.Tensor, target: torch.Tensor,
                   ignore_mask: torch.Tensor | None = None) -> PreparedTarget:
    """Validate ``target`` and ``ignore_mask`` against ``logits`` (already in the compute dtype).

    Raises:
        InputError: a shape or dtype mismatch (both shapes are named), or an integer class
            outside [0, C) at a voxel that is not ignored.
    """
    num_classes = logits.shape[1]
    voxel_shape = (logits.shape[0], *logits.shape[2:])
    if not isinstance(target, torch.Tensor):
        raise InputError(f"target must be a tensor, got {_describe(target)}")
    valid = _check_ignore_mask(ignore_mask, voxel_shape)
    if valid is not None:
        valid = valid.to(logits.device)

    if target.is_floating_point():
        if tuple(target.shape) != tuple(logits.shape):
            raise InputError(
                f"soft target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
            )
        soft = target.to(device=logits.device, dtype=logits.dtype)
        if valid is not None:  # zeroed where ignored, so no value there can reach a gradient
            soft = torch.where(valid.unsqueeze(1), soft, torch.zeros_like(soft))
        return PreparedTarget(None, soft, valid)

    if target.dtype == torch.bool or target.is_complex():
        raise InputError(f"target must be an integer class map or a float soft target, got {target.dtype}")
    if target.dim() == logits.dim() and target.shape[1] == 1:
        target = target.squeeze(1)
    if tuple(target.shape) != voxel_shape:
        raise InputError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: "
            f"expected (B, *spatial) = {voxel_shape} or a soft target {tuple(logits.shape)}"
        )
    index = target.to(device=logits.device, dtype=torch.int64)
    if valid is not None:
        index = index * valid                       # any value where ignored becomes class 0
    if index.numel():
        low, high = torch.aminmax(index)
        if int(low) < 0 or int(high) >= num_classes:
            bad = torch.unique(index[(index < 0) | (index >= num_classes)]).tolist()[:10]
            raise InputError(
                f"target holds class values {bad} outside [0, {num_classes - 1}] at voxels that are not ignored"
            )
    return PreparedTarget(index, None, valid)


def one_hot(index: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B, *spatial)`` int64 -> ``(B, C, *spatial)`` one-hot in ``dtype``."""
    classes = torch.arange(num_classes, device=index.device).view(1, num_classes, *([1] * (index.dim() - 1)))
    return (index.unsqueeze(1) == classes).to(dtype)


def masked_mean(loss_map: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of a per-voxel loss over the voxels that carry a loss.

    With no such voxel the result is a zero that is still connected to the graph (its
    gradient is zero everywhere), so a training step on an all-ignored batch is a no-op
    rather than a NaN. The loss map must be finite at ignored voxels (the losses make sure of
    it: ignored integer targets are read as class 0, ignored soft targets as zeros).
    """
    if valid is None:
        return loss_map.mean()
    weights = valid.to(loss_map.dtype)
    return (loss_map * weights).sum() / weights.sum().clamp_min(1.0)


def _check_ignore_mask(ignore_mask: torch.Tensor | None, voxel_shape: tuple[int, ...]) -> torch.Tensor | None:
    if ignore_mask is None:
        return None
    if not isinstance(ignore_mask, torch.Tensor) or ignore_mask.dtype != torch.bool:
        raise InputError(f"ignore_mask must be a bool tensor (B, *spatial), got {_describe(ignore_mask)}")
    if tuple(ignore_mask.shape) != voxel_shape:
        raise InputError(f"ignore_mask shape {tuple(ignore_mask.shape)} does not match the voxels {voxel_shape}")
    return ~ignore_mask


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)} {value.dtype}"
    return type(value).__name__
