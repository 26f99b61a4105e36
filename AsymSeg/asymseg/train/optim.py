"""Optimisers: the authors' RMSProp (DeepMedic's), torch's RMSprop under its own name, and Adam.

The paper's DeepMedic runs (Li, Kamnitsas & Glocker; METHOD.md, "Training schedule") use
DeepMedic's own RMSProp, which differs from :class:`torch.optim.RMSprop` in two ways:

- eps sits INSIDE the square root: ``step = lr * g / sqrt(acc + eps)`` with eps = 1e-4, where
  torch divides by ``sqrt(acc) + eps``. Early in training, and for parameters with small
  gradients, ``sqrt(acc + 1e-4) >= 0.01`` caps the step, while torch's step is about ``lr``
  whatever the gradient size (about 15x larger on DeepMedic, issue 13).
- Nesterov momentum 0.6, non-normalised (the authors' released configs:
  ``classicMom0OrNesterov1 = 1``, ``momentumValue = 0.6``, ``momNonNorm0orNormalized1 = 0``),
  where torch's RMSprop has classic momentum only.

Per parameter, with gradient g (plus ``weight_decay * p`` when set)::

    acc  <- rho * acc + (1 - rho) * g^2
    s    =  c * lr * g / sqrt(acc + eps)          c = 1, or (1 - mu) with normalised momentum
    v    <- mu * v - s
    p    <- p + mu * v - s                        (Nesterov; classic momentum: p <- p + v)

:data:`asymseg.train.config.OPTIMIZERS` names every choice a configuration can make.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from asymseg.train.config import OPTIMIZERS

#: The authors' RMSProp settings (their BraTS configs).
AUTHORS_RMSPROP: dict[str, Any] = {"rho": 0.9, "eps": 1e-4, "momentum": 0.6, "nesterov": True,
                                   "normalized_momentum": False}


class DeepMedicRMSprop(torch.optim.Optimizer):
    """RMSProp as the authors' DeepMedic code runs it (see the module docstring for the update).

    Args:
        params: parameters or parameter groups.
        lr: learning rate (authors: 1e-3).
        rho: decay of the squared-gradient average (authors: 0.9).
        eps: added to the average INSIDE the square root (authors: 1e-4).
        momentum: mu in [0, 1) (authors: 0.6).
        nesterov: Nesterov momentum (authors) instead of classic momentum.
        normalized_momentum: scale the gradient step by (1 - mu) (older DeepMedic configs).
        weight_decay: L2 coefficient added to the gradient (authors' BraTS runs: 0).

    State per parameter: ``accumulator`` (acc) and ``velocity`` (v), both float tensors of the
    parameter's shape, saved and restored by ``state_dict``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, *, rho: float = 0.9, eps: float = 1e-4,
                 momentum: float = 0.6, nesterov: bool = True, normalized_momentum: bool = False,
                 weight_decay: float = 0.0) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho must be in [0, 1), got {rho}")
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = {"lr": lr, "rho": rho, "eps": eps, "momentum": momentum, "nesterov": bool(nesterov),
                    "normalized_momentum": bool(normalized_momentum), "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102 - the update is in the class docstring
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, rho, eps, mu = group["lr"], group["rho"], group["eps"], group["momentum"]
            scale = lr * ((1.0 - mu) if group["normalized_momentum"] else 1.0)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("DeepMedicRMSprop does not support sparse gradients")
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["accumulator"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                acc, velocity = state["accumulator"], state["velocity"]
                acc.mul_(rho).addcmul_(grad, grad, value=1.0 - rho)
                step = grad * scale / (acc + eps).sqrt()
                velocity.mul_(mu).sub_(step)
                if group["nesterov"]:
                    p.add_(velocity, alpha=mu).sub_(step)
                else:
                    p.add_(velocity)
        return loss


def make_optimizer(name: str, params: Iterable[Any], *, lr: float, weight_decay: float = 0.0
                   ) -> torch.optim.Optimizer:
    """The optimiser ``name`` (a key of :data:`OPTIMIZERS`) over ``params``.

    Raises:
        ValueError: an unknown name (the message lists the choices).
    """
    params = list(params)
    if name == "rmsprop":
        return DeepMedicRMSprop(params, lr=lr, weight_decay=weight_decay, **AUTHORS_RMSPROP)
    if name == "torch-rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, alpha=AUTHORS_RMSPROP["rho"],
                                   eps=AUTHORS_RMSPROP["eps"], momentum=AUTHORS_RMSPROP["momentum"])
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
