"""Training data: cropping, the patch sampler (foreground fraction, centring, padding, augmentation)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from asymseg.errors import InputError
from asymseg.target import TargetSpec
from asymseg.train.data import PatchSampler, SamplerSettings, brain_box, hold_out, prepare_case

TARGET = TargetSpec.tumour_core("brats2017")  # core = labels {1, 4}


def synthetic_case(case_id="c", shape=(20, 22, 24), seed=0, tumour=True):
    """A brain box in the middle, a small core (labels 1 and 4) and oedema (2) inside it."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    mask[3:17, 4:18, 5:19] = True
    label = np.zeros(shape, np.int16)
    if tumour:
        label[8:11, 9:12, 10:13] = 2
        label[9, 10, 11] = 1
        label[9, 10, 12] = 4
    image = np.zeros((2, *shape), np.float32)
    image[:, mask] = rng.normal(size=(2, int(mask.sum()))).astype(np.float32)
    return prepare_case(case_id, image, label, mask, TARGET, margin=0), image, label, mask


def test_prepare_case_crops_to_the_brain_and_indexes_voxels():
    case, image, label, mask = synthetic_case()
    assert case.offset == (3, 4, 5) and case.shape == (14, 14, 14)
    np.testing.assert_array_equal(case.image, image[:, 3:17, 4:18, 5:19])
    rare = np.zeros(case.shape, bool)
    rare.flat[case.rare_voxels] = True
    np.testing.assert_array_equal(rare, np.isin(label[3:17, 4:18, 5:19], [1, 4]))
    assert case.classes.dtype == np.uint8 and case.classes.max() == 1
    other = np.zeros(case.shape, bool)
    other.flat[case.other_voxels] = True
    np.testing.assert_array_equal(other, mask[3:17, 4:18, 5:19] & ~rare)


def test_brain_box_grows_by_the_margin_and_clips():
    mask = np.zeros((10, 10, 10), bool)
    mask[2:4, 5:6, 8:10] = True
    assert brain_box(mask, 3) == (slice(0, 7), slice(2, 9), slice(5, 10))


def sampler(cases, out=(3, 3, 3), inp=(7, 7, 7), **kw):
    return PatchSampler(cases, SamplerSettings(input_size=inp, output_size=out, **kw))


def test_exact_foreground_count_and_centres_on_the_right_voxels():
    cases = [synthetic_case(seed=s)[0] for s in range(2)]
    s = sampler(cases, fg_fraction=0.5)
    draw = s.draw(10, np.random.default_rng(1))
    assert draw.foreground.sum() == 5
    for b in range(10):
        tc = cases[draw.case[b]]
        flat = np.ravel_multi_index(tuple(draw.centre[b]), tc.shape)
        pool = tc.rare_voxels if draw.foreground[b] else tc.other_voxels
        assert flat in set(pool.tolist())
    assert sampler(cases, fg_fraction=0.8).foreground_count(10) == 8


def test_draws_are_repeatable_and_slices_rebuild_the_global_batch():
    cases = [synthetic_case(seed=s)[0] for s in range(3)]
    s = sampler(cases, augment=True)
    a = s.draw(8, np.random.default_rng(7))
    b = s.draw(8, np.random.default_rng(7))
    for name in a.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    x, y = s.extract(a)
    parts = [s.extract(a.subset(slice(r * 4, (r + 1) * 4))) for r in range(2)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)


def test_patches_are_centred_and_zero_padded_at_the_border():
    shape = (6, 6, 6)
    mask = np.ones(shape, bool)
    label = np.zeros(shape, np.int16)
    label[0, 0, 0] = 1
    image = np.arange(2 * 216, dtype=np.float32).reshape(2, *shape) + 1.0
    case = prepare_case("c", image, label, mask, TARGET, margin=0)
    s = sampler([case], fg_fraction=1.0)
    draw = s.draw(1, np.random.default_rng(0))
    assert tuple(draw.centre[0]) == (0, 0, 0)
    x, y = s.extract(draw)
    assert x.shape == (1, 2, 7, 7, 7) and y.shape == (1, 3, 3, 3)
    assert x[0, 0, 3, 3, 3] == image[0, 0, 0, 0]
    np.testing.assert_array_equal(x[0, :, 3:, 3:, 3:], image[:, :4, :4, :4])
    assert not x[0, :, :3].any() and not x[0, :, :, :3].any()  # outside the volume: zeros
    assert y[0, 1, 1, 1] == 1 and y.sum() == 1


