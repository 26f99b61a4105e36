"""Tile arithmetic for whole-volume inference: which output tiles cover the brain box.

Two plans, both in absolute voxel coordinates of the image (numpy order D, H, W):

- :func:`plan_exact_tiles` for valid-convolution nets whose tiling is exact (DeepMedic):
  output tiles do not overlap, every tile origin and size is a multiple of the net's
  ``output_multiple`` on a grid anchored at voxel 0 of the image, and each tile's input is the
  output tile plus ``context`` voxels on every side. Because the grid is anchored at the image
  origin (not at the box), the result equals one forward pass over the whole zero-padded
  volume, whatever the tile size and whatever the mask.
- :func:`plan_overlap_tiles` for nets whose tiles are not exact (the same-padded U-Net):
  tiles overlap and are blended with :func:`gaussian_weights`; a box that fits in one tile is
  done in a single pass.

Tiles may reach outside the image; the engine fills those voxels with zeros (the normalised
background) and drops the outputs there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

Triple = tuple[int, int, int]

#: Smallest output tile edge the out-of-memory retry goes down to (before rounding to the
#: net's output multiple).
MIN_TILE = 12


def as_triple(value: int | Sequence[int], name: str = "tile") -> Triple:
    """``96`` -> (96, 96, 96); a 3-sequence is checked and returned as a tuple.

    Raises:
        ValueError: not one or three positive integers.
    """
    if isinstance(value, (int, np.integer)):
        values = (int(value),) * 3
    else:
        values = tuple(int(v) for v in value)
    if len(values) != 3 or any(v < 1 for v in values):
        raise ValueError(f"{name} must be one positive integer or three, got {value!r}")
    return values  # type: ignore[return-value]


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


def round_down(value: int, multiple: int) -> int:
    """The largest multiple of ``multiple`` that is <= ``value``."""
    return (value // multiple) * multiple


def mask_box(mask: np.ndarray) -> tuple[Triple, Triple] | None:
    """Bounding box ``(start, stop)`` of the True voxels of a (D, H, W) mask; None if empty."""
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (D, H, W), got shape {mask.shape}")
    starts, stops = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        starts.append(int(hits[0]))
        stops.append(int(hits[-1]) + 1)
    return tuple(starts), tuple(stops)  # type: ignore[return-value]


@dataclass(frozen=True)
class Tile:
    """One output tile and the input it needs (absolute image coordinates, D, H, W).

    ``out_start``/``out_stop`` bound the output voxels the net predicts for this tile;
    ``in_start``/``in_stop`` bound its input (output plus ``context`` on each side).
    """

    out_start: Triple
    out_stop: Triple
    in_start: Triple
    in_stop: Triple

    @property
    def out_shape(self) -> Triple:
        return tuple(b - a for a, b in zip(self.out_start, self.out_stop))  # type: ignore[return-value]

    @property
    def in_shape(self) -> Triple:
        return tuple(b - a for a, b in zip(self.in_start, self.in_stop))  # type: ignore[return-value]


@dataclass(frozen=True)
class TilePlan:
    """Output tiles of one shape covering ``[region_start, region_stop)``.

    Args:
        region_start, region_stop: the output region the tiles cover (may pass the image edge).
        tile_shape: output size of every tile.
        starts: per axis, the output start of each tile along that axis.
        context: input voxels needed on each side beyond an output tile.
        blended: True when tiles overlap and must be blended (non-exact nets).
    """

    region_start: Triple
    region_stop: Triple
    tile_shape: Triple
    starts: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    context: int
    blended: bool

    @property
    def input_shape(self) -> Triple:
        return tuple(t + 2 * self.context for t in self.tile_shape)  # type: ignore[return-value]

    def __len__(self) -> int:
        return math.prod(len(s) for s in self.starts)

    def __iter__(self) -> Iterator[Tile]:
        c = self.context
        for d in self.starts[0]:
            for h in self.starts[1]:
                for w in self.starts[2]:
                    start = (d, h, w)
                    stop = tuple(s + t for s, t in zip(start, self.tile_shape))
                    yield Tile(start, stop,  # type: ignore[arg-type]
                               tuple(s - c for s in start), tuple(s + c for s in stop))  # type: ignore[arg-type]

    def output_voxels(self) -> int:
        """Voxels the net computes (all tiles, overlaps counted each time)."""
        return len(self) * math.prod(self.tile_shape)


def plan_exact_tiles(start: Sequence[int], stop: Sequence[int], *, tile: int | Sequence[int],
                     multiple: int, context: int) -> TilePlan:
    """Non-overlapping output tiles for an exact-tiling net.

    Per axis, the region starts at ``start`` rounded down to a multiple of ``multiple`` and is
    split into ``n = ceil(length / tile)`` equal tiles whose size is the smallest multiple of
    ``multiple`` that covers it, so tiles are balanced and waste at most ``n * multiple`` voxels.

    Args:
        start, stop: the box to cover (D, H, W; ``stop`` exclusive).
        tile: the largest output tile edge (one value or one per axis); values below
            ``multiple`` are raised to it.
        multiple: the net's ``output_multiple``.
        context: the net's ``context``.

    Returns:
        The plan; every tile origin is a multiple of ``multiple`` in image coordinates.

    Raises:
        ValueError: an empty box or a non-positive multiple.
    """
    if multiple < 1:
        raise ValueError(f"output multiple must be >= 1, got {multiple}")
    tile3 = as_triple(tile)
    region_start, region_stop, shape, starts = [], [], [], []
    for a, b, t_max in zip(start, stop, tile3):
        if b <= a:
            raise ValueError(f"empty box: start {tuple(start)}, stop {tuple(stop)}")
        origin = round_down(int(a), multiple)
        length = int(b) - origin
        t_max = max(round_down(t_max, multiple), multiple)
        count = -(-length // t_max)
        size = round_up(-(-length // count), multiple)
        region_start.append(origin)
        region_stop.append(origin + count * size)
        shape.append(size)
        starts.append(tuple(origin + k * size for k in range(count)))
    return TilePlan(tuple(region_start), tuple(region_stop), tuple(shape),  # type: ignore[arg-type]
                    tuple(starts), context, blended=False)  # type: ignore[arg-type]


def plan_overlap_tiles(start: Sequence[int], stop: Sequence[int], *, tile: int | Sequence[int],
                       multiple: int, context: int, overlap: float = 0.5) -> TilePlan:
    """Overlapping output tiles for a net whose tiles are not exact (blended afterwards).

    Per axis, the tile edge is the box length rounded up to ``multiple`` when that fits in
    ``tile`` (a single pass), else ``tile`` rounded down to ``multiple``; tile origins are spread
    evenly from the box start to the box stop so that neighbours overlap by at least
    ``overlap`` of a tile.

    Args:
        start, stop: the box to cover (D, H, W; ``stop`` exclusive).
        tile: the largest output tile edge (one value or one per axis).
        multiple: the net's ``output_multiple`` (tile sizes are multiples of it).
        context: the net's ``context`` (input margin on each side of a tile).
        overlap: the least fraction of a tile shared by neighbours, in [0, 1).

    Raises:
        ValueError: an empty box, a non-positive multiple or an overlap outside [0, 1).
    """
    if multiple < 1:
        raise ValueError(f"output multiple must be >= 1, got {multiple}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    tile3 = as_triple(tile)
    region_start, region_stop, shape, starts = [], [], [], []
    for a, b, t_max in zip(start, stop, tile3):
        a, b = int(a), int(b)
        if b <= a:
            raise ValueError(f"empty box: start {tuple(start)}, stop {tuple(stop)}")
        length = b - a
        t_max = max(round_down(t_max, multiple), multiple)
        size = round_up(length, multiple)
        if size <= t_max:
            count, positions = 1, (a,)
        else:
            size = t_max
            step = max(1, int(size * (1.0 - overlap)))
            count = -(-(length - size) // step) + 1
            positions = tuple(int(round(p)) for p in np.linspace(a, b - size, count))
        region_start.append(positions[0])
        region_stop.append(positions[-1] + size)
        shape.append(size)
        starts.append(positions)
    return TilePlan(tuple(region_start), tuple(region_stop), tuple(shape),  # type: ignore[arg-type]
                    tuple(starts), context, blended=True)  # type: ignore[arg-type]


def gaussian_weights(shape: Sequence[int], sigma_scale: float = 0.125, floor: float = 1e-3) -> np.ndarray:
    """Blending weights for overlapping tiles: a Gaussian centred on the tile, maximum 1.

    Args:
        shape: the output tile shape (D, H, W).
        sigma_scale: sigma as a fraction of the tile edge (nnU-Net and MONAI use 1/8).
        floor: the smallest weight, so tile borders still count where only one tile covers them.

    Returns:
        float32 array of ``shape``.
    """
    axes = []
    for n in shape:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        sigma = max(n * sigma_scale, 1e-6)
        axes.append(np.exp(-0.5 * (x / sigma) ** 2))
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    weights /= weights.max()
    return np.maximum(weights, floor).astype(np.float32)


def clip_to(start: Sequence[int], stop: Sequence[int], shape: Sequence[int]
            ) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """The part of ``[start, stop)`` inside ``[0, shape)``.

    Returns:
        ``(image_slices, local_slices)``: where that part sits in the image and in the
        ``[start, stop)`` block, or None when they do not intersect.
    """
    image, local = [], []
    for a, b, n in zip(start, stop, shape):
        lo, hi = max(a, 0), min(b, n)
        if hi <= lo:
            return None
        image.append(slice(lo, hi))
        local.append(slice(lo - a, hi - a))
    return tuple(image), tuple(local)


class MaskIndex:
    """Answers "how many tiles of a plan hold a voxel of the mask" in O(1) per tile.

    A summed-volume table of the (D, H, W) mask (one int32 per voxel, built once) gives the number
    of mask voxels in any box by inclusion-exclusion over its 8 corners, for all tiles of a plan at
    once. Used to price tile shapes by the tiles that will actually run.
    """

    def __init__(self, mask: np.ndarray) -> None:
        if mask.ndim != 3:
            raise ValueError(f"mask must be 3-D (D, H, W), got shape {mask.shape}")
        self.shape = mask.shape
        table = np.zeros(tuple(n + 1 for n in mask.shape), dtype=np.int32)
        np.cumsum(mask, axis=0, dtype=np.int32, out=table[1:, 1:, 1:])
        np.cumsum(table[1:, 1:, 1:], axis=1, out=table[1:, 1:, 1:])
        np.cumsum(table[1:, 1:, 1:], axis=2, out=table[1:, 1:, 1:])
        self.table = table

    def voxels_per_tile(self, plan: TilePlan) -> np.ndarray:
        """Mask voxels in each tile's output (array over the plan's tiles, in its D, H, W order)."""
        bounds = []
        for axis, n in enumerate(self.shape):
            starts = np.asarray(plan.starts[axis])
            bounds.append((np.clip(starts, 0, n), np.clip(starts + plan.tile_shape[axis], 0, n)))
        (d0, d1), (h0, h1), (w0, w1) = bounds
        t = self.table

        def at(d, h, w):
            return t[np.ix_(d, h, w)].astype(np.int64)

        return (at(d1, h1, w1) - at(d0, h1, w1) - at(d1, h0, w1) - at(d1, h1, w0)
                + at(d0, h0, w1) + at(d0, h1, w0) + at(d1, h0, w0) - at(d0, h0, w0))

    def tiles_touching(self, plan: TilePlan) -> int:
        """How many tiles of ``plan`` hold at least one mask voxel."""
        return int(np.count_nonzero(self.voxels_per_tile(plan)))


def halve_tile(tile: Sequence[int], multiple: int) -> Triple:
    """Half of each tile edge, rounded down to ``multiple`` and not below :data:`MIN_TILE`."""
    floor_edge = max(multiple, round_up(MIN_TILE, multiple))
    return tuple(max(floor_edge, round_down(int(t) // 2, multiple)) for t in tile)  # type: ignore[return-value]
