"""The shared case and target options: parsing, precedence, errors, convention guessing."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import SimpleITK as sitk

from asymseg.errors import InputError
from asymseg.io import add_case_arguments, add_target_arguments, case_files_from_args, target_from_args
from asymseg.io.cli_args import read_case_list, target_was_guessed


def _make(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 8), np.float32)), str(folder / name))
    return folder


def _parser(**kwargs):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_case_arguments(parser, **kwargs)
    add_target_arguments(parser)
    return parser


def test_several_cases_from_options_and_a_list_file(tmp_path):
    a = _make(tmp_path / "a", ["flair.nii.gz"])
    b = _make(tmp_path / "b", ["t1c.nii.gz"])
    c = _make(tmp_path / "lists" / "c", ["t2.nii.gz"])
    listing = tmp_path / "lists" / "cases.txt"
    listing.write_text(f"# training cases\n\n{b}   # absolute\nc\n{a}\n")
    args = _parser().parse_args(["--case", str(a), "--cases-from", str(listing)])
    cases = case_files_from_args(args)
    assert [f.case_id for f in cases] == ["a", "b", "c"]  # the repeated a is used once
    assert read_case_list(listing) == [b, tmp_path / "lists" / "c", a]
    assert cases[2].folder == c


def test_channel_overrides_the_single_case(tmp_path):
    a = _make(tmp_path / "a", ["flair.nii.gz", "t1ce.nii.gz"])
    other = _make(tmp_path / "o", ["bias_corrected.nii.gz", "lab.nrrd"])
    args = _parser().parse_args(["--case", str(a), "--channel", f"FLAIR={other / 'bias_corrected.nii.gz'}",
                                 "--label", str(other / "lab.nrrd")])
    (files,) = case_files_from_args(args)
    assert files.channels == {"flair": other / "bias_corrected.nii.gz", "t1c": a / "t1ce.nii.gz"}
    assert files.label == other / "lab.nrrd"


def test_channels_alone_form_a_case(tmp_path):
    a = _make(tmp_path / "a", ["x1.nii.gz", "x2.nii.gz"])
    args = _parser().parse_args(["--channel", f"t2={a / 'x2.nii.gz'}", "--channel", f"t1n={a / 'x1.nii.gz'}"])
    (files,) = case_files_from_args(args)
    assert files.folder is None and list(files.channels) == ["t1", "t2"]


def test_per_case_options_with_several_cases_are_an_error(tmp_path):
    a = _make(tmp_path / "a", ["flair.nii.gz"])
    b = _make(tmp_path / "b", ["flair.nii.gz"])
    args = _parser().parse_args(["--case", str(a), "--case", str(b), "--mask", str(a / "flair.nii.gz")])
    with pytest.raises(InputError, match=r"--mask apply to a single case, but 2 cases were given"):
        case_files_from_args(args)


def test_no_case_is_an_error():
    with pytest.raises(InputError, match=r"no case given: pass a case folder \(--case DIR\)"):
        case_files_from_args(_parser().parse_args([]))
    with pytest.raises(InputError, match=r"--label/--mask need a case"):
        case_files_from_args(_parser().parse_args(["--label", "seg.nii.gz"]))


def test_same_channel_twice_is_an_error(tmp_path):
    args = _parser().parse_args(["--channel", "t1c=a.nii.gz", "--channel", "t1ce=b.nii.gz"])
    with pytest.raises(InputError, match=r"--channel t1c is given twice \(a\.nii\.gz, b\.nii\.gz\)"):
        case_files_from_args(args)


def test_bad_channel_syntax_is_an_argparse_error():
    parser = _parser()
    with pytest.raises(argparse.ArgumentError, match=r"expected NAME=PATH"):
        parser.parse_args(["--channel", "flair.nii.gz"])
    with pytest.raises(argparse.ArgumentError, match=r"unknown channel name 'dwi'"):
        parser.parse_args(["--channel", "dwi=x.nii.gz"])


def test_missing_case_list_names_it(tmp_path):
    args = _parser().parse_args(["--cases-from", str(tmp_path / "none.txt")])
    with pytest.raises(InputError, match=r"none\.txt: no such case list file"):
        case_files_from_args(args)


def test_empty_case_list_is_an_error(tmp_path):
    listing = tmp_path / "cases.txt"
    listing.write_text("# nothing yet\n")
    with pytest.raises(InputError, match=r"cases\.txt: the case list names no case folder"):
        case_files_from_args(_parser().parse_args(["--cases-from", str(listing)]))


def test_positional_single_case(tmp_path):
    a = _make(tmp_path / "a", ["flair.nii.gz"])
    parser = _parser(multiple=False, positional=True)
    (files,) = case_files_from_args(parser.parse_args([str(a)]))
    assert files.case_id == "a"
    with pytest.raises(SystemExit):  # unknown option
        parser.parse_args(["--cases-from", "x.txt"])


@pytest.mark.parametrize(
    ("values", "convention", "core"),
    [
        ((0, 1, 2, 3, 4), "brats2015", (1, 3, 4)),
        ((0, 1, 2, 4), "brats2017", (1, 4)),
        ((0, 1, 2), "brats2017", (1, 4)),  # 2017 and 2023 agree on these values: core = {1}
    ],
)
def test_target_is_guessed_where_unambiguous(values, convention, core):
    args = _parser().parse_args([])
    target = target_from_args(args, label_values=values)
    assert target.convention == convention and target.classes[1].labels == core
    assert target_was_guessed(args)


def test_values_of_no_convention_ask_for_foreground_labels():
    with pytest.raises(InputError, match=r"seg\.nii\.gz: label values \[0, 1, 5\] fit no BraTS convention; "
                                         r"pass --foreground-labels"):
        target_from_args(_parser().parse_args([]), label_values=(0, 1, 5), source="seg.nii.gz")
    with pytest.raises(InputError, match=r"seg\.nii\.gz: no label file found, so the label "
                                                             r"convention cannot be guessed; pass --label-convention"):
        target_from_args(_parser().parse_args([]), label_values=None, source="seg.nii.gz")


def test_values_shared_by_two_conventions_give_the_same_core():
    # {0, 1, 2, 3} fits 2015 (3 = non-enhancing) and 2023 (3 = enhancing): both put 1 and 3 in the core.
    target = target_from_args(_parser().parse_args([]), label_values=(0, 1, 2, 3))
    assert target.classes[1].labels == (1, 3)


def test_explicit_target_options_win_over_guessing():
    parser = _parser()
    target = target_from_args(parser.parse_args(["--label-convention", "brats2023"]), label_values=(0, 1, 2, 3))
    assert target.convention == "brats2023" and target.classes[1].labels == (1, 3)
    args = parser.parse_args(["--foreground-labels", "4, 1"])
    target = target_from_args(args, label_values=(0, 1, 2, 4))
    assert target.classes[1].labels == (1, 4) and target.convention is None and not target_was_guessed(args)
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--label-convention", "brats2015", "--foreground-labels", "1"])
    with pytest.raises(argparse.ArgumentError, match="expected positive label values"):
        parser.parse_args(["--foreground-labels", "0,1"])


def test_outputs_that_cannot_be_created_are_refused_naming_the_file_in_the_way(tmp_path):
    from asymseg.io.cli_args import check_output_path

    blocker = tmp_path / "taken"
    blocker.write_text("x")
    check_output_path(tmp_path / "new" / "deeper", "--out", folder=True)  # creatable: no error
    check_output_path(tmp_path / "seg.nii.gz", "--output", folder=False)
    with pytest.raises(InputError, match=r"taken: --out must be a folder, but this is a file"):
        check_output_path(blocker, "--out", folder=True)
    with pytest.raises(InputError, match=r"cannot create the --run-dir folder: .*taken is a file, not a folder"):
        check_output_path(blocker / "run", "--run-dir", folder=True)
    with pytest.raises(InputError, match=r"cannot write --output here: .*taken is a file, not a folder"):
        check_output_path(blocker / "a" / "seg.nii.gz", "--output", folder=False)
