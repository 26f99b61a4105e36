"""A 3D U-Net in the style of nnU-Net's plain convolutional U-Net.

Per stage two 3^3 convolutions (same padding), each followed by instance normalisation
(affine) and leaky ReLU (slope 0.01); downsampling by a stride-2 first convolution,
upsampling by 2^3 transposed convolutions, skip connections by concatenation, a 1^3
classifier, no deep supervision. Features double per stage from ``base_features`` up to
``max_features``. Weights: He (Kaiming) normal for slope 0.01, biases zero.

Geometry: the output has the input's size (``context == 0``); every axis must be a multiple
of ``output_multiple = 2 ** (depth - 1)``. Instance normalisation depends on the whole tile,
so tiles cannot be stitched exactly (``exact_tiling == False``): infer on the whole volume or
on overlapping tiles with blending.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from asymseg.nets.base import SegmentationNet, init_weights

UNET_DEFAULTS: dict[str, Any] = {
    "depth": 4,
    "base_features": 16,
    "max_features": 320,
    "training_output_size": 64,
}
NEGATIVE_SLOPE = 0.01


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=True),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
    )


class _Stage(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(_conv_block(cin, cout, stride), _conv_block(cout, cout, 1))


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class UNet3D(SegmentationNet):
    """nnU-Net-like 3D U-Net (see the module docstring).

    Args:
        in_channels: input channels.
        num_classes: output classes K (>= 2).
        depth: number of resolution stages (4: three downsamplings).
        base_features: features of the first stage; doubled per stage.
        max_features: cap on the features of a stage.
        training_output_size: default training patch size (a multiple of ``2 ** (depth - 1)``).
        generator: random generator for the initial weights.

    Shape:
        input ``(B, in_channels, D, H, W)`` with D, H, W multiples of ``output_multiple`` ->
        logits ``(B, K, D, H, W)``.
    """

    architecture = "unet"
    exact_tiling = False
    context = 0

    def __init__(self, in_channels: int, num_classes: int, *, generator: torch.Generator | None = None,
                 **hparams: Any) -> None:
        super().__init__(in_channels, num_classes)
        unknown = sorted(set(hparams) - set(UNET_DEFAULTS))
        if unknown:
            raise ValueError(f"unet: unknown hyper-parameters {unknown}; allowed: {sorted(UNET_DEFAULTS)}")
        hp = {**UNET_DEFAULTS, **hparams}
        depth = _positive_int("depth", hp["depth"], 1)
        base = _positive_int("base_features", hp["base_features"], 1)
        cap = _positive_int("max_features", hp["max_features"], base)
        self.output_multiple = 2 ** (depth - 1)
        train = _positive_int("training_output_size", hp["training_output_size"], 1)
        if train % self.output_multiple:
            raise ValueError(f"unet: training_output_size {train} must be a multiple of "
                             f"{self.output_multiple} (2 ** (depth - 1))")
        self.hparams = {"depth": depth, "base_features": base, "max_features": cap,
                        "training_output_size": train}
        self.training_output_size = train
        self._features = [min(base * 2 ** s, cap) for s in range(depth)]
        feats = self._features
        self.encoder = nn.ModuleList(
            _Stage(in_channels if s == 0 else feats[s - 1], feats[s], 1 if s == 0 else 2) for s in range(depth))
        self.upsample = nn.ModuleList(
            nn.ConvTranspose3d(feats[s + 1], feats[s], 2, stride=2, bias=True) for s in range(depth - 1))
        self.decoder = nn.ModuleList(_Stage(2 * feats[s], feats[s], 1) for s in range(depth - 1))
        self.classifier = nn.Conv3d(feats[0], num_classes, 1, bias=True)
        init_weights(self, NEGATIVE_SLOPE, generator)
        init_weights(self.classifier, 1.0, generator)
        self.receptive_field = self._receptive_field()

    def _receptive_field(self) -> int:
        rf, jump = 1, 1
        for s in range(len(self._features)):
            if s > 0:
                rf += 2 * jump       # stride-2 3^3 conv
                jump *= 2
            rf += 2 * jump           # second conv of the stage
        for _ in range(len(self._features) - 1):
            rf += jump // 2          # 2^3 transposed conv
            jump //= 2
            rf += 4 * jump           # two 3^3 convs
        return rf

    def _check(self, shape: Sequence[int], what: str) -> tuple[int, ...]:
        out = tuple(int(s) for s in shape)
        for axis, s in enumerate(out):
            if s < self.output_multiple or s % self.output_multiple:
                raise ValueError(f"unet: axis {axis}: {what} size {s} must be a positive multiple of "
                                 f"{self.output_multiple} (2 ** (depth - 1))")
        return out

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return self._check(input_shape, "input")

    def input_shape(self, output_shape: Sequence[int]) -> tuple[int, ...]:
        return self._check(output_shape, "output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for every input voxel.

        Args:
            x: ``(B, in_channels, D, H, W)`` float input; D, H, W multiples of ``output_multiple``.

        Returns:
            ``(B, num_classes, D, H, W)`` logits.
        """
        self.check_input(x)
        self.output_shape(x.shape[2:])
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for s in reversed(range(len(self.decoder))):
            x = self.upsample[s](x)
            x = self.decoder[s](torch.cat([x, skips.pop()], dim=1))
        return self.classifier(x)

    def flops(self, input_shape: Sequence[int]) -> int:
        shape = list(self.output_shape(input_shape))
        feats = self._features
        macs = 0
        shapes = []
        cin = self.in_channels
        for s, cout in enumerate(feats):
            if s > 0:
                shape = [(v - 1) // 2 + 1 for v in shape]
            shapes.append(shape)
            macs += math.prod(shape) * (cin + cout) * cout * 27
            cin = cout
        for s in reversed(range(len(feats) - 1)):
            macs += math.prod(shapes[s + 1]) * feats[s + 1] * feats[s] * 8
            macs += math.prod(shapes[s]) * (2 * feats[s] + feats[s]) * feats[s] * 27
        macs += math.prod(shapes[0]) * feats[0] * self.num_classes
        return 2 * macs
