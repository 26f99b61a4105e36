"""The phantom generator: determinism, geometry, labels, brain mask, case-specific tumours."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from asymseg.errors import InputError
from asymseg.io import derive_brain_mask
from asymseg.phantom import TUMOUR_CORE_FRACTION, make_phantom

CORE = (1, 4)
ALL_CHANNELS = ("flair", "t1c", "t1", "t2")


def core_of(case) -> np.ndarray:
    return np.isin(case.label, CORE)


@pytest.fixture(scope="module")
def many_cases():
    """30 cases at 32^3 and 48^3 (alternating), 2 channels."""
    return [make_phantom(seed, size=(32, 32, 32) if seed % 2 else (48, 48, 48)) for seed in range(30)]


def test_same_seed_gives_identical_arrays():
    a = make_phantom(7, size=(32, 32, 24), channels=ALL_CHANNELS)
    b = make_phantom(7, size=(32, 32, 24), channels=ALL_CHANNELS)
    for name in ALL_CHANNELS:
        np.testing.assert_array_equal(a.images[name], b.images[name])
    np.testing.assert_array_equal(a.label, b.label)
    assert a.params == b.params


def test_different_seeds_give_different_images_and_tumours():
    a, b = make_phantom(1, size=(32, 32, 32)), make_phantom(2, size=(32, 32, 32))
    assert not np.array_equal(a.images["flair"], b.images["flair"])
    assert not np.array_equal(a.label, b.label)
    assert a.params["tumour"]["centre_voxel_zyx"] != b.params["tumour"]["centre_voxel_zyx"]


def test_arrays_are_zyx_float32_and_label_uint8_for_an_anisotropic_size():
    case = make_phantom(0, size=(40, 36, 24), spacing=(1.0, 1.0, 2.5), case_id="c1")
    assert case.case_id == "c1"
    assert set(case.images) == {"flair", "t1c"}
    for image in case.images.values():
        assert image.shape == (24, 36, 40) and image.dtype == np.float32
        assert np.isfinite(image).all()
    assert case.label.shape == (24, 36, 40) and case.label.dtype == np.uint8
    assert case.spacing == (1.0, 1.0, 2.5)
    assert case.params["size_xyz"] == [40, 36, 24]


def test_labels_are_brats2017_values_with_every_compartment_across_cases(many_cases):
    seen: set[int] = set()
    for case in many_cases:
        values = set(np.unique(case.label).tolist())
        assert values <= {0, 1, 2, 4}
        assert {2, 4} <= values, f"seed {case.params['seed']}: missing oedema or enhancing core"
        seen |= values
    assert seen == {0, 1, 2, 4}


def test_core_fraction_stays_within_half_to_ten_percent_and_spans_the_range(many_cases):
    low, high = TUMOUR_CORE_FRACTION
    fractions = np.array([core_of(c).sum() / c.mask.sum() for c in many_cases])
    assert ((fractions >= low) & (fractions <= high)).all(), fractions
    assert fractions.min() < 0.01, "no small tumour (< 1% of the brain) in 30 cases"
    assert fractions.max() > 0.05, "no large tumour (> 5% of the brain) in 30 cases"
    recorded = np.array([c.params["core_fraction"] for c in many_cases])
    np.testing.assert_allclose(recorded, fractions)


def test_background_is_exactly_zero_outside_the_head_and_positive_inside(many_cases):
    for case in many_cases[:10]:
        assert 0.1 < case.mask.mean() < 0.4
        for name, image in case.images.items():
            assert (image[~case.mask] == 0).all(), name
            assert (image[case.mask] > 0).all(), name


def test_derived_brain_mask_equals_the_head_mask(many_cases):
    for case in many_cases[:10]:
        stacked = np.stack([case.images[n] for n in ("flair", "t1c")])
        np.testing.assert_array_equal(derive_brain_mask(stacked), case.mask)


def test_tumour_lies_inside_the_brain_and_its_core_is_mostly_one_piece(many_cases):
    for case in many_cases:
        assert not (case.label[~case.mask] > 0).any()
        core = core_of(case).astype(np.uint8)
        components = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(core)))
        sizes = np.bincount(components.ravel())[1:]
        assert sizes.max() >= 0.8 * core.sum(), f"seed {case.params['seed']}: core split into {sizes}"


def test_oedema_touches_the_core(many_cases):
    for case in many_cases:
        core = sitk.GetImageFromArray(core_of(case).astype(np.uint8))
        ring = sitk.GetArrayFromImage(sitk.BinaryDilate(core, [2, 2, 2])).astype(bool) & ~core_of(case)
        assert (case.label[ring] == 2).any(), f"seed {case.params['seed']}: no oedema next to the core"


def _relative(case, name: str, where: np.ndarray) -> float:
    image = case.images[name]
    healthy = case.mask & (case.label == 0)
    return float(image[where].mean() / np.median(image[healthy]))


def test_tumour_contrast_varies_across_cases_while_the_healthy_brain_is_stable(many_cases):
    core_t1c = np.array([_relative(c, "t1c", core_of(c)) for c in many_cases])
    oedema_flair = np.array([_relative(c, "flair", c.label == 2) for c in many_cases])
    healthy_spread = []
    for case in many_cases:
        values = case.images["t1c"][case.mask & (case.label == 0)]
        median = np.median(values)
        healthy_spread.append([np.percentile(values, 10) / median, np.percentile(values, 90) / median])
    healthy_spread = np.array(healthy_spread)
    # The tumour's appearance is case-specific: wide spread of its intensity relative to the brain ...
    assert core_t1c.max() - core_t1c.min() > 0.6, core_t1c
    assert core_t1c.std() > 0.15, core_t1c
    assert oedema_flair.std() > 0.08, oedema_flair
    # ... while the healthy brain's intensity distribution is nearly the same in every case.
    assert healthy_spread.std(axis=0).max() < 0.08, healthy_spread.std(axis=0)
    assert core_t1c.std() > 3 * healthy_spread.std(axis=0).max()


def test_the_healthy_brain_is_heterogeneous():
    case = make_phantom(4, size=(48, 48, 48))
    values = case.images["flair"][case.mask & (case.label == 0)]
    median = np.median(values)
    assert np.percentile(values, 90) / median > 1.1  # grey matter above white matter
    assert np.percentile(values, 5) / median < 0.7    # CSF far below


def test_without_tumour_the_label_is_empty_and_the_brain_is_unchanged_away_from_the_tumour():
    with_tumour = make_phantom(3, size=(48, 48, 48))
    without = make_phantom(3, size=(48, 48, 48), tumour=False)
    assert not without.label.any()
    assert without.params["tumour"] is None and without.params["core_fraction"] == 0.0
    np.testing.assert_array_equal(with_tumour.mask, without.mask)
    far = np.ones(with_tumour.label.shape, dtype=bool)
    (z0, z1), (y0, y1), (x0, x1) = with_tumour.params["tumour"]["box_voxel_zyx"]
    margin = 2  # partial-volume blur
    far[max(z0 - margin, 0):z1 + margin, max(y0 - margin, 0):y1 + margin, max(x0 - margin, 0):x1 + margin] = False
    assert far.sum() > 0.3 * far.size
    for name in ("flair", "t1c"):
        np.testing.assert_array_equal(with_tumour.images[name][far], without.images[name][far])


def test_a_channel_is_the_same_whether_two_or_four_are_generated():
    two = make_phantom(5, size=(32, 32, 32))
    four = make_phantom(5, size=(32, 32, 32), channels=ALL_CHANNELS)
    assert set(four.images) == set(ALL_CHANNELS)
    for name in ("flair", "t1c"):
        np.testing.assert_array_equal(two.images[name], four.images[name])
    np.testing.assert_array_equal(two.label, four.label)


def test_four_channels_have_their_own_tissue_contrasts():
    case = make_phantom(6, size=(48, 48, 48), channels=ALL_CHANNELS)
    healthy = case.mask & (case.label == 0)
    t1, t2 = case.images["t1"][healthy], case.images["t2"][healthy]
    # CSF is dark on T1 and bright on T2: the two are anti-correlated in healthy tissue.
    assert np.corrcoef(t1, t2)[0, 1] < -0.5
    contrasts = case.params["contrasts"]
    assert set(contrasts) == set(ALL_CHANNELS)
    assert len({contrasts[n]["enhancing"] for n in ALL_CHANNELS}) == 4


def test_enhancing_core_is_brighter_than_necrosis_on_t1c(many_cases):
    for case in many_cases:
        if (case.label == 1).sum() >= 20 and (case.label == 4).sum() >= 20:
            t1c = case.images["t1c"]
            assert t1c[case.label == 4].mean() > t1c[case.label == 1].mean()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"size": (8, 48, 48)}, r"each axis must be an integer in 16\.\.1024"),
    ({"size": (48, 48)}, r"must have 3 values"),
    ({"size": (48.5, 48, 48)}, r"each axis must be an integer"),
    ({"spacing": (1.0, 0.0, 1.0)}, r"spacing \[1\.0, 0\.0, 1\.0\]: expected 3 positive finite"),
    ({"channels": ("flair", "dwi")}, r"channels \['dwi'\] unknown"),
    ({"channels": ("flair", "flair")}, r"contain a duplicate"),
    ({"channels": ()}, r"none given"),
])
def test_bad_options_raise_one_line_input_errors(kwargs, match):
    with pytest.raises(InputError, match=match) as info:
        make_phantom(0, **kwargs)
    assert "\n" not in str(info.value)


def test_a_negative_seed_is_refused():
    with pytest.raises(InputError, match=r"seed must be a non-negative integer, got -1"):
        make_phantom(-1)


@pytest.mark.slow
def test_a_brats_sized_case_has_brats_shape_and_a_valid_tumour():
    case = make_phantom(11, size=(240, 240, 155), channels=("flair", "t1c"))
    assert case.images["flair"].shape == (155, 240, 240)
    assert case.label.shape == (155, 240, 240)
    fraction = core_of(case).sum() / case.mask.sum()
    assert TUMOUR_CORE_FRACTION[0] <= fraction <= TUMOUR_CORE_FRACTION[1]
    # A BraTS-like brain volume: 1.0-2.0 litres at 1 mm spacing.
    assert 1.0e6 < case.mask.sum() < 2.0e6


# -- vessels ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def with_and_without_vessels():
    size = (96, 96, 80)  # 2 mm voxels: a brain of about 150 x 140 x 115 mm
    kwargs = dict(size=size, spacing=(2.0, 2.0, 2.0), channels=ALL_CHANNELS)
    return make_phantom(11, **kwargs), make_phantom(11, vessels=True, **kwargs)


def test_vessels_change_only_the_images_near_them_never_the_label(with_and_without_vessels):
    from asymseg.phantom.anatomy import make_anatomy
    from asymseg.phantom.vessels import make_vessels

    plain, vessels = with_and_without_vessels
    np.testing.assert_array_equal(plain.label, vessels.label)
    np.testing.assert_array_equal(plain.mask, vessels.mask)
    assert "vessels" not in plain.params and vessels.params["vessels"]["cortical_veins"] >= 6
    assert set(vessels.params["contrasts"]["t1c"]) >= {"vessels", "enhancing", "bias_amplitude"}
    # The same vessels drawn on their own: the images differ only within the blur of them.
    streams = np.random.SeedSequence(11).spawn(8)
    anatomy = make_anatomy(np.random.default_rng(streams[0]), plain.mask.shape, (2.0, 2.0, 2.0))
    rng = np.random.default_rng(streams[-1])
    rng.uniform(size=len(ALL_CHANNELS))  # the per-channel contrasts come first
    weight = make_vessels(rng, anatomy, (2.0, 2.0, 2.0)).weight
    near = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray((weight > 0).astype(np.uint8)),
                                                    [2, 2, 2], sitk.sitkBox)) > 0  # the partial-volume kernel
    for name in ALL_CHANNELS:
        changed = plain.images[name] != vessels.images[name]
        assert changed.any() and not (changed & ~near).any(), name
    assert 0.002 < (weight > 0.5).sum() / plain.mask.sum() < 0.03


def test_vessels_enhance_like_a_tumour_rim_on_t1c_and_are_dark_on_flair_along_the_brain_edge(
        with_and_without_vessels):
    plain, vessels = with_and_without_vessels
    healthy = plain.mask & (plain.label == 0)
    added = healthy & (vessels.images["t1c"] > 1.25 * plain.images["t1c"])
    assert added.sum() > 200
    # Their brightest tenth (the rest is their partial-volume fringe) is as bright as the tumour's
    # enhancing rim, far above the healthy brain.
    brightest = np.percentile(vessels.images["t1c"][added], 90)
    assert brightest > 1.5 * np.median(plain.images["t1c"][healthy])
    assert brightest > 0.9 * np.median(plain.images["t1c"][plain.label == 4])
    flair_white = np.median(plain.images["flair"][healthy])
    assert np.median(vessels.images["flair"][added]) < flair_white
    # The sinuses straddle the brain's edge: most enhancing vessel voxels lie within 8 mm of it.
    depth = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        sitk.GetImageFromArray(plain.mask.astype(np.uint8)), insideIsPositive=True, squaredDistance=False,
        useImageSpacing=False)) * 2.0
    assert np.mean(depth[added] < 8.0) > 0.6
    # ... and a vessel is drawn on both sides of the midline (transverse sinuses, plexus).
    x = np.nonzero(added)[2]
    assert (x < 40).sum() > 20 and (x > 56).sum() > 20
