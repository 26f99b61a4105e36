"""The bundled starter model: its files, its card, its recipe, and that it segments tumour core."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from asymseg.demo import STARTER_MODEL

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "AsymSeg" / "asymseg" / "models" / STARTER_MODEL
RECIPE = REPO / "recipes" / "starter"
#: On phantoms the starter model finds the tumour but over-segments it (it was fine-tuned on real
#: scans, whose appearance differs; the demo shows fine-tuning adapting it). For the fixed phantom
#: below it gave DSC 0.201, sensitivity 0.949 and precision 0.112 when it was installed.
MIN_PHANTOM_DSC = 0.15
MIN_PHANTOM_SENSITIVITY = 0.8

@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((MODEL_DIR / "model.json").read_text(encoding="utf-8"))


def test_the_starter_model_is_a_card_and_safetensors_weights_under_10_mb():
    assert sorted(p.name for p in MODEL_DIR.iterdir()) == ["model.json", "model.safetensors"]
    assert (MODEL_DIR / "model.safetensors").stat().st_size <= 10 * 1024 * 1024


def test_the_starter_model_loads_by_name_with_verified_weights_as_the_original_deepmedic():
    from asymseg.modelfile import load_model, sha256_file
    from asymseg.nets import DEFAULT_HPARAMS

    loaded = load_model(STARTER_MODEL)
    card = loaded.card
    assert loaded.path == MODEL_DIR and card.name == STARTER_MODEL
    assert card.weights_sha256 == sha256_file(MODEL_DIR / "model.safetensors")
    assert card.architecture == "deepmedic" and dict(card.hparams) == dict(DEFAULT_HPARAMS["deepmedic"])
    assert card.channels == ("flair", "t1c") and card.normalization == ("zscore-brain", "zscore-brain")
    assert card.target.names == ("background", "tumour_core") and card.target.rare == (False, True)
    assert card.target.convention == "brats2015" and card.target.classes[1].labels == (1, 3, 4)
    assert not loaded.net.training


def test_the_card_records_data_technique_iterations_validation_and_licence(card):
    prov = card["provenance"]
    assert prov["recipe"] == "recipes/starter/train.sh"
    assert prov["data"]["train"] == ["brats_2013_pat0005_1"] and prov["data"]["val"] == ["brats_2013_pat0006_1"]
    assert prov["data"]["pretrain_train"] == [f"phantom_{i:03d}" for i in range(16)]
    assert prov["data"]["pretrain_val"] == ["phantom_016", "phantom_017"]
    technique = prov["technique"]
    assert (technique["name"], technique["margin"], technique["gamma"]) == ("combo", 0.2, 2.0)
    assert technique["adversarial"] and technique["mixup"] and not technique["symmetric"]
    assert prov["stages"]["pretrain"]["technique"]["name"] == "ce"
    for key in ("dsc", "sensitivity", "precision", "specificity"):
        assert 0.0 <= prov["validation"][key] <= 1.0
    assert "not used to select the model" in prov["validation_note"]
    assert re.search(r"CC BY-NC-SA 3\.0.*non-commercial use only", prov["license_note"])
    cited = " ".join(prov["cite"])
    assert "1907.10982" in cited and "Menze" in cited and "DeepMedic" in cited
    assert "deepmedic/deepmedic" in prov["stages"]["finetune"]["data"]["source"]
    assert f"{prov['validation']['dsc']}" in card["description"]


def test_the_committed_recipe_is_the_one_that_made_the_model(card):
    stages = card["provenance"]["stages"]
    for stage, config in (("pretrain", "pretrain.json"), ("finetune", "finetune.json")):
        settings = json.loads((RECIPE / config).read_text())
        assert stages[stage]["settings"] == settings, f"{config} changed after the model was trained"
        assert stages[stage]["iterations"] == settings["iterations"]
        assert card["provenance"]["iterations"][stage] == settings["iterations"]
    assert card["provenance"]["stages"]["finetune"]["data"]["label_convention"] == "brats2015"
    train_sh = (RECIPE / "train.sh").read_text()
    assert "--config \"$HERE/pretrain.json\"" in train_sh and "--config \"$HERE/finetune.json\"" in train_sh
    readme = (RECIPE / "README.md").read_text()
    assert f"{stages['pretrain']['iterations']} iterations" in readme
    assert f"{stages['finetune']['iterations']} iterations" in readme


def test_models_list_shows_the_starter_model_as_bundled(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))
    listed = cli("models", "list", "--json")
    assert listed.code == 0, listed.err
    entry = next(m for m in json.loads(listed.out)["models"] if m["name"] == STARTER_MODEL)
    assert entry["source"] == "bundled" and entry["error"] is None
    assert entry["channels"] == ["flair", "t1c"] and entry["rare"] == [False, True]
    shown = cli("models", "show", STARTER_MODEL)
    assert shown.code == 0 and "(verified)" in shown.out


def test_the_extension_packages_the_starter_model_files():
    cmake = (REPO / "AsymSeg" / "CMakeLists.txt").read_text()
    for name in ("model.json", "model.safetensors"):
        assert f"asymseg/models/{STARTER_MODEL}/{name}" in cmake
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"models/*/*.json", "models/*/*.safetensors"' in pyproject


def test_the_starter_model_segments_the_tumour_core_of_an_unseen_phantom(tmp_path, asymseg_proc):
    made = asymseg_proc("phantom", "--out", tmp_path / "cases", "--cases", 1, "--size", 64, "--seed", 99,
                        "--progress", "none")
    assert made.returncode == 0, made.stderr
    case = tmp_path / "cases" / "phantom_000"
    output = tmp_path / "seg.nii.gz"
    proc = asymseg_proc("--threads", 2, "segment", "--model", STARTER_MODEL, "--case", case, "--output", output,
                        "--evaluate", "--json", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)["cases"][0]["metrics"]
    assert metrics["dsc"] >= MIN_PHANTOM_DSC and metrics["sensitivity"] >= MIN_PHANTOM_SENSITIVITY, metrics
    labels = sitk.ReadImage(str(output))
    flair = sitk.ReadImage(str(case / "phantom_000_flair.nii.gz"))
    assert labels.GetSize() == flair.GetSize() and labels.GetOrigin() == flair.GetOrigin()
    assert set(np.unique(sitk.GetArrayFromImage(labels)).tolist()) == {0, 1}


@pytest.mark.slow
@pytest.mark.data
def test_the_card_validation_numbers_reproduce_on_the_unseen_brats_case(brats2015, tmp_path, asymseg_proc, card):
    case = brats2015 / "brats_2013_pat0006_1"
    proc = asymseg_proc("--threads", 2, "segment", "--model", STARTER_MODEL, "--case", case,
                        "--output", tmp_path / "pat0006_seg.nii.gz", "--evaluate", "--json", "--progress", "none",
                        timeout=3600)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)["cases"][0]["metrics"]
    expected = card["provenance"]["validation"]
    for key in ("dsc", "sensitivity", "precision"):
        assert metrics[key] == pytest.approx(expected[key], abs=2e-3), key


def test_the_recipe_script_explains_itself_and_refuses_bad_options(tmp_path):
    import subprocess

    script = RECIPE / "train.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    usage = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--smoke" in usage.stdout and "--install" in usage.stdout
    bad = subprocess.run(["bash", str(script), "--fast"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --fast" in bad.stderr
    no_data = subprocess.run(["bash", str(script), "--data", str(tmp_path / "none"), "--work", str(tmp_path / "w")],
                             capture_output=True, text=True)
    assert no_data.returncode == 2 and "brats_2013_pat0005_1: no such case folder" in no_data.stderr
    assert not (tmp_path / "w").exists()
