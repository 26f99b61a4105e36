"""Asymmetric adversarial perturbation (Li, Kamnitsas & Glocker 2019; METHOD.md 4).

One VAT-style gradient step with the supervised CE, per sample b::

    d0    = xi * unit(u),  u ~ N(0, 1)
    g     = grad_d L_dir(model(x + d) at d = d0, y)
    r_adv = eps * unit(g / max|g|)
    L_dir = -sum_v sum_c r[c] y[v,c] log softmax(model(x + d))[v,c]   (asymmetric: rare voxels)
          = -sum_v sum_c y[v,c] log softmax(...)[v,c]                 (symmetric: every voxel)

unit() divides by the L2 norm over all channels and voxels of one sample. The training loop then
takes an extra optimiser step on x + r_adv with the full loss (all voxels), METHOD.md 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asymseg.errors import InputError
from asymseg.losses._masking import RareLike, check_logits, prepare_target, rare_vector

#: Paper defaults (METHOD.md 4; DeepMedic BraTS configs Nepsilon = 10, Nxi = 1e-5).
DEFAULT_EPS = 10.0
DEFAULT_XI = 1e-5


def adversarial_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    rare: RareLike,
    eps: float = DEFAULT_EPS,
    xi: float = DEFAULT_XI,
    symmetric: bool = False,
    generator: torch.Generator | None = None,
    ignore_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The adversarial perturbation r_adv of the (asymmetric) adversarial-training step.

    ``d0 = xi * unit(u)`` with u ~ N(0, 1) drawn from ``generator``; ``g = dL_dir/dd`` at d0;
    ``r_adv = eps * unit(g / max|g|)``, unit() = division by the L2 norm per sample over all
    channels and voxels, so every sample's perturbation has L2 norm ``eps``. ``L_dir`` is the
    plain softmax CE (no margin, no focal) summed over the voxels whose true class is rare
    (asymmetric: "the direction that hurts the foreground most") or over every voxel
    (``symmetric=True``); ignored voxels never count. The perturbation itself covers the
    whole input (METHOD.md 4).

    Choices, documented:

    - In asymmetric mode a sample without a rare voxel (or with all of them ignored) gets
      r_adv = 0: the paper defines the asymmetric direction only where y r > 0 (Li et al.,
      TMI 2021). Without this rule such a sample would still get a direction in training mode,
      because batch norm couples the samples through the batch statistics (its input moves
      the other samples' rare losses). Its adversarial step then trains on the clean sample.
      The same holds for a sample whose gradient is exactly zero, as in the authors'
      normalisation (a zero gradient divided by its safeguarded maximum stays zero).
    - The authors' sqrt(1e-6 + sum g^2) safeguard is not needed: after dividing by max|g| the
      norm is >= 1, so every non-zero sample has norm eps to float precision.
    - u is Gaussian (the authors' first release and U-Net); their later DeepMedic code used
      uniform noise. With xi = 1e-5 the start point only nudges where the gradient is taken.
    - Multi-pathway networks (DeepMedic's low-resolution pathways) take ONE input tensor and
      build the low-resolution inputs from it inside the network, so one perturbation of x
      perturbs every pathway consistently by construction (the authors' TF code perturbed
      each pathway's input separately, which this avoids).

    Model state: the pass runs in the model's current mode (training mode in a training
    loop, so batch norm normalises with the perturbed batch's statistics as in the clean
    step). Only the gradient with respect to d is computed (``torch.autograd.grad``), so the
    parameters' ``.grad`` fields are untouched; every buffer (batch-norm running mean/var and
    ``num_batches_tracked``) is restored afterwards, so running statistics come from clean
    batches only; ``model.training`` is restored. The pass draws from the global RNG only
    where the model itself does (dropout).

    Args:
        model: a network taking one tensor ``(B, C_in, *in_spatial)`` and returning logits
            ``(B, C, *out_spatial)``; the output may be smaller than the input (valid convs).
        x: ``(B, C_in, *in_spatial)`` float input batch.
        target: int class map ``(B, *out_spatial)`` or soft target ``(B, C, *out_spatial)`` at the
            network OUTPUT resolution.
        rare: C booleans, True for the rare classes.
        eps: L2 norm of each sample's perturbation, > 0. Defaults to 10 (authors).
        xi: L2 norm of the random start, > 0. Defaults to 1e-5 (authors).
        symmetric: direction from every voxel's CE instead of the rare voxels' only.
        generator: source of the random start (a fixed generator makes the result repeatable).
        ignore_mask: optional bool ``(B, *out_spatial)``; True = the voxel never counts in L_dir.

    Returns:
        r_adv, detached, same shape, dtype and device as x.

    Raises:
        InputError: eps/xi not > 0, x not a float tensor, the model output does not match the
            target (both shapes named), ``rare`` of the wrong length.
    """
    for name, value in (("eps", eps), ("xi", xi)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < float("inf"):
            raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise InputError(f"x must be a float tensor (B, C_in, *spatial), got {getattr(x, 'shape', type(x))}")

    x = x.detach()
    batch = x.shape[0]
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32,
                        device=generator.device if generator is not None else x.device).to(x.device)
    d = (xi * _unit(noise)).to(x.dtype).requires_grad_(True)

    was_training = model.training
    saved_buffers = [buffer.detach().clone() for buffer in model.buffers()]
    try:
        with torch.enable_grad():
            logits = model(x + d)
            if not isinstance(logits, torch.Tensor):
                raise InputError(f"the model must return one logits tensor, got {type(logits).__name__}")
            direction_loss, has_direction = _direction_loss(logits, target, rare, symmetric, ignore_mask)
            (grad,) = torch.autograd.grad(direction_loss, d, allow_unused=True)
    finally:
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), saved_buffers):
                buffer.copy_(saved)
        model.train(was_training)

    if grad is None:
        return torch.zeros_like(x)
    grad = grad.detach().to(torch.float32)
    flat = grad.reshape(batch, -1)
    peak = flat.abs().amax(dim=1, keepdim=True)
    nonzero = (peak > 0) & has_direction.view(batch, 1).to(peak.device)
    scaled = flat / torch.where(nonzero, peak, torch.ones_like(peak))           # max|g| = 1
    norm = scaled.norm(dim=1, keepdim=True)
    r_adv = (eps * scaled / torch.where(nonzero, norm, torch.ones_like(norm))) * nonzero
    return r_adv.reshape(x.shape).to(x.dtype)


