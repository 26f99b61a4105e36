"""Writing phantom cases: BraTS names, phantom.json, the ``asymseg phantom`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from asymseg.errors import Cancelled, InputError
from asymseg.events import CancelToken
from asymseg.io import discover_case, load_case
from asymseg.phantom import case_seed, make_phantom, read_phantom_manifest, write_phantom_cases

BRATS_FILES = ("flair", "t1ce", "seg")


def read(path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def test_cli_writes_discoverable_brats_named_cases(cli, tmp_path):
    out = tmp_path / "phantoms"
    result = cli("phantom", "--out", out, "--cases", 2, "--size", "32", "--seed", 3, "--progress", "none")
    assert result.code == 0, result
    lines = result.out.strip().splitlines()
    assert lines[0].startswith("phantom_000: core ") and "% of brain" in lines[0]
    assert lines[-1] == f"wrote 2 case(s) to {out.resolve()}"
    for index in range(2):
        case_id = f"phantom_{index:03d}"
        folder = out / case_id
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{case_id}_{s}.nii.gz" for s in BRATS_FILES)
        files = discover_case(folder)
        case = load_case(files)
        assert case.channels == ("flair", "t1c")
        assert set(case.label_values) <= {0, 1, 2, 4} and {2, 4} <= set(case.label_values)
        assert case.mask_source == "derived"
        assert case.geometry.size == (32, 32, 32)
        # The written case is make_phantom(case_seed(seed, index)); the derived mask is its brain.
        expected = make_phantom(case_seed(3, index), size=(32, 32, 32))
        np.testing.assert_array_equal(case.mask, expected.mask)
        np.testing.assert_array_equal(case.label, expected.label)
        flair, _ = read(folder / f"{case_id}_flair.nii.gz")
        np.testing.assert_array_equal(flair, expected.images["flair"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_four_channels_anisotropic_size_and_spacing_are_written_with_that_geometry(cli, tmp_path):
    out = tmp_path / "p4"
    result = cli("phantom", "--out", out, "--cases", 1, "--size", "40,36,24", "--spacing", "1,1,2.5",
                 "--channels", "4", "--progress", "none")
    assert result.code == 0, result
    folder = out / "phantom_000"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"phantom_000_{s}.nii.gz" for s in ("flair", "t1ce", "t1", "t2", "seg"))
    array, image = read(folder / "phantom_000_t2.nii.gz")
    assert image.GetSize() == (40, 36, 24) and array.shape == (24, 36, 40)
    assert image.GetSpacing() == (1.0, 1.0, 2.5)
    assert image.GetPixelID() == sitk.sitkFloat32
    _, seg = read(folder / "phantom_000_seg.nii.gz")
    assert seg.GetPixelID() == sitk.sitkUInt8 and seg.GetSpacing() == (1.0, 1.0, 2.5)
    assert load_case(discover_case(folder)).channels == ("flair", "t1c", "t1", "t2")


def test_channel_names_and_aliases_are_accepted(cli, tmp_path):
    result = cli("phantom", "--out", tmp_path / "p", "--cases", 1, "--size", "24", "--channels", "t1ce,FLAIR",
                 "--json", "--progress", "none")
    assert result.code == 0, result
    assert json.loads(result.out)["cases"][0]["channels"] == ["t1c", "flair"]


def test_json_summary_lists_each_case_with_its_tumour_and_contrasts(cli, tmp_path):
    result = cli("phantom", "--out", tmp_path / "p", "--cases", 3, "--size", "24", "--json", "--progress", "none")
    assert result.code == 0, result
    summary = json.loads(result.out)
    assert summary["generator"] == "asymseg.phantom" and summary["generator_version"] >= 1
    assert [c["case_id"] for c in summary["cases"]] == ["phantom_000", "phantom_001", "phantom_002"]
    for case in summary["cases"]:
        assert 0.005 <= case["core_fraction"] <= 0.10
        assert case["core_voxels"] == case["necrosis_voxels"] + case["enhancing_voxels"]
        assert set(case["contrasts"]) == {"flair", "t1c"}
        assert {"necrosis", "enhancing", "oedema"} <= set(case["contrasts"]["t1c"])
        assert case["path"].endswith(case["case_id"])


def test_manifest_records_settings_and_per_case_parameters(tmp_path):
    folders = write_phantom_cases(tmp_path, 2, size=(24, 24, 20), seed=9, spacing=(1.0, 1.0, 1.5))
    assert folders == [tmp_path / "phantom_000", tmp_path / "phantom_001"]
    manifest = read_phantom_manifest(tmp_path)
    assert manifest["seed"] == 9 and manifest["size_xyz"] == [24, 24, 20]
    assert manifest["spacing_xyz"] == [1.0, 1.0, 1.5] and manifest["channels"] == ["flair", "t1c"]
    assert manifest["tumour_core_labels"] == [1, 4]
    seg, _ = read(tmp_path / "phantom_001" / "phantom_001_seg.nii.gz")
    entry = manifest["cases"][1]
    assert entry["core_voxels"] == int(np.isin(seg, (1, 4)).sum())
    assert entry["oedema_voxels"] == int((seg == 2).sum())
    assert entry["case_seed"] == case_seed(9, 1) and entry["index"] == 1


def test_extending_a_folder_gives_the_same_cases_as_one_run(cli, tmp_path):
    one_run, extended = tmp_path / "one", tmp_path / "ext"
    assert cli("phantom", "--out", one_run, "--cases", 3, "--size", "24", "--progress", "none").code == 0
    assert cli("phantom", "--out", extended, "--cases", 2, "--size", "24", "--progress", "none").code == 0
    result = cli("phantom", "--out", extended, "--cases", 1, "--first-index", 2, "--size", "24", "--progress", "none")
    assert result.code == 0, result
    a, _ = read(one_run / "phantom_002" / "phantom_002_t1ce.nii.gz")
    b, _ = read(extended / "phantom_002" / "phantom_002_t1ce.nii.gz")
    np.testing.assert_array_equal(a, b)
    assert [c["case_id"] for c in read_phantom_manifest(extended)["cases"]] == [
        "phantom_000", "phantom_001", "phantom_002"]


def test_existing_case_folders_are_refused_unless_overwrite(cli, tmp_path):
    out = tmp_path / "p"
    assert cli("phantom", "--out", out, "--cases", 2, "--size", "24", "--progress", "none").code == 0
    marker = out / "phantom_000" / "note.txt"
    marker.write_text("mine")
    result = cli("phantom", "--out", out, "--cases", 2, "--size", "24", "--progress", "none")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert f"{out / 'phantom_000'}: case folder exists" in result.err and "--overwrite" in result.err
    assert marker.exists()
    result = cli("phantom", "--out", out, "--cases", 2, "--size", "24", "--overwrite", "--progress", "none")
    assert result.code == 0, result
    assert not marker.exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_folder_written_with_other_settings_is_refused(cli, tmp_path):
    out = tmp_path / "p"
    assert cli("phantom", "--out", out, "--cases", 1, "--size", "24", "--progress", "none").code == 0
    result = cli("phantom", "--out", out, "--cases", 1, "--first-index", 1, "--size", "32", "--progress", "none")
    assert result.code == 2
    assert "phantom.json: the folder holds phantoms written with size_xyz [24, 24, 24] (asked [32, 32, 32])" in result.err


@pytest.mark.parametrize(("args", "message"), [
    (("--size", "8"), "each axis must be an integer in 16..1024"),
    (("--size", "32,32"), "--size '32,32': expected one number or 3 comma-separated numbers"),
    (("--size", "big"), "--size 'big': not an integer"),
    (("--spacing", "1,-1,1"), "spacing [1.0, -1.0, 1.0]: expected 3 positive finite numbers"),
    (("--channels", "3"), "--channels 3: expected 2, 4 or a list of names"),
    (("--channels", "flair,dwi"), "unknown channel name 'dwi'"),
    (("--cases", "0"), "number of phantom cases must be 1..100000, got 0"),
    (("--seed", "-2"), "phantom seed must be a non-negative integer, got -2"),
])
def test_bad_options_exit_2_with_one_line(cli, tmp_path, args, message):
    base = {"--out": str(tmp_path / "p"), "--cases": "1", "--size": "24"}
    options = dict(base)
    options.update(dict(zip(args[::2], args[1::2])))
    result = cli("phantom", *[x for kv in options.items() for x in kv], "--progress", "none")
    assert result.code == 2, result
    assert result.err.count("\n") == 1 and message in result.err, result.err
    assert not (tmp_path / "p" / "phantom_000").exists()


def test_out_path_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(InputError, match=r"file\.txt: exists and is not a folder"):
        write_phantom_cases(target, 1, size=(24, 24, 24))


def test_progress_jsonl_has_start_one_event_per_case_and_done(cli, tmp_path):
    result = cli("phantom", "--out", tmp_path / "p", "--cases", 2, "--size", "24", "--progress", "jsonl")
    assert result.code == 0, result
    events = [json.loads(line) for line in result.out.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["start", "progress", "progress", "done"]
    assert [e.get("done") for e in events[1:3]] == [1, 2] and events[1]["total"] == 2
    assert events[1]["case_id"] == "phantom_000" and 0.005 <= events[1]["core_fraction"] <= 0.10


def test_cancel_stops_before_the_next_case_and_keeps_finished_ones(tmp_path):
    token = CancelToken()

    def on_event(event):
        if event.kind == "progress" and event.done == 1:
            token.cancel("stop")

    with pytest.raises(Cancelled, match="stop"):
        write_phantom_cases(tmp_path, 3, size=(24, 24, 24), on_event=on_event, cancel=token)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom.json", "phantom_000"]
    assert [c["case_id"] for c in read_phantom_manifest(tmp_path)["cases"]] == ["phantom_000"]


def test_a_missing_or_foreign_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"phantom\.json: no phantom manifest"):
        read_phantom_manifest(tmp_path)
    (tmp_path / "phantom.json").write_text(json.dumps({"cases": []}))
    with pytest.raises(InputError, match=r"phantom\.json: not a phantom manifest"):
        read_phantom_manifest(tmp_path)


@pytest.mark.slow
def test_subprocess_writes_cases_and_info_reads_them(asymseg_proc, tmp_path):
    out = tmp_path / "p"
    proc = asymseg_proc("phantom", "--out", out, "--cases", 1, "--size", "32", "--progress", "none", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "phantom_000: core " in proc.stdout
    info = asymseg_proc("info", out / "phantom_000", "--json", timeout=300)
    assert info.returncode == 0, info.stderr
    report = json.loads(info.stdout)
    entry = read_phantom_manifest(out)["cases"][0]
    assert report["label"]["values"] == [0, 1, 2, 4]
    assert report["brain_voxels"] == entry["brain_voxels"]
    assert report["tumour_core_voxels"] == entry["core_voxels"]


def test_vessels_are_recorded_in_the_manifest_and_a_plain_folder_refuses_them(cli, tmp_path):
    out = tmp_path / "p"
    assert cli("phantom", "--out", out, "--cases", 1, "--size", "32", "--progress", "none").code == 0
    assert read_phantom_manifest(out)["vessels"] is False
    result = cli("phantom", "--out", out, "--cases", 1, "--first-index", 1, "--size", "32", "--vessels",
                 "--progress", "none")
    assert result.code == 2
    assert "phantom.json: the folder holds phantoms written with vessels False (asked True)" in result.err
    with_vessels = tmp_path / "v"
    result = cli("phantom", "--out", with_vessels, "--cases", 1, "--size", "32", "--vessels", "--progress", "none")
    assert result.code == 0, result
    manifest = read_phantom_manifest(with_vessels)
    assert manifest["vessels"] is True and manifest["cases"][0]["vessels"]["cortical_veins"] >= 6
    plain, _ = read(out / "phantom_000" / "phantom_000_t1ce.nii.gz")
    drawn, _ = read(with_vessels / "phantom_000" / "phantom_000_t1ce.nii.gz")
    assert (drawn > plain).sum() > 20  # the same case, brighter where the vessels are
    labels = [read(folder / "phantom_000" / "phantom_000_seg.nii.gz")[0] for folder in (out, with_vessels)]
    np.testing.assert_array_equal(*labels)


def test_a_folder_written_before_vessels_existed_counts_as_without_them(cli, tmp_path):
    out = tmp_path / "p"
    assert cli("phantom", "--out", out, "--cases", 1, "--size", "24", "--progress", "none").code == 0
    manifest = json.loads((out / "phantom.json").read_text())
    del manifest["vessels"]
    (out / "phantom.json").write_text(json.dumps(manifest))
    result = cli("phantom", "--out", out, "--cases", 1, "--first-index", 1, "--size", "24", "--progress", "none")
    assert result.code == 0, result
