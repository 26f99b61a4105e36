"""The interface every segmentation network implements, and shared initialisation helpers.

A network takes ONE full-resolution input tensor ``(B, C_in, D, H, W)`` and returns logits
``(B, K, d, h, w)``. Networks built from valid convolutions (DeepMedic) shrink the output by
``2 * context`` per axis; networks with same-padding (the U-Net) keep the size (``context == 0``).
Low-resolution pathways are computed inside the network from that same tensor.

Pathway inputs. :meth:`SegmentationNet.pathway_inputs` splits a batch into the tensors the
network's pathways read (for DeepMedic: the normal-resolution segment and each pooled
low-resolution segment; for other nets: the input itself), and ``forward`` also accepts that
list. The adversarial step of the authors' DeepMedic perturbs each pathway input on its own
(:func:`asymseg.regularizers.pathway_perturbations`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationNet(nn.Module):
    """Base class of the segmentation networks (see the module docstring for the contract).

    Attributes:
        architecture: the registry name, e.g. "deepmedic"; with ``hparams`` it rebuilds the net
            through ``build_network(architecture, in_channels, num_classes, **hparams)``.
        in_channels: number of input channels C_in.
        num_classes: number of output classes K (logits per voxel).
        hparams: every hyper-parameter needed to rebuild the network (JSON-serialisable).
        context: input voxels needed on each side of an output tile, on every axis, when the
            output tile size is a multiple of ``output_multiple``.
        output_multiple: tile sizes (and, for exact tiling, tile origins) must be multiples of it.
        exact_tiling: True when dense inference over aligned tiles equals one big forward pass
            (eval mode): tile outputs with origins and sizes that are multiples of
            ``output_multiple`` can be stitched without any blending.
        receptive_field: input voxels (per axis) that can influence one output voxel.
        training_output_size: default output size (per axis) of a training segment.
    """

    architecture: str = ""
    context: int = 0
    output_multiple: int = 1
    exact_tiling: bool = False
    receptive_field: int = 1
    training_output_size: int = 1

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if int(in_channels) != in_channels or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.hparams: dict[str, Any] = {}

    # -- geometry ---------------------------------------------------------------------------------
    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output shape for a spatial input shape (one entry per axis).

        Raises:
            ValueError: the input size is impossible for this network (too small, or not
                giving a supported output size); the message names the axis and the rule.
        """
        raise NotImplementedError

    def input_shape(self, output_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial input shape that produces the given spatial output shape.

        Raises:
            ValueError: the output size is impossible for this network.
        """
        raise NotImplementedError

    @property
    def training_input_size(self) -> int:
        """Input size (per axis) that yields ``training_output_size``."""
        return self.input_shape((self.training_output_size,))[0]

    # -- cost ---------------------------------------------------------------------------------------
    def flops(self, input_shape: Sequence[int]) -> int:
        """Floating-point operations of one forward pass for batch 1 (2 per multiply-add).

        Counts convolutions and transposed convolutions only, from the architecture: the
        numbers ``torch.utils.flop_counter.FlopCounterMode`` reports for a float64 forward.
        (The float32 CPU forward calls oneDNN directly, which that counter does not see.)
        """
        raise NotImplementedError

    def flops_per_output_voxel(self, output_size: int) -> float:
        """FLOPs per output voxel for a cubic output tile of ``output_size`` voxels per axis.

        Includes the halo cost of the tile (valid convolutions recompute the context).
        """
        out = (int(output_size),) * 3
        return self.flops(self.input_shape(out)) / float(math.prod(out))

    # -- pathways ---------------------------------------------------------------------------------------
    def pathway_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tensors the pathways read, in order (see the module docstring): ``[x]`` here.

        ``forward(pathway_inputs(x))`` equals ``forward(x)``.
        """
        self.check_input(x)
        return [x]

    # -- checks ---------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is a ``(B, in_channels, D, H, W)`` floating tensor."""
        if x.dim() != 5:
            raise ValueError(f"{self.architecture}: expected input (B, C, D, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.architecture}: expected {self.in_channels} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})")
        if not x.is_floating_point():
            raise ValueError(f"{self.architecture}: expected a floating-point input, got {x.dtype}")

    def extra_repr(self) -> str:
        return (f"architecture={self.architecture!r}, in_channels={self.in_channels}, "
                f"num_classes={self.num_classes}, context={self.context}, "
                f"output_multiple={self.output_multiple}, receptive_field={self.receptive_field}")


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def kaiming_normal_(weight: torch.Tensor, negative_slope: float,
                    generator: torch.Generator | None = None) -> None:
    """He initialisation (fan-in) for a (leaky/parametric) ReLU with the given negative slope.

    ``std = sqrt(2 / ((1 + a^2) * fan_in))``; draws from ``generator`` when given, so a seed
    reproduces the weights without touching the global random state.
    """
    if weight.is_meta:  # shapes only (parameter counting): nothing to draw
        return
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    std = math.sqrt(2.0 / ((1.0 + negative_slope ** 2) * fan_in))
    with torch.no_grad():
        weight.normal_(0.0, std, generator=generator)


def init_weights(module: nn.Module, negative_slope: float,
                 generator: torch.Generator | None = None) -> None:
    """Kaiming-normal conv weights, zero conv biases, unit/zero norm affine parameters.

    Transposed convolutions use the fan-in of their output side (``weight.shape[0]``).
    """
    if any(p.is_meta for p in module.parameters()):  # shapes only (parameter counting): nothing to draw
        return
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose3d):
            fan_in = m.weight.shape[0] * math.prod(m.weight.shape[2:])
            std = math.sqrt(2.0 / ((1.0 + negative_slope ** 2) * fan_in))
            with torch.no_grad():
                m.weight.normal_(0.0, std, generator=generator)
        elif isinstance(m, nn.Conv3d):
            kaiming_normal_(m.weight, negative_slope, generator)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm3d, nn.InstanceNorm3d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


