"""Batch-norm statistics for inference as the authors' DeepMedic keeps them: a window of batches.

torch's batch norm keeps an exponential moving average of the batch statistics
(``running = 0.9 running + 0.1 batch``). DeepMedic instead stores the means and variances of the
last 60 training batches and normalises at inference with their plain average (the authors'
``cnn3d.py``: ``moving_average_length`` 60). With ``batchnorm_stats: window`` a training run
does the same: :class:`BatchNormWindow` records, during the clean step only, the batch mean and
(unbiased) variance that enter each batch-norm layer, and after the step writes the average of
the last ``length`` of them into the layer's ``running_mean`` and ``running_var``. The
adversarial and mixup steps leave the running statistics alone (``frozen_batchnorm_stats``), so
the buffers always hold the window average: validation, the saved model and inference use it.

The windows travel in the resume checkpoint (``state_tensors`` / ``load_state_tensors``), so a
resumed run continues with the same window.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator, Mapping

import torch
from torch import nn

#: Batches the authors' DeepMedic averages for its inference statistics.
AUTHORS_WINDOW = 60
#: Checkpoint key prefix of the window tensors.
PREFIX = "bn_window."


class BatchNormWindow:
    """Records batch statistics of every batch-norm layer of ``net`` (see the module docstring).

    Args:
        net: the network (its tracking ``BatchNorm`` layers are watched, in ``named_modules`` order).
        length: batches in the window (authors: 60).
    """

    def __init__(self, net: nn.Module, length: int = AUTHORS_WINDOW) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"the batch-norm window needs a positive number of batches, got {length!r}")
        self.length = length
        self.layers = {name: m for name, m in net.named_modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}
        self.means: dict[str, deque[torch.Tensor]] = {name: deque(maxlen=length) for name in self.layers}
        self.vars: dict[str, deque[torch.Tensor]] = {name: deque(maxlen=length) for name in self.layers}
        self._recording = False
        self._handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in self.layers.items()]

    def _hook(self, name: str):
        def record(module: nn.Module, args: tuple) -> None:
            if not (self._recording and module.training):
                return
            x = args[0].detach()
            dims = [0] + list(range(2, x.dim()))
            self.means[name].append(x.mean(dim=dims).float().cpu())
            self.vars[name].append(x.var(dim=dims, unbiased=x.numel() // x.shape[1] > 1).float().cpu())
        return record

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the batch statistics of the forward passes inside the block (the clean step)."""
        self._recording = True
        try:
            yield
        finally:
            self._recording = False

    def write(self) -> None:
        """Set each layer's running statistics to the average over its window (no-op while empty)."""
        with torch.no_grad():
            for name, module in self.layers.items():
                if not self.means[name]:
                    continue
                module.running_mean.copy_(torch.stack(list(self.means[name])).mean(dim=0))
                module.running_var.copy_(torch.stack(list(self.vars[name])).mean(dim=0))

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- checkpoints -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The windows as named tensors ``bn_window.<layer>.mean`` / ``.var`` (batches x features)."""
        out = {}
        for name in self.layers:
            if self.means[name]:
                out[f"{PREFIX}{name}.mean"] = torch.stack(list(self.means[name]))
                out[f"{PREFIX}{name}.var"] = torch.stack(list(self.vars[name]))
        return out

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Restore the windows from :meth:`state_tensors` output (other keys are ignored)."""
        for name in self.layers:
            mean, var = tensors.get(f"{PREFIX}{name}.mean"), tensors.get(f"{PREFIX}{name}.var")
            self.means[name].clear()
            self.vars[name].clear()
            if mean is None or var is None:
                continue
            self.means[name].extend(t.clone() for t in mean[-self.length:])
            self.vars[name].extend(t.clone() for t in var[-self.length:])
