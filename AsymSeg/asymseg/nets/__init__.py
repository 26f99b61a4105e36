"""Segmentation networks: DeepMedic (two configurations) and a 3D U-Net.

Every network is a :class:`SegmentationNet`: ONE input tensor ``(B, C_in, D, H, W)`` in,
logits ``(B, K, d, h, w)`` out, with its geometry (``context``, ``output_multiple``,
``exact_tiling``, ``input_shape``/``output_shape``) and its hyper-parameters (``hparams``)
so that ``build_network(net.architecture, net.in_channels, net.num_classes, **net.hparams)``
rebuilds it.

Example:
    >>> net = build_network("deepmedic", in_channels=2, num_classes=2)
    >>> net.input_shape((9, 9, 9)), net.context, net.output_multiple
    ((57, 57, 57), 24, 3)
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch

from asymseg.nets.base import SegmentationNet
from asymseg.nets.deepmedic import DEEPMEDIC_DEFAULTS, DeepMedic
from asymseg.nets.unet import UNET_DEFAULTS, UNet3D

#: Architecture names accepted by :func:`build_network` (and model cards).
ARCHITECTURES: tuple[str, ...] = ("deepmedic", "deepmedic-tmi", "unet")

#: Default hyper-parameters of each architecture (read-only).
DEFAULT_HPARAMS = MappingProxyType({
    "deepmedic": MappingProxyType(DEEPMEDIC_DEFAULTS["deepmedic"]),
    "deepmedic-tmi": MappingProxyType(DEEPMEDIC_DEFAULTS["deepmedic-tmi"]),
    "unet": MappingProxyType(UNET_DEFAULTS),
})


def build_network(architecture: str, in_channels: int, num_classes: int, *,
                  generator: torch.Generator | None = None, **hparams: Any) -> SegmentationNet:
    """Build a network by architecture name.

    Args:
        architecture: one of :data:`ARCHITECTURES`.
        in_channels: number of input channels (>= 1).
        num_classes: number of output classes (>= 2).
        generator: random generator for the initial weights (None: torch's global generator).
        **hparams: hyper-parameters overriding the architecture's defaults
            (:data:`DEFAULT_HPARAMS`); unknown names are refused.

    Returns:
        The network in training mode, on the CPU, float32.

    Raises:
        ValueError: unknown architecture or invalid hyper-parameters (the message lists the
            allowed values).
    """
    if architecture in ("deepmedic", "deepmedic-tmi"):
        return DeepMedic(in_channels, num_classes, architecture=architecture, generator=generator, **hparams)
    if architecture == "unet":
        return UNet3D(in_channels, num_classes, generator=generator, **hparams)
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {list(ARCHITECTURES)}")


__all__ = ["ARCHITECTURES", "DEFAULT_HPARAMS", "DeepMedic", "SegmentationNet", "UNet3D", "build_network"]
