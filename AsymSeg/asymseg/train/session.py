"""The pieces a training session is built from, made one way for every caller.

:func:`build_session` turns a :class:`~asymseg.train.config.TrainConfig`, a network and the
prepared cases into the resolved technique, the patch shapes, the patch sampler, the optimiser and
the autocast type. ``asymseg finetune`` (:mod:`asymseg.train.api`) and the training benchmark
(:mod:`asymseg.bench.training`) both use it, so the benchmark times exactly what a run trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from asymseg.errors import InputError
from asymseg.techniques import Technique
from asymseg.train.config import TrainConfig
from asymseg.train.data import PatchSampler, SamplerSettings, TrainingCase
from asymseg.train.optim import make_optimizer


@dataclass(frozen=True)
class Session:
    """What one network trains with (see :func:`build_session`)."""

    technique: Technique
    input_size: tuple[int, int, int]
    output_size: tuple[int, int, int]
    sampler: PatchSampler
    optimizer: torch.optim.Optimizer
    amp: torch.dtype | None


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA devices that support it; float32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def patch_shapes(config: TrainConfig, net: torch.nn.Module) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(input, output) patch shapes: ``config.patch_output_size`` or the network's training output.

    Raises:
        InputError: the network cannot produce that output size.
    """
    out_size = tuple(config.patch_output_size or (net.training_output_size,) * 3)
    try:
        in_size = tuple(net.input_shape(out_size))
    except ValueError as err:
        raise InputError(f"--patch-size {list(out_size)}: {' '.join(str(err).split())}") from err
    return in_size, out_size  # type: ignore[return-value]


def make_sampler(cases: Sequence[TrainingCase], technique: Technique, input_size: Sequence[int],
                 output_size: Sequence[int]) -> PatchSampler:
    """The patch sampler of a technique: its foreground fraction, augmentation and asymmetric
    augmentation probability."""
    return PatchSampler(list(cases), SamplerSettings(
        input_size=tuple(input_size), output_size=tuple(output_size), fg_fraction=technique.fg_fraction,
        augment=technique.augment,
        background_augment_p=1.0 if technique.asym_aug_p is None else technique.asym_aug_p))


def training_optimizer(config: TrainConfig, net: torch.nn.Module) -> torch.optim.Optimizer:
    """The configured optimiser over the network's trainable parameters."""
    params = [p for p in net.parameters() if p.requires_grad]
    return make_optimizer(config.optimizer, params, lr=config.lr, weight_decay=config.weight_decay)


def build_session(config: TrainConfig, net: torch.nn.Module, cases: Sequence[TrainingCase],
                  device: torch.device, technique: Technique | None = None) -> Session:
    """Technique, patch shapes, sampler, optimiser and autocast type for training ``net`` on ``cases``.

    The optimiser is built over the parameters as they are: move the network to its device first.

    Args:
        technique: the resolved technique when the caller has it already (else ``config.technique_spec()``).

    Raises:
        InputError: an invalid technique override or patch size.
    """
    technique = technique if technique is not None else config.technique_spec()
    input_size, output_size = patch_shapes(config, net)
    return Session(technique, input_size, output_size, make_sampler(cases, technique, input_size, output_size),
                   training_optimizer(config, net), amp_dtype(device))