def _direction_loss(logits: torch.Tensor, target: torch.Tensor, rare: RareLike, symmetric: bool,
                    ignore_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """L_dir (plain CE summed over rare-class voxels, or all voxels when symmetric) and, per
    sample, whether any voxel contributes to it (bool ``(B,)``)."""
    z = check_logits(logits)
    try:
        prepared = prepare_target(z, target, ignore_mask)
    except InputError as err:
        raise InputError(f"model output vs target: {err} (give the target at the network output resolution)") from err
    flags = rare_vector(rare, z.shape[1], z.device, symmetric=symmetric)
    log_p = F.log_softmax(z, dim=1)
    if prepared.index is not None:
        ce = -log_p.gather(1, prepared.index.unsqueeze(1)).squeeze(1)
        keep = flags[prepared.index]
        if prepared.valid is not None:
            keep = keep & prepared.valid
        return torch.where(keep, ce, torch.zeros_like(ce)).sum(), keep.flatten(1).any(dim=1)
    class_shape = (1, z.shape[1]) + (1,) * (z.dim() - 2)
    weights = prepared.soft * flags.view(class_shape).to(z.dtype)                 # r[c] y[v,c]
    return -(weights * log_p).sum(), (weights != 0).flatten(1).any(dim=1)


def _unit(t: torch.Tensor) -> torch.Tensor:
    """t divided by its L2 norm per sample (over all non-batch dimensions); 0 stays 0."""
    flat = t.reshape(t.shape[0], -1)
    norm = flat.norm(dim=1, keepdim=True)
    return (flat / torch.where(norm > 0, norm, torch.ones_like(norm))).reshape(t.shape)
