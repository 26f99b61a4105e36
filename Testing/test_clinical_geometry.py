"""Real cases on clinical geometry: a BRATS 2015 case (cropped around its tumour) resampled to 0.9 x 0.9 x
5.5 mm with its T1c on its own tilted, shifted grid, segmented with the
starter model; the external BraTS 2023-named raw scan for discovery, normalisation and the one brain-mask
rule. Skipped when ../shared/data is absent. docs/DATA.md quotes the DSC figures
(``python Testing/helpers/clinical.py CASE...`` prints them for every variant)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import clinical

pytestmark = pytest.mark.data

#: DSC of the segmentation of the "clinical" variant (FLAIR, mask and label at 0.9 x 0.9 x 5.5 mm,
#: T1c on its own tilted and shifted 1.2 mm grid), brought back onto the original grid, against
#: the reference run on the original case: measured 0.932 on brats_2013_pat0006_1. The single
#: variants are measured by Testing/helpers/clinical.py (docs/DATA.md); flipped axes are exact
#: (Testing/test_cli_segment_geometry.py checks that with a tiny model).
MIN_DSC = 0.90


@pytest.fixture
def cropped(brats2015, tmp_path_factory):
    root = tmp_path_factory.mktemp("clinical")
    crop = clinical.crop_case(brats2015 / "brats_2013_pat0006_1", root / "crop")
    clinical.segment(crop, root / "reference.nii.gz")
    return crop, root / "reference.nii.gz"


@pytest.mark.slow
def test_a_thick_slice_case_with_a_separate_tilted_t1c_matches_the_reference_run(cropped, tmp_path):
    crop, reference_path = cropped
    variant = clinical.make_variant(crop, tmp_path / "clinical", "clinical")
    result = clinical.segment(variant, tmp_path / "seg.nii.gz")
    # The output lies on the variant's FLAIR grid, exactly.
    flair = sitk.ReadImage(str(next(variant.glob("Flair*"))))
    out = sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
    assert out.GetSize() == flair.GetSize() and out.GetSpacing() == flair.GetSpacing()
    assert out.GetOrigin() == flair.GetOrigin() and out.GetDirection() == flair.GetDirection()
    reference_image = sitk.ReadImage(str(reference_path))
    reference = sitk.GetArrayFromImage(reference_image) > 0
    back = clinical.labels_on(tmp_path / "seg.nii.gz", reference_image) > 0
    assert clinical.dsc(back, reference) >= MIN_DSC
    assert [(w["check"], w["value"]) for w in result["warnings"]] == [("slice-thickness", 5.5)]


# -- the external raw scan ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def external(brats2015):
    folder = brats2015.parent / "external" / "BraTS-GLI-00001-000"
    if not folder.is_dir():
        pytest.skip("../shared/data/external is absent")
    return folder


def test_external_scan_names_are_discovered_and_one_mask_rule_holds(external):
    from asymseg.io import discover_case, load_case

    files = discover_case(external)
    assert {k: v.name for k, v in files.channels.items()} == {
        "flair": "BraTS-GLI-00001-000-t2f.nii.gz", "t1c": "BraTS-GLI-00001-000-t1c.nii.gz",
        "t1": "BraTS-GLI-00001-000-t1n.nii.gz", "t2": "BraTS-GLI-00001-000-t2w.nii.gz"}
    assert files.case_id == "BraTS-GLI-00001-000"
    every = load_case(files, normalize=False)
    for_model = load_case(files, channels=["flair", "t1c"], spacing=(1.0, 1.0, 1.0), orientation="LPS")
    assert np.array_equal(every.mask, for_model.mask) and every.findings == [] and for_model.findings == []
    inside = for_model.image[:, for_model.mask].astype(np.float64)
    np.testing.assert_allclose(inside.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(inside.std(axis=1), 1.0, atol=1e-4)
    assert not for_model.image[:, ~for_model.mask].any()


def test_external_t1c_on_a_tilted_grid_comes_back_onto_the_flair_grid(external, tmp_path):
    from asymseg.io import discover_case, load_case

    folder = tmp_path / "case"
    folder.mkdir()
    for path in external.glob("*-t2f.nii.gz"):
        (folder / path.name).symlink_to(path)
    t1c_path = next(external.glob("*-t1c.nii.gz"))
    t1c = sitk.ReadImage(str(t1c_path))
    grid = clinical._grid_around(t1c, (1.1, 1.1, 1.3), clinical._rotation(15, 5), shift=(3.5, -2.5, 1.5))
    tilted = clinical._resample(t1c, grid, label=False)
    sitk.WriteImage(tilted, str(folder / t1c_path.name))
    original = load_case(discover_case(external), channels=["flair", "t1c"], normalize=False)
    moved = load_case(discover_case(folder), channels=["flair", "t1c"], normalize=False)
    assert moved.geometry == original.geometry and not moved.resampled
    brain = original.mask & moved.mask
    correlation = np.corrcoef(original.image[1][brain], moved.image[1][brain])[0, 1]
    assert correlation > 0.95