#: Bounds on the hyper-parameters that size a network (a card is data from outside: these keep a
#: crafted card from allocating gigabytes before anything else is checked).
MAX_LIST_LENGTH = 64
MAX_WIDTH = 4096


def check_int_list(name: str, value: Any, *, minimum: int = 1, allow_empty: bool = False,
                   maximum: int = MAX_WIDTH) -> tuple[int, ...]:
    """Validate a list of integers hyper-parameter (at most ``MAX_LIST_LENGTH`` entries, each in
    [minimum, maximum]); returns it as a tuple."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of integers, got {str(value)[:80]}")
    if len(value) > MAX_LIST_LENGTH:
        raise ValueError(f"{name} has {len(value)} entries; at most {MAX_LIST_LENGTH} are supported")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= maximum:
            raise ValueError(f"{name} must be a list of integers in [{minimum}, {maximum}], got "
                             f"{str(list(value))[:80]}")
        out.append(int(v))
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return tuple(out)


def _mkldnn_usable(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not x.is_mkldnn
            and torch.backends.mkldnn.is_available() and bool(torch.backends.mkldnn.enabled))


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride: int = 1, padding: int = 0) -> torch.Tensor:
    """``F.conv3d`` that always takes oneDNN on the CPU for float32.

    PyTorch's backend choice (a 2D heuristic: batch 1 and ``C * D * H <= 20480`` takes the slow
    reference kernel) sends small-channel 3D layers, such as the first layer of every
    pathway, to a kernel about 4x slower, which also drops the channels_last layout. Calling
    oneDNN directly gives the same arithmetic as ``F.conv3d`` does when it picks oneDNN, with
    autograd; other devices and dtypes use ``F.conv3d``.
    """
    if _mkldnn_usable(x):
        if weight.dtype != x.dtype:
            raise ValueError(f"input dtype {x.dtype} and weight dtype {weight.dtype} differ")
        return torch.ops.aten.mkldnn_convolution(
            x, weight, bias, [padding] * 3, [stride] * 3, [1, 1, 1], 1)
    return F.conv3d(x, weight, bias, stride=stride, padding=padding)


def pointwise_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1^3 convolution computed as a matrix product (about 2x faster than conv3d on the CPU).

    Keeps the memory format: a channels_last_3d input gives a channels_last_3d output.

    Shape:
        x ``(B, C_in, D, H, W)``, weight ``(C_out, C_in, 1, 1, 1)`` -> ``(B, C_out, D, H, W)``.
    """
    w = weight.reshape(weight.shape[0], weight.shape[1])
    if x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        return F.linear(x.permute(0, 2, 3, 4, 1), w, bias).permute(0, 4, 1, 2, 3)
    if x.is_contiguous():
        b, _, d, h, wd = x.shape
        y = torch.matmul(w, x.reshape(b, x.shape[1], d * h * wd))
        if bias is not None:
            y = y + bias.view(1, -1, 1)
        return y.view(b, w.shape[0], d, h, wd)
    return F.conv3d(x, weight, bias)
