"""Loading a case: grid checks, brain mask (file or derived), z-score normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from asymseg.errors import InputError
from asymseg.io import derive_brain_mask, discover_case, load_case, zscore
from asymseg.io.case import background_values

SHAPE = (10, 12, 14)  # (D, H, W)


def _write(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def _brain():
    """An ellipsoid 'brain' of (D, H, W) = SHAPE."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    return (z / 0.8) ** 2 + (y / 0.8) ** 2 + (x / 0.8) ** 2 < 1


def _case(folder, *, background=(0.0, 0.0), with_mask=False, with_label=True, seed=0):
    """flair + t1c (+ seg, + brainmask) on one 1 mm grid; values outside the brain = background."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    brain = _brain()
    for name, bg, mean in (("flair", background[0], 100.0), ("t1c", background[1], 50.0)):
        array = np.full(SHAPE, bg, np.float32)
        array[brain] = rng.normal(mean, 10.0, int(brain.sum()))
        _write(folder / f"{name}.nii.gz", array)
    if with_label:
        label = np.zeros(SHAPE, np.uint8)
        label[4:6, 5:7, 6:8] = 1
        label[3, 5:7, 6:8] = 4
        label[6, 5:7, 6:8] = 2
        _write(folder / "seg.nii.gz", label)
    if with_mask:
        _write(folder / "brainmask.nii.gz", brain.astype(np.uint8))
    return folder


def test_load_case_stacks_channels_in_the_requested_order(tmp_path):
    folder = _case(tmp_path / "c")
    files = discover_case(folder)
    case = load_case(files, channels=["t1ce", "flair"], normalize=False)
    assert case.channels == ("t1c", "flair") and case.image.shape == (2, *SHAPE) and case.image.dtype == np.float32
    assert case.image[0][_brain()].mean() == pytest.approx(50.0, abs=2.0)
    assert case.image[1][_brain()].mean() == pytest.approx(100.0, abs=2.0)
    assert case.label.dtype == np.int16 and case.label_values == (0, 1, 2, 4)
    assert case.geometry.shape_zyx == SHAPE and case.files is files and case.case_id == "c"
    all_found = load_case(files, normalize=False)
    assert all_found.channels == ("flair", "t1c")


def test_missing_requested_channel_names_the_folder_and_what_was_found(tmp_path):
    folder = _case(tmp_path / "CASE_FOLDER")
    with pytest.raises(InputError, match=r"CASE_FOLDER: no t2 channel \(found: flair, t1c\)"):
        load_case(discover_case(folder), channels=["flair", "t2"])


def test_require_label(tmp_path):
    folder = _case(tmp_path / "c", with_label=False)
    with pytest.raises(InputError, match=r"c: no label file"):
        load_case(discover_case(folder), require_label=True)
    assert load_case(discover_case(folder)).label is None


@pytest.mark.parametrize(
    "change",
    [{"shape": (10, 12, 15)}, {"spacing": (1.0, 1.0, 2.0)}, {"origin": (0.0, 2.0, 0.0)},
     {"direction": (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0), "origin": (13.0, 11.0, 0.0)}],
    ids=["size", "spacing", "origin", "direction"],
)
@pytest.mark.parametrize("which", ["t1c", "seg", "brainmask"])
def test_a_file_on_another_grid_is_resampled_onto_the_reference_grid(tmp_path, change, which):
    """Each file is placed by its own physical geometry; the case stays on the first channel's grid."""
    folder = _case(tmp_path / "c", with_mask=True)
    shape = change.get("shape", SHAPE)
    spacing = change.get("spacing", (1.0, 1.0, 1.0))
    # The same physical content on the other grid: a block at physical x 4..7, y 3..6, z 2..5 mm.
    other = sitk.Image([int(n) for n in reversed(shape)], sitk.sitkFloat32)
    other.SetSpacing(spacing)
    other.SetOrigin(change.get("origin", (0.0, 0.0, 0.0)))
    if "direction" in change:
        other.SetDirection(change["direction"])
    array = np.zeros(shape, np.float32)
    for index in np.ndindex(*shape):
        x, y, z = other.TransformIndexToPhysicalPoint(tuple(int(v) for v in reversed(index)))
        array[index] = float(4 <= x <= 7 and 3 <= y <= 6 and 2 <= z <= 5)
    _write(folder / f"{which}.nii.gz", array if which == "t1c" else array.astype(np.uint8),
           spacing=spacing, origin=change.get("origin", (0.0, 0.0, 0.0)), direction=change.get("direction"))
    case = load_case(discover_case(folder), normalize=False)
    expected = np.zeros(SHAPE, bool)
    expected[2:6, 3:7, 4:8] = True
    assert case.geometry.shape_zyx == SHAPE and not case.resampled
    got = {"t1c": case.image[1] > 0.5, "seg": case.label > 0, "brainmask": case.mask}[which]
    if "spacing" in change:  # 2 mm slices hold z 2 and 4 only; z 3 and 5 come from interpolation
        assert got[[2, 4]].tolist() == expected[[2, 4]].tolist()
    else:
        assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("which", ["t1c", "seg", "brainmask"])
def test_a_file_that_barely_overlaps_the_reference_is_refused_naming_both(tmp_path, which):
    folder = _case(tmp_path / "c", with_mask=True)
    _write(folder / f"{which}.nii.gz", np.ones(SHAPE, np.float32 if which == "t1c" else np.uint8),
           origin=(10.0, 0.0, 0.0))
    with pytest.raises(InputError, match=rf"{which}\.nii\.gz and .*flair\.nii\.gz overlap by only 29% in physical "
                                         r"space; they are probably not from the same visit: register them first"):
        load_case(discover_case(folder), normalize=False)


