"""Whole-volume inference: crop to the brain, tile, batch, stitch, retry on out-of-memory.

:func:`predict_volume` turns one normalised ``(C, D, H, W)`` volume and its brain mask into
logits, the rare-class probability and a label map, all in the input's voxel grid.

How it works:

1. The brain mask's bounding box is the region to predict, and only the tiles holding a voxel of
   the mask run (outside it the result is background anyway). Nets with exact tiling (DeepMedic)
   get non-overlapping output tiles aligned to ``net.output_multiple`` on a grid anchored at the
   image origin (:func:`~asymseg.infer.tiling.plan_exact_tiles`); each tile's input is the
   output tile plus ``net.context`` voxels per side, read from the image and padded with zeros
   (the normalised background) where it passes the image edge. The stitched result equals one
   forward pass over the whole zero-padded volume, so it depends neither on the tile size nor
   on the mask. Other nets (the U-Net) get overlapping tiles blended with Gaussian weights, or a
   single pass over the box when it fits in one tile.
2. Tiles are as large as a memory budget allows (large tiles recompute less context: DeepMedic
   costs 0.82 MFLOP per output voxel with 128^3 tiles and 1.22 M with 45^3). The budget is
   checked against an activation model measured with two tiny forward passes.
3. Tiles run in batches under ``torch.inference_mode`` in eval mode, on a copy of the net when it
   must move or change memory layout (the caller's net is never modified). On the CPU, nets with
   exact tiling run in ``channels_last_3d``, which is 1.25-1.7x faster for them; on CUDA, autocast
   runs in bf16 where supported, else fp16. Logits are stitched in float32 into one preallocated
   array over the box; nothing else is kept per tile.
4. Out of memory (``torch.cuda.OutOfMemoryError`` or an allocator failure): the tiles are halved
   and the work restarts, down to :data:`~asymseg.infer.tiling.MIN_TILE`; then a CUDA run falls
   back to the CPU. Each retry is logged and sent as a ``log`` event.

Voxels outside the brain mask are background: label 0, probability 0, logits 0.

The thread count is the caller's (the CLI sets it); this module never changes process settings.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from asymseg import constants as C
from asymseg.errors import InputError, ModelError
from asymseg.events import CancelToken, EventCallback, emit
from asymseg.infer.memory import ActivationModel, cheapest_exact_tile, default_tile, tile_cost
from asymseg.infer.retry import format_tile, is_out_of_memory, run_with_oom_retry
from asymseg.infer.tiling import (
    MaskIndex, Tile, TilePlan, Triple, as_triple, clip_to, gaussian_weights, mask_box, plan_exact_tiles,
    plan_overlap_tiles, round_down, round_up,
)

log = logging.getLogger(__name__)

__all__ = [
    "AMP_MODES", "MEMORY_FORMATS", "ActivationModel", "Prediction", "cheapest_exact_tile", "default_tile",
    "is_out_of_memory", "predict_volume", "resolve_amp", "resolve_device", "resolve_memory_format",
    "run_with_oom_retry",
]

#: Activation memory one batch of tiles may use on the CPU (estimate, bytes). The interpreter,
#: torch and a loaded 4-channel 240x240x155 case peak at about 0.85 GB, so this keeps the
#: process under 2.5 GB.
CPU_ACTIVATION_BUDGET = 1_400_000_000
#: Fraction of the free CUDA memory one batch of tiles may use (estimate).
CUDA_MEMORY_FRACTION = 0.5
#: Largest output tile edge tried by default on the CPU and on CUDA.
CPU_MAX_TILE = 160
CUDA_MAX_TILE = 256
#: Overlap between neighbouring tiles for nets whose tiles are not exact.
BLEND_OVERLAP = 0.5
#: Depth slices per chunk when turning logits into probabilities (bounds temporary memory).
_SLAB = 16

AmpMode = Literal["auto", "off", "bf16", "fp16"]
MemoryFormat = Literal["auto", "contiguous", "channels_last"]
AMP_MODES = ("auto", "off", "bf16", "fp16")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")


@dataclass
class Prediction:
    """The result of :func:`predict_volume`, in the input's voxel grid (D, H, W).

    Attributes:
        labels: uint8 class indices (0 = background; outside the mask 0).
        probabilities: float32 probability of the rare classes (summed softmax; outside the mask 0).
        logits: float32 ``(K, D, H, W)`` logits (0 outside the mask), or None unless asked for.
        decision: float32 decision variable ``dz = max(z over rare classes) - max(z over the
            others)`` (for a binary target ``z_fg - z_bg``; 0 outside the mask), or None unless
            logits were asked for.
        info: how it ran: device, amp, memory_format, tile shape, tile count, batch size,
            computed output voxels, retries (messages) and seconds.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    logits: np.ndarray | None = None
    decision: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


