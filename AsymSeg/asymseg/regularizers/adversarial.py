"""Asymmetric adversarial perturbation (Li, Kamnitsas & Glocker 2019; METHOD.md 4).

One VAT-style gradient step with the supervised CE, per sample b and per perturbed input::

    d0    = xi * unit(u),  u ~ N(0, 1)
    g     = grad_d L_dir(model(x + d) at d = d0, y)
    r_adv = eps * unit(g / max|g|)
    L_dir = -sum_v sum_c r[c] y[v,c] log softmax(model(x + d))[v,c]   (asymmetric: rare voxels)
          = -sum_v sum_c y[v,c] log softmax(...)[v,c]                 (symmetric: every voxel)

unit() divides by the L2 norm over all channels and voxels of one sample. The training loop then
takes an extra optimiser step on the perturbed input with the full loss (all voxels), METHOD.md 4.

Two ways to perturb a network with several pathways (DeepMedic):

- :func:`pathway_perturbations` (the authors' DeepMedic, ``cnn3d.py``): EACH pathway input (the
  normal-resolution segment and each low-resolution segment, ``net.pathway_inputs``) gets its
  own perturbation, from its own gradient, each of L2 norm eps per sample. The low-resolution
  inputs are not derived from the perturbed image. eps is therefore a norm PER PATHWAY INPUT:
  its size per value is ``eps / sqrt(values of one sample's input)``
  (:func:`perturbation_rms`): 0.022 at the authors' 4 x 37^3 segment, 0.057 at the original
  DeepMedic's 2-channel 25^3 training segment.
- :func:`adversarial_perturbation`: one perturbation of the full-resolution input, which the
  network pools for its low-resolution pathways (every pathway sees the same perturbed image).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from asymseg.errors import InputError
from asymseg.losses._masking import RareLike, check_logits, prepare_target, rare_vector

#: Paper defaults (METHOD.md 4; DeepMedic BraTS configs Nepsilon = 10, Nxi = 1e-5).
DEFAULT_EPS = 10.0
DEFAULT_XI = 1e-5


def perturbation_rms(eps: float, input_shape: Sequence[int]) -> float:
    """Root mean square per value of a perturbation of L2 norm ``eps`` over one sample's input
    of shape ``(C, *spatial)``: ``eps / sqrt(prod(input_shape))``."""
    return float(eps) / math.sqrt(math.prod(int(s) for s in input_shape))


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
    """The adversarial perturbation r_adv of the full-resolution input (one tensor).

    ``d0 = xi * unit(u)`` with u ~ N(0, 1) drawn from ``generator``; ``g = dL_dir/dd`` at d0;
    ``r_adv = eps * unit(g / max|g|)``, unit() = division by the L2 norm per sample over all
    channels and voxels, so every sample's perturbation has L2 norm ``eps``. ``L_dir`` is the
    plain softmax CE (no margin, no focal) summed over the voxels whose true class is rare
    (asymmetric: "the direction that hurts the foreground most") or over every voxel
    (``symmetric=True``); ignored voxels never count. The perturbation itself covers the
    whole input (METHOD.md 4). For DeepMedic's per-pathway perturbation as the authors ran it,
    see :func:`pathway_perturbations`.

    Choices, documented:

    - As in the authors' code, a sample without a rare voxel still gets the direction its
      input has through the batch: in training mode batch norm couples the samples through
      the batch statistics, so its input moves the other samples' rare losses. A sample whose
      gradient is exactly zero (no coupling, e.g. in eval mode) gets r_adv = 0 (a zero
      gradient divided by its safeguarded maximum stays zero).
    - The authors' sqrt(1e-6 + sum g^2) safeguard is not needed: after dividing by max|g| the
      norm is >= 1, so every non-zero sample has norm eps to float precision.
    - u is Gaussian (the authors' first release and U-Net); their later DeepMedic code used
      uniform noise. With xi = 1e-5 the start point only nudges where the gradient is taken.

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
    _check_inputs(eps, xi, x)
    (r_adv,) = _perturb(model, lambda inputs: model(inputs[0]), [x], target, rare=rare, eps=eps, xi=xi,
                        symmetric=symmetric, generator=generator, ignore_mask=ignore_mask)
    return r_adv


def pathway_perturbations(
    net: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    rare: RareLike,
    eps: float = DEFAULT_EPS,
    xi: float = DEFAULT_XI,
    symmetric: bool = False,
    generator: torch.Generator | None = None,
    ignore_mask: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One perturbation per pathway input, as the authors' DeepMedic code computes it.

    The inputs are ``net.pathway_inputs(x)``; each gets its own random start and its own
    ``r = eps * unit(g / max|g|)`` from the gradient of the same direction loss with respect to
    it, so each has L2 norm ``eps`` per sample (see the module docstring for the size per
    value). Everything else is as in :func:`adversarial_perturbation`. A network with one
    pathway input gets exactly :func:`adversarial_perturbation`'s result.

    Args:
        net: a network with ``pathway_inputs(x)`` whose ``forward`` accepts that list
            (:class:`~asymseg.nets.base.SegmentationNet`).
        x, target, rare, eps, xi, symmetric, generator, ignore_mask: as in
            :func:`adversarial_perturbation`.

    Returns:
        ``(inputs, perturbations)``: the clean pathway inputs (detached) and one detached
        perturbation per input, same shapes. The perturbed batch is
        ``[i + r for i, r in zip(inputs, perturbations)]``.
    """
    _check_inputs(eps, xi, x)
    inputs = [t.detach() for t in net.pathway_inputs(x.detach())]

    def forward(perturbed: list[torch.Tensor]) -> torch.Tensor:
        return net(perturbed if len(perturbed) > 1 else perturbed[0])

    perturbations = _perturb(net, forward, inputs, target, rare=rare, eps=eps, xi=xi, symmetric=symmetric,
                             generator=generator, ignore_mask=ignore_mask)
    return inputs, perturbations


def _check_inputs(eps: float, xi: float, x: torch.Tensor) -> None:
    for name, value in (("eps", eps), ("xi", xi)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < float("inf"):
            raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise InputError(f"x must be a float tensor (B, C_in, *spatial), got {getattr(x, 'shape', type(x))}")


def _perturb(model: nn.Module, forward: Callable[[list[torch.Tensor]], torch.Tensor], inputs: list[torch.Tensor],
             target: torch.Tensor, *, rare: RareLike, eps: float, xi: float, symmetric: bool,
             generator: torch.Generator | None, ignore_mask: torch.Tensor | None) -> list[torch.Tensor]:
    """The shared procedure: one random start per input, one gradient pass, one unit step each."""
    inputs = [t.detach() for t in inputs]
    starts = []
    for t in inputs:
        noise = torch.randn(t.shape, generator=generator, dtype=torch.float32,
                            device=generator.device if generator is not None else t.device).to(t.device)
        starts.append((xi * _unit(noise)).to(t.dtype).requires_grad_(True))

    was_training = model.training
    saved_buffers = [buffer.detach().clone() for buffer in model.buffers()]
    try:
        with torch.enable_grad():
            logits = forward([t + d for t, d in zip(inputs, starts)])
            if not isinstance(logits, torch.Tensor):
                raise InputError(f"the model must return one logits tensor, got {type(logits).__name__}")
            direction_loss = _direction_loss(logits, target, rare, symmetric, ignore_mask)
            grads = torch.autograd.grad(direction_loss, starts, allow_unused=True)
    finally:
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), saved_buffers):
                buffer.copy_(saved)
        model.train(was_training)
    return [torch.zeros_like(t) if g is None else _scaled(g, eps).to(t.dtype) for t, g in zip(inputs, grads)]


def _scaled(grad: torch.Tensor, eps: float) -> torch.Tensor:
    """eps * unit(g / max|g|) per sample; a sample with a zero gradient stays zero."""
    grad = grad.detach().to(torch.float32)
    flat = grad.reshape(grad.shape[0], -1)
    peak = flat.abs().amax(dim=1, keepdim=True)
    nonzero = peak > 0
    scaled = flat / torch.where(nonzero, peak, torch.ones_like(peak))           # max|g| = 1
    norm = scaled.norm(dim=1, keepdim=True)
    return ((eps * scaled / torch.where(nonzero, norm, torch.ones_like(norm))) * nonzero).reshape(grad.shape)


def _direction_loss(logits: torch.Tensor, target: torch.Tensor, rare: RareLike, symmetric: bool,
                    ignore_mask: torch.Tensor | None) -> torch.Tensor:
    """L_dir: plain CE summed over rare-class voxels, or over all voxels when symmetric."""
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
        return torch.where(keep, ce, torch.zeros_like(ce)).sum()
    class_shape = (1, z.shape[1]) + (1,) * (z.dim() - 2)
    weights = prepared.soft * flags.view(class_shape).to(z.dtype)                 # r[c] y[v,c]
    return -(weights * log_p).sum()


def _unit(t: torch.Tensor) -> torch.Tensor:
    """t divided by its L2 norm per sample (over all non-batch dimensions); 0 stays 0."""
    flat = t.reshape(t.shape[0], -1)
    norm = flat.norm(dim=1, keepdim=True)
    return (flat / torch.where(norm > 0, norm, torch.ones_like(norm))).reshape(t.shape)
