"""``asymseg demo`` (what ``make demo`` runs): end to end on small phantoms, its output folder, its errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from asymseg import constants as C
from asymseg.demo import DEMO_TECHNIQUES, RESULT_FILE, STARTER_MODEL, DemoSettings, prepare_out_dir
from asymseg.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TINY_DEEPMEDIC = ["normal_features=[8,8,8,8]", "lowres_features=[8,8,8,8]", "fc_features=[16]", "dropout=[0,0]"]


def _check_demo_folder(out: Path, stdout: str, *, model_name: str) -> dict:
    """The checks every demo run must pass; returns demo.json."""
    lines = stdout.rstrip("\n").splitlines()
    assert lines[-1] == f"output folder: {out.resolve()}"
    result = json.loads((out / RESULT_FILE).read_text())
    assert result["model"]["name"] == model_name
    assert set(result["techniques"]) == set(DEMO_TECHNIQUES)
    # The starter model's segmentation of the first held-out case, in that case's geometry.
    starter = result["starter"]
    assert starter["case_id"] == result["cases"]["test"][0]
    for key in ("dsc", "sensitivity", "precision"):
        assert starter[key] is None or 0.0 <= starter[key] <= 1.0
    seg = sitk.ReadImage(starter["segmentation"])
    flair = sitk.ReadImage(str(next((out / "cases" / starter["case_id"]).glob("*_flair.nii.gz"))))
    assert seg.GetSize() == flair.GetSize() and seg.GetSpacing() == flair.GetSpacing()
    assert set(np.unique(sitk.GetArrayFromImage(seg)).tolist()) <= {0, 1}
    assert f"{model_name} on {starter['case_id']}: DSC {starter['dsc']:.3f}" in stdout
    # Both fine-tuned models, their held-out metrics, logit shifts and figures.
    assert any(line.split() == ["starter", *DEMO_TECHNIQUES] for line in lines)
    assert set(starter["per_case"]) == set(result["cases"]["test"])
    assert starter["per_case"][starter["case_id"]]["dsc"] == starter["dsc"]
    for case_id in result["cases"]["test"]:
        assert (out / "starter" / f"{case_id}_seg.nii.gz").is_file()
    for technique, entry in result["techniques"].items():
        assert Path(entry["model"]) == (out / "models" / technique).resolve()
        assert (out / "models" / technique / "model.safetensors").is_file()
        assert set(entry["per_case"]) == set(result["cases"]["test"])
        for key in ("dsc", "sensitivity", "precision"):
            assert entry[key] is None or 0.0 <= entry[key] <= 1.0
        assert isinstance(entry["rare_shift"], float) and isinstance(entry["nonrare_shift"], float)
        figure = Path(entry["figure"])
        assert figure == (out / "analysis" / technique / "logits.png").resolve()
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        analysis = json.loads((out / "analysis" / technique / "analysis.json").read_text())
        assert analysis["meta"]["cases"] == {"train": result["cases"]["train"], "test": result["cases"]["test"]}
    for label, key in (("DSC", "dsc"), ("tumour logit shift", "rare_shift")):
        row = next(line for line in lines if line.strip().startswith(label))
        signed = key.endswith("shift")
        expected = [f"{result['techniques'][t][key]:{'+.3f' if signed else '.3f'}}" for t in DEMO_TECHNIQUES]
        starter_cell = "n/a" if signed else f"{starter['mean'][key]:.3f}"
        assert row.split()[-len(DEMO_TECHNIQUES) - 1:] == [starter_cell, *expected]
    return result


@pytest.mark.slow
def test_quick_demo_with_the_bundled_starter_model_ends_naming_its_output_folder(tmp_path, asymseg_proc):
    out = tmp_path / "demo-output"
    proc = asymseg_proc("--threads", 2, "demo", "--quick", "--out", out, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _check_demo_folder(out, proc.stdout, model_name=STARTER_MODEL)
    assert result["settings"]["size"] == 48 and result["settings"]["iterations"] == 3
    assert result["settings"]["lr"] == 1e-4
    assert len(result["cases"]["train"]) == 2 and len(result["cases"]["test"]) == 1
    # The quick demo shows the idea: the starter model and both fine-tuned models find the tumour core
    # (at the from-scratch learning rate, 3 iterations left DSC 0.09 and 0.06: most of the brain marked).
    assert result["starter"]["dsc"] >= 0.1
    assert all(result["techniques"][t]["dsc"] >= 0.1 for t in DEMO_TECHNIQUES), result["techniques"]
    assert "[1/4]" in proc.stderr and "[4/4] combo" in proc.stderr  # progress goes to stderr


def test_demo_starts_from_a_model_folder_and_replaces_its_earlier_output(tmp_path, cli):
    model = _tiny_model(cli, tmp_path / "tiny")
    out = tmp_path / "demo"
    args = ("--threads", 1, "demo", "--model", model, "--out", out, "--size", 32, "--iterations", 2,
            "--batch-size", 2, "--test-cases", 2, "--progress", "none")
    first = cli(*args)
    assert first.code == 0, first.err
    result = _check_demo_folder(out, first.out, model_name="tiny")
    assert len(result["cases"]["test"]) == 2
    (out / "models" / "ce" / "stale.txt").write_text("from the first run")
    again = cli(*args)
    assert again.code == 0, again.err
    assert not (out / "models" / "ce" / "stale.txt").exists()
    assert json.loads((out / RESULT_FILE).read_text())["cases"] == result["cases"]


def test_missing_bundled_starter_model_exits_3_and_says_how_to_get_it(tmp_path, cli, monkeypatch):
    import asymseg.registry

    monkeypatch.setattr(asymseg.registry, "bundled_models_dir", lambda: tmp_path / "no-models")
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))
    result = cli("demo", "--out", tmp_path / "demo")
    assert result.code == C.EXIT_MODEL
    assert re.search(rf"bundled starter model {STARTER_MODEL} is missing from .*no-models", result.err)
    assert "recipes/starter/train.sh" in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "demo").exists()  # nothing is trained from scratch instead


def _tiny_model(cli, folder: Path) -> Path:
    hparams = [arg for h in TINY_DEEPMEDIC for arg in ("--hparam", h)]
    made = cli("models", "create", "--architecture", "deepmedic", "--channels", "flair,t1c", "--out", folder, *hparams)
    assert made.code == 0, made.err
    return folder


def test_the_starter_model_refuses_phantoms_too_small_for_it_to_find_a_tumour(tmp_path, cli):
    result = cli("demo", "--quick", "--size", 24, "--out", tmp_path / "demo")
    assert result.code == C.EXIT_USAGE
    assert result.err.strip() == ("asymseg demo: error: demo size 24: the starter model finds no tumour core in "
                                  "phantoms under 32^3 voxels, so the demo would show only zeros; use --size 32 "
                                  "or more")
    assert not (tmp_path / "demo").exists()


def test_a_non_demo_folder_or_a_file_as_out_is_refused_with_exit_2(tmp_path, cli):
    model = _tiny_model(cli, tmp_path / "tiny")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = cli("demo", "--model", model, "--out", folder)
    assert result.code == C.EXIT_USAGE
    assert result.err.strip() == (f"asymseg demo: error: {folder}: a non-empty folder that is not a demo output "
                                  "folder; choose another --out")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    file_out = tmp_path / "file.txt"
    file_out.write_text("x")
    with pytest.raises(InputError, match=r"file.txt: exists and is not a folder"):
        prepare_out_dir(file_out)


def test_an_earlier_demo_folder_is_cleared_but_other_files_are_kept(tmp_path):
    out = tmp_path / "demo"
    (out / "models" / "ce").mkdir(parents=True)
    (out / RESULT_FILE).write_text("{}")
    (out / "README-mine.txt").write_text("mine")
    assert prepare_out_dir(out) == out.absolute()
    assert sorted(p.name for p in out.iterdir()) == ["README-mine.txt"]


@pytest.mark.parametrize("changes, message", [
    ({"size": 8}, r"demo size: expected an integer >= 16, got 8"),
    ({"iterations": 0}, r"demo iterations: expected an integer >= 1, got 0"),
    ({"device": "tpu"}, r"demo device: 'tpu'; expected auto, cpu or cuda"),
    ({"size": 300}, r"demo size: at most 256"),
    ({"lr": 0.0}, r"demo lr: expected a learning rate in \(0, 1\], got 0.0"),
])
def test_bad_demo_settings_are_refused_naming_the_setting(changes, message):
    with pytest.raises(InputError, match=message):
        DemoSettings(**changes)


def test_quick_settings_are_smaller_than_the_defaults():
    quick, full = DemoSettings.quick(), DemoSettings()
    assert quick.size < full.size and quick.iterations < full.iterations and quick.test_cases <= full.test_cases
    assert DemoSettings.quick(size=40).size == 40


def test_make_demo_runs_the_demo_command_in_the_makefile():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: .*\n\t\$\(PY\) -m asymseg demo --out \$\(DEMO_OUT\)$", makefile, re.M)
    assert re.search(r"^test: .*\n(\t.*\n)*\t.*-m pytest", makefile, re.M)
