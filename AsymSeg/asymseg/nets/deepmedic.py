"""DeepMedic (Kamnitsas et al. 2017) with valid convolutions and exact dense tiling.

Two configurations (see METHOD.md, "Network used by the paper"):

- ``deepmedic`` (the original, MedIA 2017): a normal pathway of 8 valid 3^3 convolutions
  (30,30,40,40,40,40,50,50 feature maps), one low-resolution pathway at x3 with the same
  layers, fully connected layers 150,150 as 1^3 convolutions, a 1^3 classifier; BN + PReLU;
  dropout 0, 0.5, 0.5 on the inputs of FC1, FC2 and the classifier. Training segments: a 25^3
  normal-pathway segment gives a 9^3 output; the network input is 57^3 (the x3 pathway sees
  19^3 low-resolution voxels).
- ``deepmedic-tmi`` (the authors' later code, used for the TMI paper): pathways at x3 and x5,
  FC 250,250 with a 3^3 first FC kernel, no dropout. That code mirror-pads the 3^3 FC layer;
  here it is a VALID 3^3 convolution so dense tiling stays exact, which makes the training
  normal-pathway segment 39^3 (not 37^3) for a 21^3 output. The network input for a 21^3
  output is 111^3. The reference code used ReLU in that configuration; PReLU is the default
  here (``activation="relu"`` is available).

Layers are conv (no bias) -> BN -> PReLU, which is the same network as DeepMedic's
BN -> PReLU -> conv ordering. Weights: He (Kaiming) normal.

Geometry. ONE full-resolution input of size ``n + 2 * context`` per axis gives an output of
``n``. The normal pathway takes the centre. A pathway with factor f average-pools
(``F.avg_pool3d``, kernel = stride = f) a window of the SAME input, runs its layers, repeats
each low-resolution voxel into an f^3 block (nearest upsampling) and crops to the output grid.
When n is a multiple of f, the blocks start exactly at the output origin, so tiles whose
output origins and sizes are multiples of ``output_multiple`` (the lcm of the factors) give
exactly the result of one big tile. Otherwise the blocks, ceil((n + 2e)/f) of them (e = 1
for a 3^3 first FC, else 0), are centred on the output, the extra voxel going to the right
(as DeepMedic centre-crops its upsampled map). Output sizes whose blocks do not fit into the
context are refused with a ValueError (for ``deepmedic``: n must be a multiple of 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from asymseg.nets.base import (
    SegmentationNet,
    check_int_list,
    conv3d,
    conv_out_size,
    init_weights,
    pointwise_conv3d,
)

#: Default hyper-parameters per configuration (METHOD.md; ml-anchors.md section 4.1).
DEEPMEDIC_DEFAULTS: dict[str, dict[str, Any]] = {
    "deepmedic": {
        "normal_features": [30, 30, 40, 40, 40, 40, 50, 50],
        "lowres_features": [30, 30, 40, 40, 40, 40, 50, 50],
        "lowres_factors": [3],
        "fc_features": [150, 150],
        "fc_first_kernel": 1,
        "dropout": [0.0, 0.5, 0.5],
        "activation": "prelu",
        "training_output_size": 9,
    },
    "deepmedic-tmi": {
        "normal_features": [30, 30, 40, 40, 40, 40, 50, 50],
        "lowres_features": [30, 30, 40, 40, 40, 40, 50, 50],
        "lowres_factors": [3, 5],
        "fc_features": [250, 250],
        "fc_first_kernel": 3,
        "dropout": [0.0, 0.0, 0.0],
        "activation": "prelu",
        "training_output_size": 21,
    },
}
ACTIVATIONS = ("prelu", "relu")
#: Initial slope of PReLU (PyTorch's default) used for the He initialisation.
PRELU_INIT = 0.25


@dataclass(frozen=True)
class _LowResAxis:
    """Where one low-resolution pathway reads and crops, along one axis (input coordinates)."""

    start: int   # first input voxel of the pooled window
    length: int  # window length: f * (blocks + 2 * layers)
    crop: int    # first voxel of the upsampled map that is kept
    keep: int    # voxels kept: n + 2e


def _lowres_axis(n: int, f: int, layers: int, e: int, context: int) -> _LowResAxis | None:
    """Plan of a factor-f pathway for output size n; None when it does not fit the context."""
    if n % f == 0:
        extra = -(-e // f)                      # whole blocks to cover the FC margin e
        blocks = n // f + 2 * extra
        first = -f * extra                      # blocks anchored at the output origin
    else:
        blocks = -(-(n + 2 * e) // f)
        first = -((blocks * f - n) // 2)        # centred; the odd voxel goes right
    start = context + first - f * layers
    length = f * (blocks + 2 * layers)
    if start < 0 or start + length > n + 2 * context:
        return None
    return _LowResAxis(start=start, length=length, crop=-e - first, keep=n + 2 * e)


class _Block(nn.Module):
    """Dropout (optional) -> convolution (no bias) -> batch norm -> activation.

    In eval mode the batch norm is folded into the convolution (one pass over memory less);
    1^3 convolutions run as matrix products. Both are exact rewrites up to float rounding.
    """

    def __init__(self, cin: int, cout: int, kernel: int, activation: str, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv = nn.Conv3d(cin, cout, kernel, bias=False)
        self.norm = nn.BatchNorm3d(cout)
        self.act = nn.PReLU(cout, init=PRELU_INIT) if activation == "prelu" else nn.ReLU(inplace=True)

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        norm = self.norm
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        weight = self.conv.weight * scale.view(-1, 1, 1, 1, 1)
        return weight, norm.bias - norm.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        conv = pointwise_conv3d if self.conv.kernel_size == (1, 1, 1) else conv3d
        if self.norm.training or self.norm.running_mean is None:
            y = self.norm(conv(x, self.conv.weight))
        else:
            y = conv(x, *self._folded())
        return self.act(y)


def _pathway(cin: int, features: Sequence[int], activation: str) -> nn.Sequential:
    blocks = []
    for cout in features:
        blocks.append(_Block(cin, cout, 3, activation))
        cin = cout
    return nn.Sequential(*blocks)


class DeepMedic(SegmentationNet):
    """DeepMedic with valid convolutions; see the module docstring for geometry and defaults.

    Args:
        in_channels: input channels (modalities).
        num_classes: output classes K (>= 2).
        architecture: "deepmedic" or "deepmedic-tmi"; selects the defaults below.
        normal_features: feature maps of the normal pathway's 3^3 layers.
        lowres_features: feature maps of each low-resolution pathway's 3^3 layers.
        lowres_factors: downsampling factor of each low-resolution pathway (e.g. [3] or [3, 5]).
        fc_features: feature maps of the fully connected layers (as convolutions).
        fc_first_kernel: 1 or 3, the kernel of the first FC layer (3 is a valid convolution).
        dropout: dropout rates on the inputs of each FC layer and of the classifier
            (len(fc_features) + 1 values).
        activation: "prelu" (default) or "relu".
        training_output_size: default output size of a training segment.
        generator: random generator for the initial weights (None: the global generator).

    Shape:
        input ``(B, in_channels, n + 2 * context, ...)`` per axis -> logits ``(B, K, n, ...)``.
    """

    exact_tiling = True

    def __init__(self, in_channels: int, num_classes: int, *, architecture: str = "deepmedic",
                 generator: torch.Generator | None = None, **hparams: Any) -> None:
        super().__init__(in_channels, num_classes)
        if architecture not in DEEPMEDIC_DEFAULTS:
            raise ValueError(f"unknown DeepMedic configuration {architecture!r}; "
                             f"expected one of {sorted(DEEPMEDIC_DEFAULTS)}")
        defaults = DEEPMEDIC_DEFAULTS[architecture]
        unknown = sorted(set(hparams) - set(defaults))
        if unknown:
            raise ValueError(f"{architecture}: unknown hyper-parameters {unknown}; allowed: {sorted(defaults)}")
        hp = {**defaults, **hparams}
        normal = check_int_list("normal_features", hp["normal_features"])
        lowres = check_int_list("lowres_features", hp["lowres_features"])
        factors = check_int_list("lowres_factors", hp["lowres_factors"], minimum=2, allow_empty=True)
        if len(set(factors)) != len(factors):
            raise ValueError(f"lowres_factors must be distinct, got {list(factors)}")
        fc = check_int_list("fc_features", hp["fc_features"], allow_empty=True)
        kernel = hp["fc_first_kernel"]
        if isinstance(kernel, bool) or kernel not in (1, 3):
            raise ValueError(f"fc_first_kernel must be 1 or 3, got {kernel!r}")
        if kernel == 3 and not fc:
            raise ValueError("fc_first_kernel 3 needs at least one entry in fc_features")
        dropout = tuple(float(d) for d in hp["dropout"])
        if len(dropout) != len(fc) + 1 or not all(0.0 <= d < 1.0 for d in dropout):
            raise ValueError(f"dropout needs {len(fc) + 1} rates in [0, 1) (one per FC layer and the "
                             f"classifier), got {list(hp['dropout'])!r}")
        activation = hp["activation"]
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        train_out = hp["training_output_size"]
        if isinstance(train_out, bool) or not isinstance(train_out, int) or train_out < 1:
            raise ValueError(f"training_output_size must be a positive integer, got {train_out!r}")

        self.architecture = architecture
        self.hparams = {
            "normal_features": list(normal), "lowres_features": list(lowres),
            "lowres_factors": list(factors), "fc_features": list(fc), "fc_first_kernel": int(kernel),
            "dropout": list(dropout), "activation": activation, "training_output_size": int(train_out),
        }
        self._factors = factors
        self._normal_layers = len(normal)
        self._lowres_layers = len(lowres)
        self._fc_margin = (int(kernel) - 1) // 2   # e: extra pre-FC voxels per side
        e = self._fc_margin
        self.context = max([len(normal) + e] + [f * (len(lowres) + -(-e // f)) for f in factors])
        self.output_multiple = math.lcm(*factors) if factors else 1
        self.receptive_field = self._receptive_field()

        self.normal = _pathway(in_channels, normal, activation)
        self.lowres = nn.ModuleList(_pathway(in_channels, lowres, activation) for _ in factors)
        cin = normal[-1] + len(factors) * lowres[-1]
        fc_layers = []
        for i, cout in enumerate(fc):
            fc_layers.append(_Block(cin, cout, int(kernel) if i == 0 else 1, activation, dropout[i]))
            cin = cout
        self.fc = nn.Sequential(*fc_layers)
        self.classifier_dropout = nn.Dropout(dropout[-1]) if dropout[-1] > 0 else nn.Identity()
        self.classifier = nn.Conv3d(cin, num_classes, 1, bias=True)
        init_weights(self, PRELU_INIT if activation == "prelu" else 0.0, generator)
        # The classifier is linear: He init with slope 1 (std sqrt(1 / fan_in)).
        init_weights(self.classifier, 1.0, generator)
        self.training_output_size = int(train_out)
        # Fail now, not at the first batch, if the default training size is impossible.
        self.input_shape((self.training_output_size,))

    # -- geometry ---------------------------------------------------------------------------------
    def _receptive_field(self) -> int:
        e = self._fc_margin
        extent = 2 * (self._normal_layers + e) + 1
        for f in self._factors:
            blocks = max(math.floor((r + e) / f) - math.floor((r - e) / f) + 1 for r in range(f))
            extent = max(extent, f * (2 * self._lowres_layers + blocks))
        return extent

    def _plan(self, n: int, axis: int = 0) -> tuple[_LowResAxis, ...]:
        if n < 1:
            raise ValueError(f"{self.architecture}: axis {axis}: the output would have {n} voxels; "
                             f"the input needs at least {2 * self.context + 1} (context {self.context} per side)")
        plans = []
        for f in self._factors:
            plan = _lowres_axis(n, f, self._lowres_layers, self._fc_margin, self.context)
            if plan is None:
                raise ValueError(
                    f"{self.architecture}: axis {axis}: output size {n} is not supported; the x{f} "
                    f"pathway needs output sizes that are multiples of {f} (use multiples of "
                    f"{self.output_multiple})")
            plans.append(plan)
        return tuple(plans)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        out = tuple(int(s) - 2 * self.context for s in input_shape)
        for axis, n in enumerate(out):
            self._plan(n, axis)
        return out

    def input_shape(self, output_shape: Sequence[int]) -> tuple[int, ...]:
        for axis, n in enumerate(output_shape):
            self._plan(int(n), axis)
        return tuple(int(n) + 2 * self.context for n in output_shape)

    # -- forward ----------------------------------------------------------------------------------
    def pathway_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[normal segment, low-resolution segment per factor]`` of a full-resolution input.

        The normal segment is the centre of ``x`` (output size + 2 * (layers + e) per axis);
        a low-resolution segment is the average-pooled window its pathway reads (see the module
        docstring), as DeepMedic feeds each pathway its own segment.
        """
        self.check_input(x)
        sizes = self.output_shape(x.shape[2:])
        plans = [self._plan(n, axis) for axis, n in enumerate(sizes)]
        c, m = self.context, self._normal_layers + self._fc_margin
        inputs = [x[(slice(None), slice(None), *(slice(c - m, c + n + m) for n in sizes))]]
        for index, f in enumerate(self._factors):
            axes = [plan[index] for plan in plans]
            window = x[(slice(None), slice(None), *(slice(a.start, a.start + a.length) for a in axes))]
            inputs.append(F.avg_pool3d(window, kernel_size=f, stride=f))
        return inputs

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits of the central output region.

        Args:
            x: ``(B, in_channels, D, H, W)`` float input (normalised intensities), or the list
                :meth:`pathway_inputs` gives for such an input (each pathway's own segment).

        Returns:
            ``(B, num_classes, D - 2c, H - 2c, W - 2c)`` logits, c = ``self.context``.
        """
        inputs = self.pathway_inputs(x) if isinstance(x, torch.Tensor) else list(x)
        if len(inputs) != 1 + len(self._factors):
            raise ValueError(f"{self.architecture}: expected {1 + len(self._factors)} pathway inputs, got {len(inputs)}")
        m = self._normal_layers + self._fc_margin
        normal = inputs[0]
        self.check_input(normal)
        sizes = tuple(int(s) - 2 * m for s in normal.shape[2:])
        plans = [self._plan(n, axis) for axis, n in enumerate(sizes)]
        features = [self.normal(normal)]
        for index, (f, path, low_input) in enumerate(zip(self._factors, self.lowres, inputs[1:])):
            axes = [plan[index] for plan in plans]
            expected = tuple(a.length // f for a in axes)
            if tuple(low_input.shape[2:]) != expected:
                raise ValueError(f"{self.architecture}: the x{f} pathway input has shape {tuple(low_input.shape[2:])}, "
                                 f"expected {expected} for an output of {sizes}")
            low = path(low_input)
            up = F.interpolate(low, scale_factor=float(f), mode="nearest")
            features.append(up[(slice(None), slice(None), *(slice(a.crop, a.crop + a.keep) for a in axes))])
        h = torch.cat(features, dim=1) if len(features) > 1 else features[0]
        h = self.fc(h)
        h = self.classifier_dropout(h)
        return pointwise_conv3d(h, self.classifier.weight, self.classifier.bias)

    # -- cost ---------------------------------------------------------------------------------------
    def flops(self, input_shape: Sequence[int]) -> int:
        sizes = self.output_shape(input_shape)
        plans = [self._plan(n, axis) for axis, n in enumerate(sizes)]
        e = self._fc_margin

        def pathway_macs(shape: list[int], cin: int, features: list[int]) -> int:
            total = 0
            for cout in features:
                shape = [conv_out_size(s, 3) for s in shape]
                total += math.prod(shape) * cin * cout * 27
                cin = cout
            return total

        hp = self.hparams
        m = self._normal_layers + e
        macs = pathway_macs([n + 2 * m for n in sizes], self.in_channels, hp["normal_features"])
        for index, f in enumerate(self._factors):
            shape = [plan[index].length // f for plan in plans]
            macs += pathway_macs(shape, self.in_channels, hp["lowres_features"])
        cin = hp["normal_features"][-1] + len(self._factors) * hp["lowres_features"][-1]
        shape = [n + 2 * e for n in sizes]
        for i, cout in enumerate(hp["fc_features"]):
            k = hp["fc_first_kernel"] if i == 0 else 1
            shape = [conv_out_size(s, k) for s in shape]
            macs += math.prod(shape) * cin * cout * k ** 3
            cin = cout
        macs += math.prod(sizes) * cin * self.num_classes
        return 2 * macs
