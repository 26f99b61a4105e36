"""The working grid: resampling by physical geometry, the way back, bit-identical cases that need none,
and the plausibility checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from asymseg.errors import InputError
from asymseg.io import Geometry, discover_case, load_case
from asymseg.io.resample import (
    axis_mapping,
    check_orientation,
    labels_to_grid,
    overlap_fraction,
    reoriented,
    resample_array,
    working_grid,
)

ROTATED = (0.9659258262890683, -0.25881904510252074, 0.0, 0.25881904510252074, 0.9659258262890683, 0.0,
           0.0, 0.0, 1.0)  # 15 degrees about z


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    """A ball in (D, H, W) voxels; centre and radius in mm, spacing (x, y, z)."""
    grids = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, reversed(spacing))), indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius ** 2


def test_working_grid_is_the_reference_itself_at_its_own_spacing():
    ref = Geometry((20, 30, 40), (1.0, 1.0, 1.0), (3.0, -2.0, 5.0), ROTATED)
    assert working_grid(ref, None) is ref
    assert working_grid(ref, (1.0, 1.0, 1.00001)) is ref


def test_working_grid_keeps_direction_and_centre_and_rounds_the_size():
    ref = Geometry((200, 220, 26), (0.9, 0.9, 5.5), (10.0, -20.0, 30.0), ROTATED)
    grid = working_grid(ref, (1.0, 1.0, 1.0))
    assert grid.size == (180, 198, 143) and grid.spacing == (1.0, 1.0, 1.0) and grid.direction == ROTATED

    def centre(g):
        d = np.asarray(g.direction).reshape(3, 3)
        return np.asarray(g.origin) + d @ (np.asarray(g.spacing) * (np.asarray(g.size) - 1) / 2)

    np.testing.assert_allclose(centre(grid), centre(ref), atol=1e-9)


def test_reorienting_permutes_and_flips_axes_without_moving_a_voxel():
    ras = Geometry((30, 20, 10), (0.5, 2.0, 3.0), (10.0, 20.0, -5.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    lps = reoriented(ras, "LPS")
    assert lps.direction == (1, 0, 0, 0, 1, 0, 0, 0, 1) and lps.size == (30, 20, 10)
    assert lps.origin == (10.0 - 29 * 0.5, 20.0 - 19 * 2.0, -5.0)
    sagittal = Geometry((10, 20, 30), (3.0, 2.0, 0.5), (0.0, 0.0, 0.0), (0, 0, 1, 1, 0, 0, 0, 1, 0))
    turned = reoriented(sagittal, "LPS")
    assert turned.direction == (1, 0, 0, 0, 1, 0, 0, 0, 1) and turned.size == (30, 10, 20)
    assert turned.spacing == (0.5, 3.0, 2.0)
    assert working_grid(lps, None, "LPS") is lps
    rng = np.random.default_rng(0)
    array = rng.normal(size=sagittal.shape_zyx).astype(np.float32)
    moved = resample_array(array, sagittal, turned)
    assert axis_mapping(sagittal, turned) is not None
    assert np.array_equal(resample_array(moved, turned, sagittal), array)  # exact both ways
    image = sagittal.apply_to(sitk.GetImageFromArray(array))
    back = turned.apply_to(sitk.GetImageFromArray(moved))
    for index in ((0, 0, 0), (3, 7, 21), (9, 19, 29)):
        point = image.TransformIndexToPhysicalPoint(index)
        assert back[back.TransformPhysicalPointToIndex(point)] == image[index]


@pytest.mark.parametrize("code", ["LP", "LPX", "LLS", "lps "])
def test_bad_orientation_codes_are_refused(code):
    with pytest.raises(ValueError, match="expected 3 letters, one of each pair L/R, P/A, S/I"):
        check_orientation(code)


def test_overlap_fraction_known_answers():
    a = Geometry((10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert overlap_fraction(a, a) == pytest.approx(1.0)
    assert overlap_fraction(a, Geometry((10, 10, 10), (1.0, 1.0, 1.0), (5.0, 0.0, 0.0))) == pytest.approx(0.5)
    assert overlap_fraction(a, Geometry((10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 30.0))) == 0.0
    # a small volume inside a large one overlaps completely (fraction of the smaller box)
    assert overlap_fraction(a, Geometry((2, 2, 2), (1.0, 1.0, 1.0), (4.0, 4.0, 4.0))) == pytest.approx(1.0)


def test_flipped_axes_resample_exactly():
    rng = np.random.default_rng(0)
    array = rng.normal(size=(6, 7, 8)).astype(np.float32)
    source = Geometry((8, 7, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    flipped = Geometry((8, 7, 6), (1.0, 1.0, 1.0), (7.0, 6.0, 0.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    out = resample_array(array[:, ::-1, ::-1].copy(), flipped, source)
    np.testing.assert_allclose(out, array, atol=1e-5)
    labels = (array > 0).astype(np.uint8)
    assert np.array_equal(labels_to_grid(labels[:, ::-1, ::-1], flipped, source, 2), labels)
    assert np.array_equal(resample_array(labels[:, ::-1, ::-1], flipped, source, kind="nearest"), labels)


def test_labels_survive_a_round_trip_through_a_coarse_tilted_grid():
    shape = (40, 48, 48)
    labels = _ball(shape, (20, 24, 24), 12).astype(np.uint8)
    original = Geometry((48, 48, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    coarse = Geometry((54, 54, 9), (0.9, 0.9, 5.5), (-2.0, -1.0, -2.0), ROTATED)
    there = labels_to_grid(labels, original, coarse, 2)
    back = labels_to_grid(there, coarse, original, 2)
    assert dice(back.astype(bool), labels.astype(bool)) > 0.9


# -- load_case on the working grid ----------------------------------------------------------------------
def _write(path, array, geometry: Geometry):
    sitk.WriteImage(geometry.apply_to(sitk.GetImageFromArray(array)), str(path))
    return path


def _case(folder, geometry=None, *, t1c_geometry=None, seed=0, with_label=True):
    """flair + t1c (+ seg) of one physical 'head': brain ball radius 18 mm, lesion ball 6 mm."""
    folder.mkdir(parents=True, exist_ok=True)
    geometry = geometry or Geometry((48, 48, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    rng = np.random.default_rng(seed)
    for name, geo, mean in (("flair", geometry, 300.0), ("t1c", t1c_geometry or geometry, 120.0)):
        image = geo.apply_to(sitk.Image(list(geo.size), sitk.sitkFloat32))
        points = np.stack([np.asarray(image.TransformIndexToPhysicalPoint(tuple(int(v) for v in reversed(idx))))
                           for idx in np.ndindex(*geo.shape_zyx)]).reshape(*geo.shape_zyx, 3)
        radius = np.linalg.norm(points - np.array([24.0, 24.0, 20.0]), axis=-1)
        array = np.where(radius < 18, rng.normal(mean, 20.0, geo.shape_zyx), 0.0).astype(np.float32)
        array[radius < 6] += 2 * mean
        _write(folder / f"{name}.nii.gz", array, geo)
        if name == "flair" and with_label:
            _write(folder / "seg.nii.gz", (radius < 6).astype(np.uint8), geo)
    return folder


def test_a_case_at_the_model_spacing_loads_bit_identically(tmp_path):
    folder = _case(tmp_path / "c")
    plain = load_case(discover_case(folder))
    at_spacing = load_case(discover_case(folder), spacing=(1.0, 1.0, 1.0))
    assert not at_spacing.resampled and at_spacing.geometry == plain.geometry
    for name in ("image", "mask", "label"):
        assert np.array_equal(getattr(at_spacing, name), getattr(plain, name)), name
        assert getattr(at_spacing, name).dtype == getattr(plain, name).dtype


def test_an_anisotropic_case_goes_onto_the_model_spacing_in_its_own_space(tmp_path):
    aniso = Geometry((53, 53, 8), (0.9, 0.9, 5.5), (0.0, 0.0, 0.0))
    folder = _case(tmp_path / "c", aniso)
    case = load_case(discover_case(folder), spacing=(1.0, 1.0, 1.0))
    assert case.resampled and case.reference_geometry.differences(aniso) == []
    assert case.geometry.spacing == (1.0, 1.0, 1.0) and case.geometry.size == (48, 48, 44)
    ml = np.count_nonzero(case.mask) * case.geometry.voxel_volume_ml
    assert ml == pytest.approx(4 / 3 * np.pi * 18 ** 3 / 1000, rel=0.15)
    inside = case.image[:, case.mask]
    np.testing.assert_allclose(inside.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(inside.std(axis=1), 1.0, atol=1e-4)
    assert set(np.unique(case.label)) == {0, 1}
    assert [f.check for f in case.findings] == ["slice-thickness", "slice-thickness"]
    assert "flair.nii.gz: voxels are 5.5 mm thick, far above the 1 mm the model was trained at" in \
        case.findings[0].message


def test_t1c_on_its_own_tilted_grid_lands_on_the_flair_grid(tmp_path):
    tilted = Geometry((40, 40, 34), (1.2, 1.2, 1.2), (3.0, -6.0, 0.5), ROTATED)
    folder = _case(tmp_path / "c", t1c_geometry=tilted)
    case = load_case(discover_case(folder), spacing=(1.0, 1.0, 1.0))
    assert not case.resampled and case.image.shape == (2, 40, 48, 48)
    lesion = case.label > 0
    # the t1c lesion (bright) lands where the flair's label says it is
    assert case.image[1][lesion].mean() > case.image[1][case.mask & ~lesion].mean() + 2.0


def test_reference_channel_chooses_the_grid(tmp_path):
    tilted = Geometry((40, 40, 34), (1.2, 1.2, 1.2), (3.0, -6.0, 0.5), ROTATED)
    files = discover_case(_case(tmp_path / "c", t1c_geometry=tilted))
    files.reference_channel = "t1ce"
    case = load_case(files, channels=["flair", "t1c"])
    assert case.reference_geometry.differences(tilted) == [] and case.geometry == case.reference_geometry
    assert case.channels == ("flair", "t1c")


def test_one_brain_mask_rule_whatever_channels_are_loaded(tmp_path):
    """info (every channel) and segment (the model's channels) use the same mask."""
    folder = _case(tmp_path / "c")
    t2 = np.zeros((40, 48, 48), np.float32)
    t2[2:38, 2:46, 2:46] = 5.0  # a channel whose non-background box is larger than the flair's brain
    _write(folder / "t2.nii.gz", t2, Geometry((48, 48, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    files = discover_case(folder)
    every = load_case(files, normalize=False)
    model_channels = load_case(files, channels=["flair", "t1c"], normalize=False)
    assert every.channels == ("flair", "t1c", "t2") and model_channels.channels == ("flair", "t1c")
    assert np.array_equal(every.mask, model_channels.mask)
    assert every.brain_voxels == 36 * 44 * 44


# -- plausibility checks --------------------------------------------------------------------------------
def _head_with_skull(folder, *, ct=False):
    """A 140 x 140 x 120 mm volume with no constant border (skull and scalp still in): 2,352 ml."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    geo = Geometry((140, 140, 120), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    for name in ("flair", "t1c"):
        array = rng.uniform(10, 400, geo.shape_zyx).astype(np.float32)
        if ct:
            array[:, :20] = -1000.0  # air in Hounsfield units
        _write(folder / f"{name}.nii.gz", array, geo)
    return folder


def test_a_skull_left_in_is_reported_by_info_and_refused_with_strict(cli, tmp_path, capfd):
    folder = _head_with_skull(tmp_path / "head")
    result = cli("info", folder, "--json")
    logged = capfd.readouterr().err
    assert result.code == 0, result.err
    warnings = json.loads(result.out)["warnings"]
    assert [w["check"] for w in warnings] == ["brain-volume"]
    assert warnings[0]["message"] == (f"{folder}: the brain mask derived from the background is 2,352 ml, more than "
                                      "a brain (2,000 ml at most); the skull is probably still in: skull-strip it first "
                                      "(e.g. HD-BET, or Slicer's SwissSkullStripper extension) or pass the brain mask "
                                      "with --mask")
    assert f"WARNING asymseg.io.checks: {warnings[0]['message']}" in logged
    refused = cli("info", folder, "--strict")
    assert refused.code == 2 and refused.out == ""
    assert refused.err.strip().splitlines()[-1].endswith("(refused with --strict; run without it to go on anyway)")


def test_ct_intensities_are_reported(tmp_path):
    folder = _head_with_skull(tmp_path / "ct", ct=True)
    case = load_case(discover_case(folder), normalize=False)
    checks = [f.check for f in case.findings]
    assert checks.count("not-mr") == 2 and "brain-volume" in checks
    assert "looks like a CT scan, not MR" in case.findings[0].message
    with pytest.raises(InputError, match=r"flair\.nii\.gz: 14% of the voxels lie between -1100 and -500"):
        load_case(discover_case(folder), normalize=False, strict=True)


def test_a_plausible_case_has_no_findings(tmp_path):
    assert load_case(discover_case(_case(tmp_path / "c")), spacing=(1.0, 1.0, 1.0)).findings == []


def test_a_working_grid_beyond_the_voxel_limit_is_refused_naming_the_file(tmp_path, monkeypatch):
    folder = _case(tmp_path / "c", Geometry((48, 48, 40), (1.0, 1.0, 100.0), (0.0, 0.0, 0.0)), with_label=False)
    monkeypatch.setenv("ASYMSEG_MAX_VOXELS", str(48 * 48 * 1000))
    with pytest.raises(InputError, match=r"flair\.nii\.gz: at the model's spacing \(1\.0, 1\.0, 1\.0\) mm this image "
                                         r"would have 48 x 48 x 4000 = 9,216,000 voxels, above the limit of 2,304,000 "
                                         r"\(check its spacing \(1\.0, 1\.0, 100\.0\) mm; ASYMSEG_MAX_VOXELS allows more\)"):
        load_case(discover_case(folder), spacing=(1.0, 1.0, 1.0))
