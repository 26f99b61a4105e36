"""One training iteration: the clean step, then the adversarial and mixup steps (METHOD.md).

Each step is a separate optimiser update on the same patches::

    (adversarial direction: inputs, r = technique.adversarial_batch(net, x, y), at the weights
     BEFORE the clean update, as the authors' DeepMedic computes it)
    clean:        loss(model(x), y)                                  -> update
    adversarial:  loss(model([i + r for each pathway input]), y)     -> update
    mixup:        x', y', ignore = mixup(x, y)  (one lambda, partners = a derangement of the batch)
                  loss(model(x'), y', ignore)                        -> update
                  (divided by every voxel, ignored ones included, as the authors do, unless
                  the technique's ``mixup_normalize`` is "valid")

so the combination costs up to three updates per iteration. ``loss`` is the technique's loss
(``Technique.loss_fn``) in every step.

Batch-norm running statistics come from clean batches only. The adversarial and mixup steps
keep batch norm in training mode (they normalise with their own batch statistics, as the clean
step does), but :func:`frozen_batchnorm_stats` saves ``running_mean``, ``running_var`` and
``num_batches_tracked`` of every batch-norm layer before their forward pass and writes them back
after the update, so those steps leave the running statistics bit-for-bit unchanged.
(Setting the momentum to 0 instead would still count ``num_batches_tracked`` and turns a
non-finite batch mean into NaN running statistics, since 0 * inf = NaN.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from asymseg.techniques import Technique
from asymseg.train.bnstats import BatchNormWindow


@dataclass(frozen=True)
class StepLosses:
    """Loss values of one iteration (None for steps the technique does not run)."""

    clean: float
    adversarial: float | None = None
    mixup: float | None = None

    def as_list(self) -> list[float]:
        """[clean, adversarial, mixup] with NaN for steps that did not run (for averaging)."""
        return [self.clean, float("nan") if self.adversarial is None else self.adversarial,
                float("nan") if self.mixup is None else self.mixup]

    @classmethod
    def from_list(cls, values: Sequence[float], steps: Sequence[str]) -> StepLosses:
        return cls(float(values[0]), float(values[1]) if "adversarial" in steps else None,
                   float(values[2]) if "mixup" in steps else None)

    def to_dict(self) -> dict[str, float]:
        out = {"clean": self.clean}
        if self.adversarial is not None:
            out["adversarial"] = self.adversarial
        if self.mixup is not None:
            out["mixup"] = self.mixup
        return out


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer of ``module`` that tracks running statistics."""
    return [m for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Restore every batch-norm layer's running statistics on exit (see the module docstring)."""
    layers = batchnorm_layers(module)
    saved = [(m.running_mean.detach().clone() if m.running_mean is not None else None,
              m.running_var.detach().clone() if m.running_var is not None else None,
              m.num_batches_tracked.detach().clone() if m.num_batches_tracked is not None else None)
             for m in layers]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(layers, saved):
                if mean is not None:
                    m.running_mean.copy_(mean)
                if var is not None:
                    m.running_var.copy_(var)
                if count is not None:
                    m.num_batches_tracked.copy_(count)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class IterationRunner:
    """Runs the steps of one iteration on a batch (see the module docstring).

    Args:
        model: the module the updates go through (the network, or the network inside DDP).
        net: the bare network (adversarial directions are computed on it, outside DDP: the
            direction is per sample and needs no gradient synchronisation).
        optimizer: updates ``net``'s parameters.
        technique: the loss and the extra steps.
        rare: one flag per class.
        generator: CPU torch generator for the adversarial start and the mixup draws.
        amp_dtype: autocast dtype for forward passes (None = float32).
        bn_window: with the authors' batch-norm statistics, the window the clean step records
            into; its average replaces the running statistics after the step.
    """

    def __init__(self, model: nn.Module, net: nn.Module, optimizer: torch.optim.Optimizer, technique: Technique,
                 rare: Sequence[bool], generator: torch.Generator, amp_dtype: torch.dtype | None = None,
                 bn_window: BatchNormWindow | None = None) -> None:
        self.model = model
        self.net = net
        self.optimizer = optimizer
        self.technique = technique
        self.rare = list(rare)
        self.generator = generator
        self.amp_dtype = amp_dtype
        self.bn_window = bn_window

    def _update(self, x: torch.Tensor | list[torch.Tensor], target: torch.Tensor,
                ignore_mask: torch.Tensor | None = None, *, count_ignored: bool = False) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(target.device, self.amp_dtype):
            logits = self.model(x)
        loss = self.technique.loss_fn(logits.float(), target, rare=self.rare, ignore_mask=ignore_mask,
                                      count_ignored=count_ignored)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> StepLosses:
        """Run every step of the technique on inputs ``x`` (B, C, *in) and class map ``y`` (B, *out)."""
        t = self.technique
        self.model.train()
        adversarial = mixed = None
        if t.adversarial:
            with _autocast(x.device, self.amp_dtype):
                inputs, perturbations = t.adversarial_batch(self.net, x, y, rare=self.rare, generator=self.generator)
        with self.bn_window.recording() if self.bn_window is not None else contextlib.nullcontext():
            clean = self._update(x, y)
        if self.bn_window is not None:
            self.bn_window.write()
        if t.adversarial:
            perturbed = [i + r.to(i.dtype) for i, r in zip(inputs, perturbations)]
            with frozen_batchnorm_stats(self.net):
                adversarial = self._update(perturbed if len(perturbed) > 1 else perturbed[0], y)
        if t.mixup:
            params = t.sample_mixup(x.shape[0], generator=self.generator)
            x_mixed, y_mixed, ignore = t.apply_mixup(x, y, params, rare=self.rare)
            with frozen_batchnorm_stats(self.net):
                mixed = self._update(x_mixed, y_mixed, ignore, count_ignored=t.mixup_normalize == "all")
        return StepLosses(clean, adversarial, mixed)
