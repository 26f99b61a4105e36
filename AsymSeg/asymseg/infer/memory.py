"""Memory and cost of tiles: how large a tile may be, and which tile shape costs least.

:class:`ActivationModel` records, from two shape-only forward passes, how every activation of a
network grows with the output tile; :func:`default_tile` and :func:`cheapest_exact_tile` choose
tile shapes whose estimated peak memory fits a budget.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from asymseg.infer.tiling import MIN_TILE, Triple, round_down, round_up

log = logging.getLogger(__name__)

#: Peak memory of one forward pass / its largest activation, measured as the growth of the
#: peak RSS on the CPU (torch 2.13, eval mode): 4.4 for DeepMedic (72^3 and 96^3 tiles), 4.75
#: for its TMI configuration, 7 for the U-Net, whose skip connections stay alive.
ACTIVATION_PEAK_FACTOR = {"exact": 4.8, "blended": 7.5}


@dataclass(frozen=True)
class ActivationModel:
    """Sizes of a net's activations as a function of the output tile, for memory budgets.

    Every module's output size along each axis is an affine function of the output tile
    size along that axis (valid convolutions add a constant, pooling and strides divide), so two
    small forward passes pin it down exactly. ``sizes[i]`` is ``(channels, offset, slope)`` of module
    output ``i`` with per-axis ``offset``/``slope``.
    """

    sizes: tuple[tuple[int, tuple[float, ...], tuple[float, ...]], ...]
    in_channels: int
    context: int
    peak_factor: float = ACTIVATION_PEAK_FACTOR["exact"]

    @classmethod
    def measure(cls, net: torch.nn.Module) -> ActivationModel:
        """Record module output shapes for output tiles of 2 and 3 multiples.

        The passes run on the meta device (shapes only, no arithmetic) through
        ``torch.func.functional_call``, so the cost does not depend on the net's width; a net
        with an operation that has no meta kernel is measured with real passes instead.
        """
        m = int(net.output_multiple)
        shapes: list[list[tuple[int, ...]]] = []

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 5:
                shapes[-1].append(tuple(output.shape[1:]))

        # Every module, not only leaves: nets may call functional ops with their leaves' weights.
        handles = [module.register_forward_hook(hook) for module in net.modules()]
        was_training = net.training
        try:
            net.eval()
            try:
                shapes.clear()
                _probe(net, shapes, m, meta=True)
            except (RuntimeError, NotImplementedError, TypeError) as err:
                log.debug("shape-only passes failed (%s); measuring with real passes", err)
                shapes.clear()
                _probe(net, shapes, m, meta=False)
        finally:
            for handle in handles:
                handle.remove()
            net.train(was_training)
        sizes = []
        for small, large in zip(*shapes):
            slope = tuple((b - a) / m for a, b in zip(small[1:], large[1:]))
            offset = tuple(a - s * 2 * m for a, s in zip(small[1:], slope))
            sizes.append((int(small[0]), offset, slope))
        kind = "exact" if getattr(net, "exact_tiling", False) else "blended"
        return cls(tuple(sizes), int(net.in_channels), int(net.context), ACTIVATION_PEAK_FACTOR[kind])

    def peak_bytes(self, output_shape: Sequence[int], batch_size: int = 1, dtype_bytes: int = 4) -> int:
        """Estimated peak activation memory: ``peak_factor`` (:data:`ACTIVATION_PEAK_FACTOR`)
        times the largest activation, plus the input batch (float32)."""
        largest = 0.0
        for channels, offset, slope in self.sizes:
            voxels = math.prod(max(0.0, o + s * t) for o, s, t in zip(offset, slope, output_shape))
            largest = max(largest, channels * voxels)
        inputs = self.in_channels * math.prod(t + 2 * self.context for t in output_shape)
        return int(batch_size * (self.peak_factor * largest * dtype_bytes + 4 * inputs))


def _probe(net: torch.nn.Module, shapes: list[list[tuple[int, ...]]], m: int, *, meta: bool) -> None:
    """Forward passes for output tiles of 2m and 3m voxels per edge, shapes recorded by hooks."""
    from torch.func import functional_call

    first = next(iter(net.parameters()), None)
    device = torch.device("meta") if meta else (first.device if first is not None else torch.device("cpu"))
    state = None
    if meta:
        state = {name: torch.empty_like(value, device="meta")
                 for name, value in [*net.named_parameters(), *net.named_buffers()]}
    for t in (2 * m, 3 * m):
        shapes.append([])
        x = torch.zeros((1, net.in_channels, *net.input_shape((t, t, t))), device=device)
        with torch.inference_mode():
            if state is not None:
                functional_call(net, state, (x,))
            else:
                net(x)


def default_tile(model: ActivationModel, region: Sequence[int], *, multiple: int, budget_bytes: int,
                 max_tile: int, dtype_bytes: int = 4) -> Triple:
    """The largest output tile edge (a multiple of ``multiple``) whose activations fit the budget.

    The edge is capped at ``max_tile`` and at the region (rounded up to the multiple), then
    lowered until :meth:`ActivationModel.peak_bytes` of that tile fits ``budget_bytes``.
    """
    m = int(multiple)
    cap = [max(m, min(round_down(max_tile, m), round_up(int(n), m))) for n in region]
    floor_edge = max(m, round_up(MIN_TILE, m))
    edge = max(cap)
    while edge > floor_edge and model.peak_bytes([min(edge, c) for c in cap], 1, dtype_bytes) > budget_bytes:
        edge -= m
    return tuple(max(min(edge, c), min(floor_edge, c)) for c in cap)  # type: ignore[return-value]


def cheapest_exact_tile(model: ActivationModel, region: Sequence[int], *, multiple: int, budget_bytes: int,
                        max_tile: int, cost: Callable[[Triple], float], dtype_bytes: int = 4,
                        tiles_run: Callable[[Triple], int] | None = None) -> Triple:
    """The exact-plan tile shape that covers ``region`` at the least total cost within the budget.

    Per axis, splitting the region into n balanced tiles gives an edge of
    ``round_up(ceil(L / n), multiple)``; every combination of a few tile counts per axis is
    priced as ``tiles * cost(tile)`` (the FLOPs of one tile, halo included) and the cheapest one
    whose :meth:`ActivationModel.peak_bytes` fits ``budget_bytes`` is chosen. ``tiles_run(shape)``,
    when given, says how many tiles of that shape will run (those holding a brain voxel); by
    default all of them. Falls back to :func:`default_tile` when no combination fits.
    """
    import itertools

    m = int(multiple)
    largest = max(m, round_down(max_tile, m))
    options = []
    for length in region:
        length = int(length)
        first = -(-length // largest)
        choices: dict[int, int] = {}
        for n in range(first, first + 8):
            edge = max(m, round_up(-(-length // n), m))
            choices.setdefault(edge, -(-length // edge))
        options.append(sorted(choices.items(), reverse=True))
    best: tuple[float, Triple] | None = None
    for combo in itertools.product(*options):
        shape = tuple(edge for edge, _ in combo)
        if model.peak_bytes(shape, 1, dtype_bytes) > budget_bytes:
            continue
        count = tiles_run(shape) if tiles_run is not None else math.prod(n for _, n in combo)  # type: ignore[arg-type]
        total = count * cost(shape)  # type: ignore[arg-type]
        if best is None or total < best[0]:
            best = (total, shape)  # type: ignore[assignment]
    if best is None:
        return default_tile(model, region, multiple=m, budget_bytes=budget_bytes, max_tile=max_tile,
                            dtype_bytes=dtype_bytes)
    return best[1]


def tile_cost(net: torch.nn.Module) -> Callable[[Triple], float]:
    """FLOPs of one tile from the architecture when the net can count them, else its input volume."""
    context = int(net.context)
    if hasattr(net, "flops"):
        def flops(shape: Triple) -> float:
            try:
                return float(net.flops(net.input_shape(shape)))
            except NotImplementedError:
                return float(math.prod(s + 2 * context for s in shape))
        return flops
    return lambda shape: float(math.prod(s + 2 * context for s in shape))


#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def configure_malloc() -> bool:
    """Keep freed memory in the process heap (glibc only), a process-wide setting for commands
    (``segment``, the inference benchmark).

    glibc serves large blocks (every activation of a big tile) with ``mmap`` and returns them
    on free, so each forward pass faults in its memory again page by page: a quarter of the CPU
    time of a DeepMedic tile went to the kernel. With ``mmap`` off and a high trim threshold the
    same memory is reused: no page faults and about 25% less CPU time, but fragmentation raises
    the peak RSS (DeepMedic on a 240x240x155 case: 1.54 -> 1.89 GB with 2 channels, 1.61 -> 1.76
    GB with 4; ``asymseg bench inference``). Skipped off Linux, on other
    C libraries, when the user set ``MALLOC_MMAP_MAX_`` or ``GLIBC_TUNABLES``, and when the
    process runs under an address-space limit (RLIMIT_AS): there, freed tiles must go back to
    the system so the out-of-memory retry with smaller tiles can fit in the fragmented heap.

    Returns:
        True when the setting was applied.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_MAX_" in os.environ or "GLIBC_TUNABLES" in os.environ:
        return False
    import resource

    if resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
    except (OSError, AttributeError):
        return False
    log.debug("malloc: mmap off, trim threshold 2 GiB (%s)", "applied" if applied else "refused")
    return applied
