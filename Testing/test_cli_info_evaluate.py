"""``asymseg info`` and ``asymseg evaluate`` end to end: output, JSON, and one-line errors (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from asymseg import constants as C

SHAPE = (12, 14, 16)  # (D, H, W)


def _write(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def _ball(centre, radius, shape=SHAPE):
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def _brats2021_case(folder, spacing=(1.0, 1.0, 1.0)):
    """BraTS 2017-2021 names; labels {0, 1, 2, 4}; zero background outside an ellipsoid brain."""
    folder.mkdir(parents=True)
    cid = folder.name
    brain = _ball((6, 7, 8), 5.5)
    rng = np.random.default_rng(0)
    for name in ("flair", "t1ce"):
        array = np.zeros(SHAPE, np.float32)
        array[brain] = rng.uniform(10, 20, int(brain.sum()))
        _write(folder / f"{cid}_{name}.nii.gz", array, spacing)
    label = np.zeros(SHAPE, np.uint8)
    label[_ball((6, 7, 8), 3.5)] = 2
    label[_ball((6, 7, 8), 2.5)] = 1
    label[_ball((6, 7, 9), 1.0)] = 4
    _write(folder / f"{cid}_seg.nii.gz", label, spacing)
    return folder, brain, label


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


# -- info -----------------------------------------------------------------------------------------
@pytest.mark.data
@pytest.mark.parametrize(("case", "core"), [("brats_2013_pat0005_1", 45_266), ("brats_2013_pat0006_1", 107_445)])
def test_info_on_the_brats2015_cases(cli, brats2015, case, core):
    result = cli("info", brats2015 / case, "--json")
    assert result.code == 0, result.err
    report = _strict_json(result.out)
    assert [c["name"] for c in report["channels"]] == ["flair", "t1c"]
    assert [c["file"].rsplit("/", 1)[-1] for c in report["channels"]] == ["Flair_subtrMeanDivStd.nii.gz",
                                                                           "T1c_subtrMeanDivStd.nii.gz"]
    assert report["label"]["values"] == [0, 1, 2, 3, 4]
    assert report["mask"]["source"] == "file" and report["mask"]["file"].endswith("brainmask.nii.gz")
    assert report["target"]["convention"] == "brats2015" and report["target"]["guessed"] is True
    assert report["tumour_core_voxels"] == core
    assert report["geometry"]["size"] == [240, 240, 155] and report["geometry"]["spacing"] == [1.0, 1.0, 1.0]
    human = cli("info", brats2015 / case)
    assert human.code == 0
    assert f"tumour core {core:,} voxels" in human.out and "brats2015, guessed" in human.out
    assert "channels    2: flair" in human.out and "values 0, 1, 2, 3, 4" in human.out
    assert "brain mask  brainmask.nii.gz" in human.out


def test_info_on_a_brats2021_case(cli, tmp_path):
    folder, brain, label = _brats2021_case(tmp_path / "BraTS2021_00007", spacing=(1.0, 1.0, 2.0))
    result = cli("info", folder, "--json")
    assert result.code == 0, result.err
    report = _strict_json(result.out)
    assert report["case_id"] == "BraTS2021_00007"
    assert [c["name"] for c in report["channels"]] == ["flair", "t1c"]
    assert report["label"]["values"] == [0, 1, 2, 4]
    assert report["mask"] == {"source": "derived", "file": None, "found": None}
    assert report["brain_voxels"] == int(brain.sum())
    assert report["brain_volume_ml"] == pytest.approx(brain.sum() * 2.0 / 1000)
    assert report["target"]["convention"] == "brats2017"
    assert report["tumour_core_voxels"] == int(np.isin(label, (1, 4)).sum())
    human = cli("info", folder)
    assert "derived (voxels differing from the background)" in human.out
    assert "spacing (1, 1, 2) mm" in human.out


def test_info_with_explicit_foreground_labels_and_channels(cli, tmp_path):
    folder, _, label = _brats2021_case(tmp_path / "c")
    result = cli("info", "--channel", f"flair={folder / 'c_flair.nii.gz'}", "--label", folder / "c_seg.nii.gz",
                 "--foreground-labels", "2", "--json")
    assert result.code == 0, result.err
    report = _strict_json(result.out)
    assert [c["name"] for c in report["channels"]] == ["flair"] and report["folder"] is None
    assert report["target"]["guessed"] is False and report["target"]["convention"] is None
    assert report["tumour_core_voxels"] == int((label == 2).sum())


def test_info_reports_labels_that_fit_no_convention_without_failing(cli, tmp_path):
    folder, _, label = _brats2021_case(tmp_path / "c")
    _write(folder / "c_seg.nii.gz", (label > 0).astype(np.uint8) * 7)
    result = cli("info", folder, "--json")
    assert result.code == 0, result.err
    report = _strict_json(result.out)
    assert report["target"] is None and "fit no BraTS convention" in report["target_error"]
    assert "tumour core unknown" in cli("info", folder).out


def test_info_missing_folder_exits_2_naming_it(asymseg_proc, tmp_path):
    proc = asymseg_proc("info", tmp_path / "missing_dir")
    assert proc.returncode == C.EXIT_USAGE
    assert _one_line(proc.stderr) == f"asymseg info: error: {tmp_path / 'missing_dir'}: no such case folder"
    assert proc.stdout == ""


def test_info_corrupt_nii_gz_exits_2_naming_the_file(asymseg_proc, tmp_path):
    folder, _, _ = _brats2021_case(tmp_path / "c")
    path = folder / "c_t1ce.nii.gz"
    path.write_bytes(path.read_bytes()[:300])  # truncated gzip stream
    proc = asymseg_proc("info", folder)
    assert proc.returncode == C.EXIT_USAGE
    line = _one_line(proc.stderr)
    assert line.startswith(f"asymseg info: error: {path}: cannot read t1c channel image: the file is truncated")


def test_info_channel_on_another_grid_is_resampled_onto_the_first_channel(cli, tmp_path):
    folder, brain, _ = _brats2021_case(tmp_path / "c")
    _write(folder / "c_t1ce.nii.gz", np.ones((8, 14, 16), np.float32), spacing=(1.0, 1.0, 1.5))
    result = cli("info", folder, "--json")
    assert result.code == 0, result.err
    report = _strict_json(result.out)
    assert report["geometry"]["spacing"] == [1.0, 1.0, 1.0] and report["geometry"]["size"] == [16, 14, 12]
    assert report["mask"]["source"] == "derived"
    # The t1ce is all ones (its border is 1, so it adds no brain); the flair's brain is the mask.
    assert report["brain_voxels"] == int(brain.sum())
    t1c = next(c for c in report["channels"] if c["name"] == "t1c")
    assert t1c["brain_min"] == t1c["brain_max"] == 1.0


def test_info_channel_that_barely_overlaps_exits_2_naming_both_files(asymseg_proc, cli, tmp_path):
    folder, _, _ = _brats2021_case(tmp_path / "c")
    _write(folder / "c_t1ce.nii.gz", np.ones(SHAPE, np.float32), origin=(0.0, 0.0, 11.0))
    proc = asymseg_proc("info", folder)
    assert proc.returncode == C.EXIT_USAGE
    line = _one_line(proc.stderr)
    assert (f"{folder / 'c_t1ce.nii.gz'} and {folder / 'c_flair.nii.gz'} overlap by only 8% in physical space; "
            "they are probably not from the same visit: register them first") in line
    in_process = cli("info", folder)
    assert in_process.code == C.EXIT_USAGE and _one_line(in_process.err) == line


def test_info_folder_without_images_exits_2(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    result = cli("info", tmp_path)
    assert result.code == C.EXIT_USAGE
    assert f"{tmp_path}: no image channels found (looked for" in _one_line(result.err)


# -- evaluate ----------------------------------------------------------------------------------------
def _sitk_contour(mask, spacing):
    padded = sitk.GetImageFromArray(np.pad(mask, 1).astype(np.uint8))
    contour = sitk.GetArrayFromImage(sitk.BinaryContour(padded, fullyConnected=False))[1:-1, 1:-1, 1:-1]
    image = sitk.GetImageFromArray(contour.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def _sitk_binary(mask, spacing):
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def test_evaluate_label_map_reference_agrees_with_simpleitk_filters(cli, tmp_path):
    spacing = (0.8, 1.2, 2.5)
    folder, _, label = _brats2021_case(tmp_path / "c", spacing=spacing)
    core = np.isin(label, (1, 4))
    prediction = _ball((7, 7, 9), 2.5)
    pred_path = _write(tmp_path / "pred.nrrd", prediction.astype(np.uint8), spacing)
    result = cli("evaluate", "--prediction", pred_path, "--reference", folder / "c_seg.nii.gz", "--json")
    assert result.code == 0, result.err
    out = _strict_json(result.out)
    assert out["binary"] == {"prediction": True, "reference": False}
    assert out["target"]["convention"] == "brats2017" and out["target_guessed"] is True
    m = out["metrics"]
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(_sitk_binary(prediction, spacing), _sitk_binary(core, spacing))
    assert m["dsc"] == pytest.approx(overlap.GetDiceCoefficient(), rel=1e-9)
    assert 1 - m["sensitivity"] == pytest.approx(overlap.GetFalseNegativeError(), abs=1e-9)
    assert 1 - m["precision"] == pytest.approx(overlap.GetFalseDiscoveryRate(), abs=1e-9)
    assert 1 - m["specificity"] == pytest.approx(overlap.GetFalsePositiveError(), abs=1e-9)
    hausdorff_filter = sitk.HausdorffDistanceImageFilter()
    hausdorff_filter.Execute(_sitk_contour(prediction, spacing), _sitk_contour(core, spacing))
    assert m["hausdorff"] == pytest.approx(hausdorff_filter.GetHausdorffDistance(), rel=1e-5)
    assert 0 < m["hd95"] <= m["hausdorff"]
    assert m["volume_reference_ml"] == pytest.approx(core.sum() * np.prod(spacing) / 1000)
    human = cli("evaluate", "--prediction", pred_path, "--reference", folder / "c_seg.nii.gz")
    assert human.code == 0
    assert f"DSC                     {m['dsc']:.4f}" in human.out
    assert "foreground  labels 1,4 (brats2017, guessed from the label values)" in human.out


def test_evaluate_explicit_foreground_labels_on_both_label_maps(cli, tmp_path):
    folder, _, label = _brats2021_case(tmp_path / "c")
    ref = folder / "c_seg.nii.gz"
    result = cli("evaluate", "--prediction", ref, "--reference", ref, "--foreground-labels", "2", "--json")
    out = _strict_json(result.out)
    assert out["metrics"]["tp"] == int((label == 2).sum()) and out["metrics"]["dsc"] == 1.0
    assert out["target_guessed"] is False


def test_evaluate_empty_prediction_gives_strict_json(cli, tmp_path):
    folder, _, _ = _brats2021_case(tmp_path / "c")
    pred = _write(tmp_path / "empty.nii.gz", np.zeros(SHAPE, np.uint8))
    result = cli("evaluate", "--prediction", pred, "--reference", folder / "c_seg.nii.gz", "--json")
    assert result.code == 0
    m = _strict_json(result.out)["metrics"]
    assert m["dsc"] == 0.0 and m["precision"] is None and m["sensitivity"] == 0.0
    assert m["hd95"] == pytest.approx(C.BRATS_HD95_CAP)
    assert "precision               n/a" in cli("evaluate", "--prediction", pred, "--reference",
                                                 folder / "c_seg.nii.gz").out


def test_evaluate_on_different_grids_exits_2_naming_both_files(asymseg_proc, cli, tmp_path):
    ref = _write(tmp_path / "ref.nii.gz", _ball((6, 7, 8), 3).astype(np.uint8))
    pred = _write(tmp_path / "pred.nii.gz", _ball((6, 7, 8), 3).astype(np.uint8), origin=(0.0, 0.0, 4.0))
    result = cli("evaluate", "--prediction", pred, "--reference", ref)
    assert result.code == C.EXIT_USAGE
    assert _one_line(result.err) == (f"asymseg evaluate: error: {ref} and {pred} are on different grids: "
                                     "origin (0, 0, 0) vs (0, 0, 4)")
    proc = asymseg_proc("evaluate", "--prediction", tmp_path / "none.nii.gz", "--reference", ref)
    assert proc.returncode == C.EXIT_USAGE
    assert _one_line(proc.stderr) == f"asymseg evaluate: error: {tmp_path / 'none.nii.gz'}: no such prediction file"


def test_evaluate_probability_map_is_rejected(cli, tmp_path):
    ref = _write(tmp_path / "ref.nii.gz", _ball((6, 7, 8), 3).astype(np.uint8))
    pred = _write(tmp_path / "prob.nii.gz", np.full(SHAPE, 0.3, np.float32))
    result = cli("evaluate", "--prediction", pred, "--reference", ref)
    assert result.code == C.EXIT_USAGE
    assert "prob.nii.gz: prediction has non-integer values (e.g. 0.3)" in _one_line(result.err)


@pytest.mark.data
def test_evaluate_on_real_brats2015_labels_agrees_with_simpleitk(cli, brats2015, tmp_path):
    ref = brats2015 / "brats_2013_pat0006_1" / "OTMultiClass.nii.gz"
    image = sitk.ReadImage(str(ref))
    core = np.isin(sitk.GetArrayFromImage(image), (1, 3, 4))
    prediction = np.roll(core, 3, axis=2)  # shifted 3 voxels along x
    pred_image = sitk.GetImageFromArray(prediction.astype(np.uint8))
    pred_image.CopyInformation(image)
    pred = tmp_path / "pred.nii.gz"
    sitk.WriteImage(pred_image, str(pred))
    out = _strict_json(cli("evaluate", "--prediction", pred, "--reference", ref, "--json").out)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(pred_image, _with_info(core, image))
    assert out["metrics"]["dsc"] == pytest.approx(overlap.GetDiceCoefficient(), rel=1e-9)
    hausdorff_filter = sitk.HausdorffDistanceImageFilter()
    hausdorff_filter.Execute(_sitk_contour(prediction, image.GetSpacing()), _sitk_contour(core, image.GetSpacing()))
    assert out["metrics"]["hausdorff"] == pytest.approx(hausdorff_filter.GetHausdorffDistance(), rel=1e-5)
    assert 0 < out["metrics"]["hd95"] <= out["metrics"]["hausdorff"]
    assert out["target"]["convention"] == "brats2015"


def _with_info(mask, reference_image):
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference_image)
    return image


def test_the_command_line_parser_and_info_do_not_import_torch(tmp_path):
    """Parsing any command line (``--help``, an error) and ``info`` never pay for importing torch
    (seconds and ~200 MB): only the commands that run a network do."""
    import subprocess
    import sys

    from asymseg.phantom import write_phantom_cases

    (case,) = write_phantom_cases(tmp_path / "cases", 1, size=(16, 16, 16), seed=1)
    code = ("import sys\n"
            "from asymseg.cli import build_parser, main\n"
            "build_parser()\n"
            f"assert main(['info', {str(case)!r}]) == 0\n"
            "print('torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"