# -- devices and numerics ------------------------------------------------------------------------
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; other names are checked.

    Raises:
        InputError: an unknown device name, or CUDA asked for but not available.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as err:
            raise InputError(f"--device {device!r}: not a device name (use auto, cpu or cuda)") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine (use cpu or auto)")
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"--device {device}: unsupported device type {resolved.type!r} (use auto, cpu or cuda)")
    return resolved


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: float32)."""
    if amp not in AMP_MODES:
        raise InputError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_memory_format(memory_format: str, net: torch.nn.Module, device: torch.device) -> torch.memory_format:
    """``"auto"``: channels_last_3d for exact-tiling nets on the CPU, contiguous otherwise.

    channels_last_3d made DeepMedic-style valid convolutions 1.25-1.7x faster on the CPU but
    slowed the instance-norm U-Net (ml-anchors.md, section 5).
    """
    if memory_format not in MEMORY_FORMATS:
        raise InputError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
    if memory_format == "channels_last" or (
            memory_format == "auto" and device.type == "cpu" and getattr(net, "exact_tiling", False)):
        return torch.channels_last_3d
    return torch.contiguous_format


# -- one tiled pass ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _prepared(net: torch.nn.Module, device: torch.device, memory_format: torch.memory_format
              ) -> Iterator[torch.nn.Module]:
    """The net in eval mode on ``device`` in ``memory_format``; a copy when it must change.

    The caller's net keeps its device, layout and train/eval mode.
    """
    first = next(iter(net.parameters()), None)
    same_device = first is None or first.device == device
    if same_device and memory_format == torch.contiguous_format:
        was_training = net.training
        net.eval()
        try:
            yield net
        finally:
            net.train(was_training)
        return
    work = copy.deepcopy(net).to(device)
    if memory_format != torch.contiguous_format:
        work = work.to(memory_format=memory_format)
    work.eval()
    yield work


def _plan(net: torch.nn.Module, start: Triple, stop: Triple, tile: Triple) -> TilePlan:
    m = int(net.output_multiple)
    if getattr(net, "exact_tiling", False):
        return plan_exact_tiles(start, stop, tile=tile, multiple=m, context=int(net.context))
    return plan_overlap_tiles(start, stop, tile=tile, multiple=m, context=int(net.context), overlap=BLEND_OVERLAP)


def _fill_input(buffer: torch.Tensor, image: np.ndarray, tile: Tile) -> None:
    """Copy the tile's input window into ``buffer`` (C, d, h, w), zeros outside the image."""
    clipped = clip_to(tile.in_start, tile.in_stop, image.shape[1:])
    if clipped is None or clipped[1] != tuple(slice(0, n) for n in tile.in_shape):
        buffer.zero_()
    if clipped is not None:
        src, dst = clipped
        buffer[(slice(None), *dst)] = torch.from_numpy(image[(slice(None), *src)])


def tiles_touching(plan: TilePlan, mask: np.ndarray) -> list[Tile]:
    """The tiles of ``plan`` whose output holds at least one voxel of ``mask`` (D, H, W).

    The others need not run: every voxel they would predict lies outside the brain mask, where the
    result is background whatever the net says. For an overlapping plan, a voxel of the mask is
    covered only by tiles that hold it, so its blend is unchanged too.
    """
    kept = []
    for tile in plan:
        clipped = clip_to(tile.out_start, tile.out_stop, mask.shape)
        if clipped is not None and mask[clipped[0]].any():
            kept.append(tile)
    return kept


