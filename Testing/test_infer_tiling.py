"""Tile arithmetic: covering, alignment, balanced sizes, overlap plans, clipping and weights."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from asymseg.infer.tiling import (
    as_triple, clip_to, gaussian_weights, mask_box, plan_exact_tiles, plan_overlap_tiles, round_down, round_up,
)


def covered(plan, shape):
    """Number of tiles covering each voxel of ``shape`` (clipped to the image)."""
    count = np.zeros(shape, dtype=int)
    for tile in plan:
        clipped = clip_to(tile.out_start, tile.out_stop, shape)
        if clipped is not None:
            count[clipped[0]] += 1
    return count


@pytest.mark.parametrize("start,stop,tile,multiple", [
    ((5, 6, 4), (35, 40, 33), 15, 3),
    ((0, 0, 0), (48, 48, 48), 9, 3),
    ((7, 13, 2), (8, 14, 3), 30, 3),          # a one-voxel box
    ((11, 3, 20), (101, 97, 64), (30, 45, 15), 15),
    ((1, 2, 3), (40, 41, 42), 100, 1),
])
def test_exact_tiles_cover_the_box_once_on_the_multiple_grid(start, stop, tile, multiple):
    plan = plan_exact_tiles(start, stop, tile=tile, multiple=multiple, context=24)
    shape = tuple(s + 10 for s in stop)
    count = covered(plan, shape)
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    assert (count[box] == 1).all()
    assert count.max() == 1  # no overlap anywhere
    cap = as_triple(tile)
    for t in plan:
        assert all(s % multiple == 0 for s in t.out_start)
        assert all(n % multiple == 0 for n in t.out_shape)
        assert t.out_shape == plan.tile_shape
        assert all(n <= max(round_down(c, multiple), multiple) for n, c in zip(t.out_shape, cap))
        assert t.in_start == tuple(s - 24 for s in t.out_start)
        assert t.in_stop == tuple(s + 24 for s in t.out_stop)
    assert plan.input_shape == tuple(n + 48 for n in plan.tile_shape)


def test_exact_tiles_are_balanced_and_waste_little():
    # 141 voxels with tiles of at most 96: two tiles of 72 (not 96 + 45).
    plan = plan_exact_tiles((0, 0, 0), (141, 96, 10), tile=96, multiple=3, context=0)
    assert plan.tile_shape == (72, 96, 12)
    assert [len(s) for s in plan.starts] == [2, 1, 1]
    assert plan.starts[0] == (0, 72)
    assert plan.region_stop[0] - plan.region_start[0] - 141 < 2 * 3


def test_exact_region_starts_on_the_image_grid_not_the_box():
    plan = plan_exact_tiles((10, 11, 12), (20, 20, 20), tile=30, multiple=5, context=3)
    assert plan.region_start == (10, 10, 10)
    assert all(n % 5 == 0 for n in plan.tile_shape)


def test_tile_below_the_multiple_is_raised_to_it():
    plan = plan_exact_tiles((0, 0, 0), (9, 9, 9), tile=1, multiple=3, context=0)
    assert plan.tile_shape == (3, 3, 3)
    assert len(plan) == 27


@pytest.mark.parametrize("length,tile,multiple", [(30, 64, 8), (100, 64, 8), (130, 48, 16), (17, 16, 16)])
def test_overlap_tiles_cover_the_box_and_overlap_neighbours(length, tile, multiple):
    plan = plan_overlap_tiles((3, 0, 5), (3 + length, 20, 5 + length), tile=tile, multiple=multiple, context=0)
    shape = (length + 40, 60, length + 40)
    count = covered(plan, shape)
    assert (count[3:3 + length, 0:20, 5:5 + length] >= 1).all()
    assert all(n % multiple == 0 for n in plan.tile_shape)
    assert plan.blended
    for axis in (0, 2):
        starts = plan.starts[axis]
        size = plan.tile_shape[axis]
        if len(starts) == 1:
            assert size == round_up(length, multiple)
        else:
            assert size <= tile
            gaps = np.diff(starts)
            assert (gaps <= size * 0.5 + 1).all()  # at least half a tile shared
            assert starts[-1] + size == (3, 0, 5)[axis] + length


def test_overlap_plan_takes_the_whole_box_when_it_fits():
    plan = plan_overlap_tiles((10, 10, 10), (50, 60, 70), tile=128, multiple=16, context=0)
    assert len(plan) == 1
    assert plan.tile_shape == (48, 64, 64)  # 40, 50, 60 rounded up to 16


def test_plans_refuse_empty_boxes_and_bad_arguments():
    with pytest.raises(ValueError, match="empty box"):
        plan_exact_tiles((5, 5, 5), (5, 6, 6), tile=9, multiple=3, context=0)
    with pytest.raises(ValueError, match="output multiple"):
        plan_exact_tiles((0, 0, 0), (5, 5, 5), tile=9, multiple=0, context=0)
    with pytest.raises(ValueError, match="overlap"):
        plan_overlap_tiles((0, 0, 0), (5, 5, 5), tile=9, multiple=1, context=0, overlap=1.0)
    with pytest.raises(ValueError, match="tile must be"):
        as_triple((4, 4))


def test_mask_box_bounds_the_true_voxels():
    mask = np.zeros((10, 12, 14), dtype=bool)
    mask[2, 3, 4] = mask[7, 9, 5] = True
    assert mask_box(mask) == ((2, 3, 4), (8, 10, 6))
    assert mask_box(np.zeros((3, 3, 3), dtype=bool)) is None


def test_clip_to_returns_matching_image_and_local_slices():
    image_sl, local_sl = clip_to((-2, 3, 8), (4, 6, 12), (10, 10, 10))
    assert image_sl == (slice(0, 4), slice(3, 6), slice(8, 10))
    assert local_sl == (slice(2, 6), slice(0, 3), slice(0, 2))
    assert clip_to((10, 0, 0), (12, 2, 2), (10, 10, 10)) is None


def test_gaussian_weights_peak_in_the_centre_and_stay_positive():
    w = gaussian_weights((8, 9, 10))
    assert w.dtype == np.float32 and w.shape == (8, 9, 10)
    assert w.max() == pytest.approx(1.0, abs=1e-3) and w.min() > 0
    centre = np.unravel_index(np.argmax(w), w.shape)
    assert centre == (3, 4, 4) or all(abs(c - (n - 1) / 2) <= 0.5 for c, n in zip(centre, w.shape))
    # Symmetric along every axis.
    for axis in range(3):
        assert np.allclose(w, np.flip(w, axis=axis))


def test_every_tile_input_is_its_output_plus_context():
    plan = plan_exact_tiles((0, 0, 0), (20, 21, 22), tile=9, multiple=3, context=5)
    for tile, (d, h, w) in zip(plan, itertools.product(*plan.starts)):
        assert tile.out_start == (d, h, w)
        assert tile.in_shape == tuple(n + 10 for n in tile.out_shape)


def test_the_mask_index_counts_mask_voxels_per_tile_like_a_direct_count():
    from asymseg.infer.tiling import MaskIndex, clip_to, plan_exact_tiles, plan_overlap_tiles

    rng = np.random.default_rng(3)
    mask = rng.random((30, 33, 35)) < 0.002
    index = MaskIndex(mask)
    plans = [plan_exact_tiles((2, 0, 5), (30, 31, 35), tile=t, multiple=3, context=4) for t in (5, 7, 12)]
    plans.append(plan_overlap_tiles((0, 0, 0), (30, 33, 35), tile=16, multiple=8, context=0))
    for plan in plans:
        direct = []
        for tile in plan:
            clipped = clip_to(tile.out_start, tile.out_stop, mask.shape)
            direct.append(0 if clipped is None else int(mask[clipped[0]].sum()))
        assert index.voxels_per_tile(plan).ravel().tolist() == direct
        assert index.tiles_touching(plan) == sum(v > 0 for v in direct)
    assert index.tiles_touching(plans[0]) < len(plans[0])  # small tiles: some hold no mask voxel