def test_differences_within_tolerance_are_accepted(tmp_path):
    folder = _case(tmp_path / "c")
    _write(folder / "t1c.nii.gz", np.ones(SHAPE, np.float32), spacing=(1.0, 1.0, 1.00001), origin=(0.0, 0.0, 1e-6))
    assert load_case(discover_case(folder), normalize=False).geometry.spacing == (1.0, 1.0, 1.0)


def test_mask_file_is_used_and_nonzero_means_brain(tmp_path):
    folder = _case(tmp_path / "c")
    mask = np.zeros(SHAPE, np.float32)
    mask[2:5, 3:9, 4:10] = 0.5
    _write(folder / "brainmask.nii.gz", mask)
    case = load_case(discover_case(folder), normalize=False)
    assert case.mask_source == "file" and case.mask.dtype == bool
    np.testing.assert_array_equal(case.mask, mask != 0)


def test_empty_mask_file_is_an_error(tmp_path):
    folder = _case(tmp_path / "c")
    _write(folder / "brainmask.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(InputError, match=r"brainmask\.nii\.gz: the brain mask is empty"):
        load_case(discover_case(folder))


def test_derived_mask_with_zero_background(tmp_path):
    case = load_case(discover_case(_case(tmp_path / "c")), normalize=False)
    assert case.mask_source == "derived"
    np.testing.assert_array_equal(case.mask, _brain())


def test_derived_mask_with_negative_constant_background(tmp_path):
    # Like ../shared/data: z-scored before the background was set, so it is a negative constant.
    case = load_case(discover_case(_case(tmp_path / "c", background=(-3.5526617, -1.25))), normalize=False)
    np.testing.assert_array_equal(case.mask, _brain())


def test_derived_mask_keeps_voxels_that_differ_in_any_channel_and_fills_holes():
    image = np.full((2, *SHAPE), -2.0, np.float32)
    brain = _brain()
    image[0][brain] = 1.0
    image[0][5, 6, 7] = -2.0  # an interior voxel equal to the background in every channel: a hole
    image[0][5, 6, 2] = -2.0
    image[1][5, 6, 2] = 3.0  # differs in channel 1 only
    mask = derive_brain_mask(image)
    np.testing.assert_array_equal(mask, brain)
    unfilled = derive_brain_mask(image, fill_holes=False)
    assert not unfilled[5, 6, 7] and unfilled[5, 6, 2]
    assert np.count_nonzero(unfilled != brain) == 1
    assert background_values(image) == (-2.0, -2.0)


def test_derived_mask_matches_the_brats2015_mask_files(brats2015):
    for folder in sorted(p for p in brats2015.iterdir() if p.is_dir()):
        files = discover_case(folder)
        given = load_case(files, normalize=False)
        files.mask = None
        derived = load_case(files, normalize=False)
        assert derived.mask_source == "derived"
        disagree = np.count_nonzero(derived.mask != given.mask)
        assert disagree <= 1e-4 * given.brain_voxels, disagree


def test_all_background_case_has_an_empty_derived_mask(tmp_path):
    folder = tmp_path / "blank"
    folder.mkdir()
    _write(folder / "flair.nii.gz", np.zeros(SHAPE, np.float32))
    with pytest.raises(InputError, match=r"blank: the derived brain mask is empty"):
        load_case(discover_case(folder))


def test_normalisation_is_zscore_inside_the_mask_and_zero_outside(tmp_path):
    case = load_case(discover_case(_case(tmp_path / "c", background=(-4.0, 7.0), with_mask=True)))
    brain = _brain()
    for c in range(2):
        inside = case.image[c][brain].astype(np.float64)
        assert inside.mean() == pytest.approx(0.0, abs=1e-5)
        assert inside.std() == pytest.approx(1.0, abs=1e-5)
        assert not case.image[c][~brain].any()


def test_zscore_known_answer():
    image = np.array([1.0, 2.0, 3.0, 100.0], np.float32).reshape(1, 1, 1, 4)
    mask = np.array([True, True, True, False]).reshape(1, 1, 4)
    out = zscore(image, mask)
    std = np.std([1.0, 2.0, 3.0])
    np.testing.assert_allclose(out.ravel(), [-1 / std, 0.0, 1 / std, 0.0], rtol=1e-6)
    assert out.dtype == np.float32


def test_zscore_rejects_constant_channels_and_empty_masks():
    image = np.ones((2, 2, 2, 2), np.float32)
    image[0, 0, 0, 0] = 5.0
    with pytest.raises(InputError, match=r"channel 1 is constant \(1\) inside the brain mask"):
        zscore(image, np.ones((2, 2, 2), bool))
    with pytest.raises(InputError, match="the brain mask is empty"):
        zscore(image, np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match=r"got \(2, 2, 2, 2\) and \(2, 2\)"):
        zscore(image, np.ones((2, 2), bool))


def test_constant_channel_in_a_case_names_the_file(tmp_path):
    folder = _case(tmp_path / "c", with_mask=True)
    _write(folder / "t1c.nii.gz", np.full(SHAPE, 3.0, np.float32))
    with pytest.raises(InputError, match=r"t1c\.nii\.gz: the t1c channel is constant \(3\) inside the brain mask"):
        load_case(discover_case(folder))
    assert load_case(discover_case(folder), normalize=False).image[1].max() == 3.0


def test_load_case_on_real_brats2015(brats2015):
    case = load_case(discover_case(brats2015 / "brats_2013_pat0005_1"))
    assert case.channels == ("flair", "t1c") and case.image.shape == (2, 155, 240, 240)
    assert case.mask_source == "file" and case.label_values == (0, 1, 2, 3, 4)
    assert np.count_nonzero(np.isin(case.label, (1, 3, 4))) == 45266