def test_flips_keep_input_and_label_aligned():
    case, *_ = synthetic_case()
    # Make channel 0 equal to the class map so the alignment is visible after any flip.
    case.image[0] = case.classes.astype(np.float32)
    case.mask[:] = False  # no intensity jitter (it acts inside the brain only)
    s = sampler([case], out=(5, 5, 5), inp=(9, 9, 9), fg_fraction=1.0, augment=True)
    draw = s.draw(16, np.random.default_rng(3))
    assert draw.augmented.all() and draw.flips.any()
    x, y = s.extract(draw)
    np.testing.assert_array_equal(x[:, 0, 2:-2, 2:-2, 2:-2], y.astype(np.float32))


def test_asymmetric_augmentation_always_augments_rare_centred_patches():
    cases = [synthetic_case(seed=s)[0] for s in range(2)]
    s = sampler(cases, augment=True, background_augment_p=0.25)
    draw = s.draw(4000, np.random.default_rng(0))
    assert draw.augmented[draw.foreground].all()
    share = draw.augmented[~draw.foreground].mean()
    assert 0.2 < share < 0.3
    none = sampler(cases, augment=False).draw(100, np.random.default_rng(0))
    assert not none.augmented.any()


def test_intensity_jitter_acts_inside_the_brain_only():
    case, *_ = synthetic_case()
    s = sampler([case], out=(3, 3, 3), inp=(15, 15, 15), fg_fraction=0.0, augment=True)
    draw = s.draw(6, np.random.default_rng(5))
    plain = sampler([case], out=(3, 3, 3), inp=(15, 15, 15), fg_fraction=0.0)
    x_aug, _ = s.extract(draw)
    x_plain, _ = plain.extract(dataclasses.replace(draw, augmented=np.zeros_like(draw.augmented)))
    for b in range(6):
        flipped = np.flip(x_plain[b], axis=tuple(a + 1 for a in range(3) if draw.flips[b, a]))
        outside = flipped == 0
        assert (x_aug[b][outside] == 0).all()
        inside = ~outside
        expected = flipped * draw.scale[b][:, None, None, None] + draw.shift[b][:, None, None, None]
        np.testing.assert_allclose(x_aug[b][inside], expected[inside], rtol=1e-6, atol=1e-6)


def test_no_rare_voxel_in_any_case_is_an_input_error():
    cases = [synthetic_case(case_id=f"p{i}", tumour=False)[0] for i in range(2)]
    with pytest.raises(InputError, match=r"no rare-class \(tumour\) voxels in any training case \(p0, p1\)"):
        sampler(cases)
    sampler(cases, fg_fraction=0.0)  # background-only sampling is allowed


def test_hold_out_keeps_a_training_case_and_is_seeded():
    train, val = hold_out(["a", "b", "c", "d", "e"], 0.4, seed=3)
    assert len(val) == 2 and sorted(train + val) == list(range(5))
    assert hold_out(["a", "b", "c", "d", "e"], 0.4, seed=3) == (train, val)
    assert hold_out(["a", "b"], 0.9, seed=0)[1].__len__() == 1
    assert hold_out(["a", "b"], 0.0, seed=0) == ([0, 1], [])
    with pytest.raises(InputError, match="at least 2 training cases"):
        hold_out(["a"], 0.5, seed=0)


def test_settings_refuse_an_uneven_context():
    with pytest.raises(ValueError, match="even number"):
        SamplerSettings(input_size=(8, 8, 8), output_size=(3, 3, 3))
