"""Mixup and asymmetric mixup (Li, Kamnitsas & Glocker 2019; METHOD.md 5).

One lambda per batch and a partner batch given by a permutation p of the batch::

    x'[b] = lam * x[b] + (1 - lam) * x[p[b]]

Symmetric (Zhang et al. 2018): lam ~ Beta(alpha, alpha), soft targets
``lam * onehot(y[b]) + (1 - lam) * onehot(y[p[b]])``, nothing ignored.

Asymmetric: lam ~ Beta(alpha, alpha) * (1 - m), so lam in [0, 1 - m], and HARD labels per voxel
from the pair a = y[b][v] (weight lam), c = y[p[b]][v] (weight 1 - lam):

    a == c                                   -> a        (a rare pair has weight 1 > m)
    exactly one rare, its weight > m         -> that rare class
    exactly one rare, its weight <= m        -> ignored
    two different non-rare classes           -> ignored
    two different rare classes               -> ignored
    (lam = 0 or 1: the voxel is one source's alone and keeps its class)

which is the authors' floor(lam * onehot(y~A) + (1 - lam) * onehot(y~B)) rule written per voxel
(y~ = the pair's single rare class where its partner's weight exceeds m, else the own class).
Ignored voxels carry no loss (``ignore_mask``).

Sampling and application are split (:func:`sample_mixup`, :func:`apply_mixup`) so a logged step
can be replayed from its :class:`MixupParams`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from asymseg.errors import InputError
from asymseg.losses._masking import RareLike, one_hot, rare_vector

#: Paper defaults (METHOD.md 5; DeepMedic BraTS configs mixuprate = 1, mixupbiasmargin = 0.2).
DEFAULT_ALPHA = 1.0
DEFAULT_MARGIN = 0.2


@dataclass(frozen=True)
class MixupParams:
    """What one mixup step drew: the weight of the batch itself and its partners.

    Attributes:
        lam: weight of x (the partner x[perm] gets 1 - lam), in [0, 1].
        perm: partner index per sample, a permutation of range(B).
    """

    lam: float
    perm: tuple[int, ...]

    def __post_init__(self) -> None:
        lam = float(self.lam)
        if not 0.0 <= lam <= 1.0:
            raise InputError(f"mixup lam must lie in [0, 1], got {self.lam}")
        perm = tuple(int(i) for i in self.perm)
        if sorted(perm) != list(range(len(perm))):
            raise InputError(f"mixup perm must be a permutation of 0..{len(perm) - 1}, got {list(perm)}")
        object.__setattr__(self, "lam", lam)
        object.__setattr__(self, "perm", perm)

    def to_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "perm": list(self.perm)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MixupParams:
        try:
            return cls(lam=data["lam"], perm=tuple(data["perm"]))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"invalid mixup parameters {dict(data)!r}: {err}") from err


def sample_mixup(
    batch_size: int,
    *,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
    symmetric: bool = False,
    generator: torch.Generator | None = None,
) -> MixupParams:
    """Draw lam and the partner permutation for one mixup step.

    lam ~ Beta(alpha, alpha) (symmetric) or Beta(alpha, alpha) * (1 - margin) (asymmetric);
    perm = a uniformly random derangement of range(batch_size): no sample is its own partner
    (a self-pair would leave the sample unmixed; the authors' DeepMedic mixes each segment
    with another one). A batch of one can only pair with itself. Beta is sampled by numpy from a seed drawn from
    ``generator`` (torch has no generator-aware Beta sampler), so a fixed generator gives the
    same parameters every time.

    Args:
        batch_size: B >= 1.
        alpha: Beta concentration > 0. Defaults to 1 (authors' DeepMedic; their U-Net used 0.2).
        margin: m in [0, 1) (asymmetric only). Defaults to 0.2 (authors).
        symmetric: plain mixup (lam not scaled).
        generator: torch CPU generator (None: torch's global generator).

    Returns:
        :class:`MixupParams`.

    Raises:
        InputError: batch_size < 1, alpha <= 0, margin outside [0, 1).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    _check_alpha_margin(alpha, margin)
    device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    perm = _derangement(batch_size, generator, device)
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    if not symmetric:
        lam *= 1.0 - float(margin)
    return MixupParams(lam=min(max(lam, 0.0), 1.0), perm=tuple(perm))


def _derangement(n: int, generator: torch.Generator | None, device: torch.device) -> list[int]:
    """A uniformly random permutation of range(n) without fixed points (rejection; e^-1 of the
    draws are accepted). n = 1 gives [0]."""
    while True:
        perm = torch.randperm(n, generator=generator, device=device).tolist()
        if n == 1 or all(p != i for i, p in enumerate(perm)):
            return perm


def apply_mixup(
    x: torch.Tensor,
    target: torch.Tensor,
    params: MixupParams,
    *,
    rare: RareLike,
    margin: float = DEFAULT_MARGIN,
    symmetric: bool = False,
    ignore_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix a batch with the given parameters (pure: same inputs, same outputs).

    Args:
        x: ``(B, C_in, *in_spatial)`` float input batch.
        target: int class map ``(B, *out_spatial)``; the output grid may differ from x's (valid
            convolutions): both are mixed with the same lam and perm.
        params: from :func:`sample_mixup` (or a log).
        rare: C booleans, True for the rare classes (C = number of classes).
        margin: m in [0, 1) for the asymmetric label rule. Defaults to 0.2.
        symmetric: soft targets instead of the asymmetric hard-label rule.
        ignore_mask: optional bool ``(B, *out_spatial)`` of voxels already without a loss; a
            mixed voxel is ignored when either of its two source voxels is.

    Returns:
        ``(x_mixed, target_mixed, ignore_mask)``: x_mixed like x; target_mixed int64
        ``(B, *out_spatial)`` (asymmetric; 0 where ignored) or float32 soft ``(B, C, *out_spatial)``
        (symmetric); ignore_mask bool ``(B, *out_spatial)`` (symmetric: only the inherited mask).

    Raises:
        InputError: shapes that disagree (named), class values outside [0, C), margin outside
            [0, 1), a permutation of the wrong length.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise InputError(f"x must be a float tensor (B, C_in, *spatial), got {getattr(x, 'shape', type(x))}")
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        raise InputError("mixup needs an integer class map target (B, *spatial)")
    batch = x.shape[0]
    if target.shape[0] != batch or len(params.perm) != batch:
        raise InputError(
            f"batch sizes differ: x {tuple(x.shape)}, target {tuple(target.shape)}, perm of {len(params.perm)}"
        )
    _check_alpha_margin(1.0, margin)
    rare_list = rare.detach().flatten().tolist() if isinstance(rare, torch.Tensor) else list(rare)
    flags = rare_vector(rare_list, len(rare_list), target.device)
    num_classes = flags.numel()
    if ignore_mask is not None:
        if ignore_mask.dtype != torch.bool or ignore_mask.shape != target.shape:
            raise InputError(f"ignore_mask must be bool {tuple(target.shape)}, got {tuple(ignore_mask.shape)} {ignore_mask.dtype}")
        ignore_mask = ignore_mask.to(target.device)
    labels = target.to(torch.int64)
    if ignore_mask is not None:
        labels = torch.where(ignore_mask, torch.zeros_like(labels), labels)
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        bad = torch.unique(labels[(labels < 0) | (labels >= num_classes)]).tolist()[:10]
        raise InputError(f"target holds class values {bad} outside [0, {num_classes - 1}]")

    lam = params.lam
    perm = torch.tensor(params.perm, dtype=torch.int64)
    x_mixed = lam * x + (1.0 - lam) * x[perm.to(x.device)]
    perm = perm.to(labels.device)
    a, b = labels, labels[perm]
    inherited = None if ignore_mask is None else ignore_mask | ignore_mask[perm]

    if symmetric:
        soft = lam * one_hot(a, num_classes, torch.float32) + (1.0 - lam) * one_hot(b, num_classes, torch.float32)
        ignored = inherited if inherited is not None else torch.zeros_like(labels, dtype=torch.bool)
        return x_mixed, soft, ignored

    rare_a, rare_b = flags[a], flags[b]
    same = a == b
    a_wins = rare_a & ~rare_b & (lam > margin)             # rare a, weight lam
    b_wins = rare_b & ~rare_a & ((1.0 - lam) > margin)     # rare b, weight 1 - lam
    if lam == 1.0:                                         # no mixing: every voxel is a's
        a_wins = torch.ones_like(same)
    elif lam == 0.0:                                       # every voxel is b's
        b_wins = torch.ones_like(same)
    valid = same | a_wins | b_wins
    if inherited is not None:
        valid = valid & ~inherited
    mixed = torch.where(same | a_wins, a, b)
    mixed = torch.where(valid, mixed, torch.zeros_like(mixed))
    return x_mixed, mixed, ~valid


def mixup(
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    rare: RareLike,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
    symmetric: bool = False,
    generator: torch.Generator | None = None,
    ignore_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample and apply one (asymmetric) mixup step: ``apply_mixup(x, target, sample_mixup(...))``.

    See the module docstring for the rule; arguments as in :func:`sample_mixup` and
    :func:`apply_mixup`.

    Returns:
        ``(x_mixed, target_mixed, ignore_mask)`` as in :func:`apply_mixup`.
    """
    params = sample_mixup(x.shape[0], alpha=alpha, margin=margin, symmetric=symmetric, generator=generator)
    return apply_mixup(x, target, params, rare=rare, margin=margin, symmetric=symmetric, ignore_mask=ignore_mask)


def _check_alpha_margin(alpha: float, margin: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < float("inf"):
        raise InputError(f"mixup alpha must be a finite number > 0, got {alpha!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin < 1.0:
        raise InputError(f"mixup margin must lie in [0, 1), got {margin!r}")