def _run_tiles(net: torch.nn.Module, image: np.ndarray, tiles: list[Tile], plan: TilePlan, out_start: Triple,
               out: np.ndarray, weight_sum: np.ndarray | None, *, device: torch.device, batch_size: int,
               amp_dtype: torch.dtype | None, memory_format: torch.memory_format,
               on_event: EventCallback | None, cancel: CancelToken | None) -> None:
    """Run ``tiles`` (of ``plan``) and stitch their logits into ``out`` (K, box) (weighted if blended)."""
    n_batches = math.ceil(len(tiles) / batch_size)
    pin = device.type == "cuda"
    buffer = torch.empty((min(batch_size, len(tiles)), image.shape[0], *plan.input_shape), dtype=torch.float32,
                         pin_memory=pin)
    if not pin:  # fill the net's layout directly (CUDA copies from a pinned contiguous buffer)
        buffer = buffer.contiguous(memory_format=memory_format)
    weights = gaussian_weights(plan.tile_shape) if plan.blended else None
    box_shape = out.shape[1:]
    emit(on_event, C.EVENT_PROGRESS, stage="infer", done=0, total=n_batches)
    for index in range(n_batches):
        if cancel is not None:
            cancel.check()
        batch = tiles[index * batch_size:(index + 1) * batch_size]
        x = buffer[:len(batch)]
        for b, tile in enumerate(batch):
            _fill_input(x[b], image, tile)
        x = x.to(device, non_blocking=pin).contiguous(memory_format=memory_format)
        with torch.inference_mode(), _autocast(device, amp_dtype):
            logits = net(x)
        if tuple(logits.shape[2:]) != plan.tile_shape:
            name = getattr(net, "architecture", type(net).__name__)
            raise ModelError(f"{name}: a {format_tile(plan.input_shape)} input gave a "
                             f"{format_tile(logits.shape[2:])} output, expected {format_tile(plan.tile_shape)}")
        logits = logits.float().cpu()
        del x
        for b, tile in enumerate(batch):
            local_start = tuple(s - o for s, o in zip(tile.out_start, out_start))
            local_stop = tuple(s - o for s, o in zip(tile.out_stop, out_start))
            clipped = clip_to(local_start, local_stop, box_shape)
            if clipped is None:
                continue
            dst, src = clipped
            values = logits[b].numpy()[(slice(None), *src)]
            if weights is None:
                out[(slice(None), *dst)] = values
            else:
                w = weights[src]
                out[(slice(None), *dst)] += values * w
                weight_sum[dst] += w
        del logits
        emit(on_event, C.EVENT_PROGRESS, stage="infer", done=index + 1, total=n_batches)
    if cancel is not None:
        cancel.check()


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# -- public API ------------------------------------------------------------------------------------------
def predict_volume(net: torch.nn.Module, image: np.ndarray, mask: np.ndarray | None = None, *,
                   tile: int | Sequence[int] | None = None, batch_size: int | None = None,
                   device: str | torch.device = "auto", amp: AmpMode = "auto",
                   memory_format: MemoryFormat = "auto", rare: Sequence[bool] | None = None,
                   on_event: EventCallback | None = None, cancel: CancelToken | None = None,
                   return_logits: bool = False, fallback_to_cpu: bool = True,
                   return_decision: bool = False) -> Prediction:
    """Segment one volume with a network (see the module docstring for the method).

    Args:
        net: a :class:`~asymseg.nets.base.SegmentationNet` (``context``, ``output_multiple``,
            ``exact_tiling``, ``input_shape``, ``in_channels``, ``num_classes``).
        image: float32 ``(C, D, H, W)``, normalised as the model expects (z-scored in the mask).
        mask: bool ``(D, H, W)`` brain mask; None: every voxel.
        tile: the largest output tile edge (one value or D, H, W); None: as large as the memory
            budget of the device allows. Results of exact-tiling nets do not depend on it.
        batch_size: tiles per forward pass; None: 1 on the CPU, as many as fit the budget on CUDA.
        device: "auto" (cuda if available), "cpu", "cuda" or "cuda:N".
        amp: autocast on CUDA: "auto" (bf16 where supported, else fp16), "bf16", "fp16" or "off".
            The CPU runs in float32 unless "bf16"/"fp16" is asked for.
        memory_format: "auto" (channels_last_3d for exact-tiling nets on the CPU), "contiguous"
            or "channels_last".
        rare: one flag per class, the classes whose probability is summed into
            ``probabilities`` and that form the rare side of ``decision``; None: every class but 0.
        on_event: receives ``progress`` events (stage "infer", one per batch of tiles) and a
            ``log`` event per out-of-memory retry.
        cancel: checked between batches.
        return_logits: also return the logits and the decision variable.
        return_decision: also return the decision variable (without the logits: one float32
            volume instead of K).
        fallback_to_cpu: when CUDA runs out of memory even with the smallest tiles, go on on the CPU.

    Returns:
        The :class:`Prediction`.

    Raises:
        InputError: wrong array shapes or channel count, unknown device/amp/memory format.
        ModelError: the net's output does not have the expected shape.
        ResourceError: out of memory even with the smallest tiles.
        Cancelled: ``cancel`` was set.

    Shape:
        image ``(C, D, H, W)``, mask ``(D, H, W)`` -> labels/probabilities ``(D, H, W)``,
        logits ``(K, D, H, W)``.
    """
    started = time.perf_counter()
    image = _check_image(net, image)
    spatial = image.shape[1:]
    if mask is None:
        mask = np.ones(spatial, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != spatial:
        raise InputError(f"the brain mask has shape {mask.shape}, the image {spatial} (D, H, W)")
    mask = mask.astype(bool, copy=False)
    k = int(net.num_classes)
    rare_flags = _rare_flags(rare, k)
    device = resolve_device(device)
    amp_dtype = resolve_amp(amp, device)
    info: dict[str, Any] = {"device": str(device), "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
                            "retries": []}
    box = mask_box(mask)
    if box is None:
        log.warning("the brain mask is empty: every voxel is background")
        info.update(tiles=0, tile=None, batch_size=0, computed_voxels=0, memory_format="n/a",
                    seconds=time.perf_counter() - started)
        emit(on_event, C.EVENT_PROGRESS, stage="infer", done=0, total=0)
        return _empty_prediction(spatial, k, return_logits, info, return_decision)
    start, stop = box
    job = _VolumeJob(net=net, image=image, mask=mask, start=start, stop=stop, tile=tile, batch_size=batch_size,
                     amp=amp, amp_dtype=amp_dtype, memory_format=memory_format, on_event=on_event, cancel=cancel)
    fallback = torch.device("cpu") if fallback_to_cpu and device.type == "cuda" else None
    done, used_device, _ = run_with_oom_retry(
        job.attempt, device=device, tile=job.budget_tile(device), multiple=job.multiple,
        fallback_device=fallback, fallback_tile=lambda: job.budget_tile(torch.device("cpu")),
        on_event=on_event, retries=info["retries"])
    info.update(done.info(used_device))
    prediction = _finish(done.logits, done.lo, mask, rare_flags, return_logits, return_decision)
    info["seconds"] = time.perf_counter() - started
    prediction.info = info
    return prediction


@dataclass(frozen=True)
class _Pass:
    """One completed tiled pass: the logits over the covered box (K, box) and how it ran."""

    logits: np.ndarray
    lo: Triple
    plan: TilePlan
    tiles_run: int
    batch_size: int
    memory_format: torch.memory_format
    amp: torch.dtype | None

    def info(self, device: torch.device) -> dict[str, Any]:
        plan = self.plan
        return {"device": str(device), "tile": list(plan.tile_shape), "tiles": self.tiles_run,
                "skipped_tiles": len(plan) - self.tiles_run, "batch_size": self.batch_size,
                "computed_voxels": self.tiles_run * math.prod(plan.tile_shape),
                "memory_format": "channels_last_3d" if self.memory_format == torch.channels_last_3d else "contiguous",
                "amp": str(self.amp).replace("torch.", "") if self.amp else "off", "blended": plan.blended}


@dataclass
class _VolumeJob:
    """One volume's inference: the tile size its memory budget allows, and a tiled pass at a given tile
    size (what :func:`~asymseg.infer.retry.run_with_oom_retry` calls, smaller each time memory runs out)."""

    net: torch.nn.Module
    image: np.ndarray
    mask: np.ndarray
    start: Triple
    stop: Triple
    tile: int | Sequence[int] | None
    batch_size: int | None
    amp: AmpMode
    amp_dtype: torch.dtype | None
    memory_format: MemoryFormat
    on_event: EventCallback | None
    cancel: CancelToken | None
    _activations: ActivationModel | None = None
    _index: MaskIndex | None = None

    @property
    def multiple(self) -> int:
        return int(self.net.output_multiple)

    @property
    def exact(self) -> bool:
        return bool(getattr(self.net, "exact_tiling", False))

    @property
    def region(self) -> Triple:
        """The extent the tiles cover: exact plans start on the multiple grid below the box."""
        m = self.multiple
        return tuple(b - (round_down(a, m) if self.exact else a)  # type: ignore[return-value]
                     for a, b in zip(self.start, self.stop))

    def activations(self) -> ActivationModel:
        if self._activations is None:
            self._activations = ActivationModel.measure(self.net)
        return self._activations

    def budget_tile(self, dev: torch.device) -> Triple:
        """The tile edges for ``dev``: the caller's (capped at the region), or the cheapest plan whose
        activations fit the device's budget."""
        m, region = self.multiple, self.region
        if self.tile is not None:
            # Edges past the region change nothing; capping them keeps out-of-memory halving effective.
            return tuple(min(t, round_up(n, m)) for t, n in zip(as_triple(self.tile), region))  # type: ignore[return-value]
        if dev.type == "cuda":
            free, _ = torch.cuda.mem_get_info(dev)
            budget, largest = int(free * CUDA_MEMORY_FRACTION), CUDA_MAX_TILE
        else:
            budget, largest = CPU_ACTIVATION_BUDGET, CPU_MAX_TILE
        dtype_bytes = 2 if dev.type == "cuda" and self.amp_dtype is not None else 4
        if self.exact:
            if self._index is None:
                self._index = MaskIndex(self.mask)
            index = self._index
            return cheapest_exact_tile(
                self.activations(), region, multiple=m, budget_bytes=budget, max_tile=largest,
                cost=tile_cost(self.net), dtype_bytes=dtype_bytes,
                tiles_run=lambda shape: index.tiles_touching(_plan(self.net, self.start, self.stop, shape)))
        return default_tile(self.activations(), region, multiple=m, budget_bytes=budget, max_tile=largest,
                            dtype_bytes=dtype_bytes)

    def attempt(self, dev: torch.device, tile_edges: Triple) -> _Pass:
        """One tiled pass on ``dev`` with tiles of ``tile_edges`` (only the tiles that hold brain)."""
        net, spatial = self.net, self.mask.shape
        plan = _plan(net, self.start, self.stop, tile_edges)
        lo = tuple(max(0, s) for s in plan.region_start)
        hi = tuple(min(n, s) for n, s in zip(spatial, plan.region_stop))
        out = np.zeros((int(net.num_classes), *(b - a for a, b in zip(lo, hi))), dtype=np.float32)
        weight_sum = np.zeros(out.shape[1:], dtype=np.float32) if plan.blended else None
        fmt = resolve_memory_format(self.memory_format, net, dev)
        dev_amp = self.amp_dtype if dev.type == "cuda" or self.amp in ("bf16", "fp16") else None
        per_batch = self.batch_size or _default_batch(self.activations, plan, dev, dev_amp)
        tiles = tiles_touching(plan, self.mask)
        with _prepared(net, dev, fmt) as work:
            _run_tiles(work, self.image, tiles, plan, lo, out, weight_sum, device=dev, batch_size=per_batch,
                       amp_dtype=dev_amp, memory_format=fmt, on_event=self.on_event, cancel=self.cancel)
        if weight_sum is not None:  # voxels no computed tile covers lie outside the mask: keep them 0
            np.divide(out, np.where(weight_sum > 0, weight_sum, 1.0), out=out)
        return _Pass(out, lo, plan, len(tiles), per_batch, fmt, dev_amp)  # type: ignore[arg-type]


def _check_image(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 4:
        raise InputError(f"expected an image of shape (C, D, H, W), got shape {image.shape}")
    expected = int(net.in_channels)
    if image.shape[0] != expected:
        raise InputError(f"the model takes {expected} input channel(s), the image has {image.shape[0]}")
    if image.dtype != np.float32:
        image = image.astype(np.float32)
    return np.ascontiguousarray(image)


def _rare_flags(rare: Sequence[bool] | None, k: int) -> np.ndarray:
    if rare is None:
        return np.array([False] + [True] * (k - 1))
    flags = np.array([bool(r) for r in rare])
    if flags.size != k:
        raise InputError(f"rare flags: expected {k} (one per class), got {flags.size}")
    if flags[1:].any():
        flags[0] = False  # the background is never the rare side of the decision variable
    else:
        flags = np.array([False] + [True] * (k - 1))
    return flags


def _default_batch(activations: Callable[[], ActivationModel], plan: TilePlan, device: torch.device,
                   amp_dtype: torch.dtype | None) -> int:
    """1 on the CPU (big tiles gain nothing from batching); on CUDA as many tiles as fit the budget."""
    if device.type != "cuda" or len(plan) == 1:
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    one = activations().peak_bytes(plan.tile_shape, 1, 2 if amp_dtype is not None else 4)
    return int(max(1, min(len(plan), (free * CUDA_MEMORY_FRACTION) // max(one, 1))))


def _finish(box_logits: np.ndarray, lo: Triple, mask: np.ndarray, rare: np.ndarray,
            return_logits: bool, return_decision: bool = False) -> Prediction:
    """Labels, rare-class probability and (optionally) logits over the full grid."""
    spatial = mask.shape
    k, bd, bh, bw = box_logits.shape
    box = (slice(lo[0], lo[0] + bd), slice(lo[1], lo[1] + bh), slice(lo[2], lo[2] + bw))
    inside = mask[box]
    labels = np.zeros(spatial, dtype=np.uint8)
    probabilities = np.zeros(spatial, dtype=np.float32)
    logits = np.zeros((k, *spatial), dtype=np.float32) if return_logits else None
    decision = np.zeros(spatial, dtype=np.float32) if return_logits or return_decision else None
    for z0 in range(0, bd, _SLAB):
        z1 = min(bd, z0 + _SLAB)
        z = box_logits[:, z0:z1]
        keep = inside[z0:z1]
        dst = (slice(lo[0] + z0, lo[0] + z1), box[1], box[2])
        labels[dst] = np.where(keep, z.argmax(axis=0), 0).astype(np.uint8)
        shifted = np.exp(z - z.max(axis=0, keepdims=True))
        p = shifted[rare].sum(axis=0) / shifted.sum(axis=0)
        probabilities[dst] = np.where(keep, p, 0.0)
        if return_logits:
            logits[(slice(None), *dst)] = np.where(keep, z, 0.0)
        if decision is not None:
            dz = z[rare].max(axis=0) - z[~rare].max(axis=0)
            decision[dst] = np.where(keep, dz, 0.0)
    return Prediction(labels, probabilities, logits, decision)


def _empty_prediction(spatial: Sequence[int], k: int, return_logits: bool, info: dict[str, Any],
                      return_decision: bool = False) -> Prediction:
    shape = tuple(spatial)
    return Prediction(
        np.zeros(shape, dtype=np.uint8), np.zeros(shape, dtype=np.float32),
        np.zeros((k, *shape), dtype=np.float32) if return_logits else None,
        np.zeros(shape, dtype=np.float32) if return_logits or return_decision else None, info)
