"""Finding a case's files under every naming scheme, overrides and ambiguity errors."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from asymseg.errors import InputError
from asymseg.io import CaseFiles, canonical_channel, discover_case, role_of


def _touch_image(path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 8), np.float32)), str(path))
    return path


def _make(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        _touch_image(folder / name)
    return folder


def _names(files: CaseFiles):
    return ({k: v.name for k, v in files.channels.items()},
            files.label.name if files.label else None, files.mask.name if files.mask else None)


def test_generic_names_any_case_and_extension(tmp_path):
    folder = _make(tmp_path / "case7", ["T2W.nii", "t1.mha", "FLAIR.nii.gz", "T1ce.nrrd", "Seg.nii.gz",
                                        "brainmask.nii.gz"])
    files = discover_case(folder)
    assert _names(files) == ({"flair": "FLAIR.nii.gz", "t1c": "T1ce.nrrd", "t1": "t1.mha", "t2": "T2W.nii"},
                             "Seg.nii.gz", "brainmask.nii.gz")
    assert list(files.channels) == ["flair", "t1c", "t1", "t2"]  # canonical order, not file order
    assert files.case_id == "case7" and files.folder == folder


@pytest.mark.parametrize("t1c_name", ["t1c.nii.gz", "t1ce.nii.gz", "t1gd.nii.gz"])
def test_t1_does_not_claim_t1c_files(tmp_path, t1c_name):
    files = discover_case(_make(tmp_path / "c", ["t1.nii.gz", t1c_name]))
    assert _names(files)[0] == {"t1c": t1c_name, "t1": "t1.nii.gz"}


def test_brats_2017_2021_names(tmp_path):
    cid = "BraTS2021_00042"
    folder = _make(tmp_path / cid, [f"{cid}_{s}.nii.gz" for s in ("flair", "t1ce", "t1", "t2", "seg")])
    files = discover_case(folder)
    assert _names(files) == ({"flair": f"{cid}_flair.nii.gz", "t1c": f"{cid}_t1ce.nii.gz",
                              "t1": f"{cid}_t1.nii.gz", "t2": f"{cid}_t2.nii.gz"}, f"{cid}_seg.nii.gz", None)
    assert files.case_id == cid


def test_brats_2023_names_and_the_brats_id(tmp_path):
    cid = "BraTS-GLI-00000-000"
    folder = _make(tmp_path / "renamed_folder", [f"{cid}-{s}.nii.gz" for s in ("t2f", "t1c", "t1n", "t2w", "seg")])
    files = discover_case(folder)
    assert _names(files) == ({"flair": f"{cid}-t2f.nii.gz", "t1c": f"{cid}-t1c.nii.gz",
                              "t1": f"{cid}-t1n.nii.gz", "t2": f"{cid}-t2w.nii.gz"}, f"{cid}-seg.nii.gz", None)
    assert files.case_id == cid


def test_shared_data_names(tmp_path):
    folder = _make(tmp_path / "brats_2013_pat0005_1", ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz",
                                                       "OTMultiClass.nii.gz", "brainmask.nii.gz"])
    (folder / "License_CC_BY_NC_SA_3.0.txt").write_text("licence")
    files = discover_case(folder)
    assert _names(files) == ({"flair": "Flair_subtrMeanDivStd.nii.gz", "t1c": "T1c_subtrMeanDivStd.nii.gz"},
                             "OTMultiClass.nii.gz", "brainmask.nii.gz")
    assert files.case_id == "brats_2013_pat0005_1"
    assert files.origin == {"flair": "discovered", "t1c": "discovered", "label": "discovered", "mask": "discovered"}


def test_real_brats2015_folders_are_discovered(brats2015):
    for folder in sorted(p for p in brats2015.iterdir() if p.is_dir()):
        files = discover_case(folder)
        assert list(files.channels) == ["flair", "t1c"]
        assert files.label.name == "OTMultiClass.nii.gz" and files.mask.name == "brainmask.nii.gz"


def test_unrelated_hidden_and_non_image_files_are_ignored(tmp_path):
    folder = _make(tmp_path / "c", ["flair.nii.gz", "prediction.nii.gz", ".t1.nii.gz"])
    (folder / "t2.txt").write_text("not an image")
    (folder / "t1c.nii.gz").mkdir()  # a folder with an image name
    assert _names(discover_case(folder)) == ({"flair": "flair.nii.gz"}, None, None)


def test_role_of_examples():
    assert role_of("x/BraTS19_2013_2_1_flair.nii.gz") == "flair"
    assert role_of("T1c_subtrMeanDivStd.nii.gz") == "t1c"
    assert role_of("case.t2.nrrd") == "t2"
    assert role_of("brain_mask.mha") == "mask"
    assert role_of("t1_seg.nii.gz") == "label"  # the last token wins
    assert role_of("t1c_notes.txt") is None
    assert role_of("t1cx.nii.gz") is None


def test_two_files_for_one_channel_is_an_error_listing_both(tmp_path):
    folder = _make(tmp_path / "c", ["flair.nii.gz", "case_flair.nrrd", "t1.nii.gz"])
    with pytest.raises(InputError, match=r"several files look like the flair: case_flair\.nrrd, flair\.nii\.gz; "
                                         r"pass --channel flair=PATH"):
        discover_case(folder)


def test_two_label_files_is_an_error_unless_one_is_given(tmp_path):
    folder = _make(tmp_path / "c", ["flair.nii.gz", "seg.nii.gz", "label.nii.gz"])
    with pytest.raises(InputError, match=r"several files look like the label: label\.nii\.gz, seg\.nii\.gz; pass --label"):
        discover_case(folder)
    assert discover_case(folder, label=folder / "seg.nii.gz").label == folder / "seg.nii.gz"


def test_explicit_paths_override_discovery(tmp_path):
    folder = _make(tmp_path / "c", ["flair.nii.gz", "t1ce.nii.gz", "seg.nii.gz", "mask.nii.gz"])
    other = _make(tmp_path / "elsewhere", ["FLAIR_bias_corrected.nii.gz", "my_labels.nii.gz", "brain.nii.gz",
                                           "T2_reg.nii.gz"])
    files = discover_case(folder, channels={"FLAIR": other / "FLAIR_bias_corrected.nii.gz",
                                            "t2w": other / "T2_reg.nii.gz"},
                          label=other / "my_labels.nii.gz", mask=other / "brain.nii.gz")
    assert files.channels == {"flair": other / "FLAIR_bias_corrected.nii.gz", "t1c": folder / "t1ce.nii.gz",
                              "t2": other / "T2_reg.nii.gz"}
    assert files.label == other / "my_labels.nii.gz" and files.mask == other / "brain.nii.gz"
    assert files.origin == {"flair": "given", "t1c": "discovered", "t2": "given", "label": "given", "mask": "given"}


def test_explicit_channels_alone_form_a_case(tmp_path):
    folder = _make(tmp_path / "x", ["BraTS2021_00001_flair.nii.gz", "BraTS2021_00001_t1ce.nii.gz"])
    files = discover_case(None, channels={"flair": folder / "BraTS2021_00001_flair.nii.gz",
                                          "t1ce": folder / "BraTS2021_00001_t1ce.nii.gz"})
    assert files.folder is None and files.case_id == "BraTS2021_00001"
    assert list(files.channels) == ["flair", "t1c"]


def test_explicit_missing_file_names_it(tmp_path):
    folder = _make(tmp_path / "c", ["flair.nii.gz"])
    with pytest.raises(InputError, match=r"nope\.nii\.gz: no such t2 channel file"):
        discover_case(folder, channels={"t2": tmp_path / "nope.nii.gz"})
    with pytest.raises(InputError, match=r"seg\.nrrd: no such label file"):
        discover_case(folder, label=tmp_path / "seg.nrrd")


def test_unknown_channel_name_lists_the_names():
    with pytest.raises(InputError, match=r"unknown channel name 'pd'; expected one of flair/t2f/t2flair; t1c/t1ce/t1gd"):
        canonical_channel("pd")


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(InputError, match=r"nowhere: no such case folder"):
        discover_case(tmp_path / "nowhere")


def test_a_file_is_not_a_case_folder(tmp_path):
    path = _touch_image(tmp_path / "flair.nii.gz")
    with pytest.raises(InputError, match=r"flair\.nii\.gz: is not a folder"):
        discover_case(path)


def test_folder_without_channels_says_what_was_looked_for(tmp_path):
    folder = _make(tmp_path / "empty", ["seg.nii.gz", "whatever.nii.gz"])
    with pytest.raises(InputError, match=r"empty: no image channels found \(looked for channel files named "
                                         r"flair/t2f/t2flair, t1c/t1ce/t1gd, t1/t1n, t2/t2w; label .*extensions"):
        discover_case(folder)


def test_brats_toolkit_names_with_and_without_bet(tmp_path):
    folder = _make(tmp_path / "pat1", [f"pat1_{s}_bet.nii.gz" for s in ("fla", "t1c", "t1", "t2")])
    files = discover_case(folder)
    assert _names(files) == ({"flair": "pat1_fla_bet.nii.gz", "t1c": "pat1_t1c_bet.nii.gz",
                              "t1": "pat1_t1_bet.nii.gz", "t2": "pat1_t2_bet.nii.gz"}, None, None)
    assert files.case_id == "pat1"
    raw = _make(tmp_path / "raw", ["P7_FLA.nii.gz", "P7_T1C.nii.gz"])
    assert _names(discover_case(raw)) == ({"flair": "P7_FLA.nii.gz", "t1c": "P7_T1C.nii.gz"}, None, None)


def test_skull_stripped_file_is_chosen_over_the_raw_one(tmp_path):
    folder = _make(tmp_path / "c", ["c_fla.nii.gz", "c_fla_bet.nii.gz", "c_t1c.nii.gz", "c_t1c_bet.nii.gz"])
    assert _names(discover_case(folder)) == ({"flair": "c_fla_bet.nii.gz", "t1c": "c_t1c_bet.nii.gz"}, None, None)


def test_two_skull_stripped_files_for_one_channel_is_an_error(tmp_path):
    folder = _make(tmp_path / "c", ["a_fla_bet.nii.gz", "b_flair_bet.nii.gz"])
    with pytest.raises(InputError, match=r"several files look like the flair: a_fla_bet\.nii\.gz, "
                                         r"b_flair_bet\.nii\.gz; pass --channel flair=PATH"):
        discover_case(folder)


@pytest.mark.parametrize(("name", "role"), [("FLAIR.nii.gz", "flair"), ("T1CE.nii.gz", "t1c"), ("t2f.nrrd", "flair"),
                                            ("T1Gd.nii", "t1c"), ("t1c.mha", "t1c"), ("x_t2_brain.nii.gz", "t2"),
                                            ("x_T1_brain_mask.nii.gz", "mask"), ("bet.nii.gz", None),
                                            ("brain.nii.gz", None)])
def test_plain_names_any_case_and_qualifiers(name, role):
    assert role_of(name) == role


def test_toolkit_alias_is_a_channel_name():
    assert canonical_channel("FLA") == "flair"
