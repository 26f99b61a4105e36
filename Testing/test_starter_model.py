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
#: The starter model learned from real scans only; on the fixed phantom below it gave DSC 0.663,
#: sensitivity 0.561 and precision 0.812 (0.24 ml) with its operating point when it was installed.
MIN_PHANTOM_DSC = 0.55
#: Leave-one-out DSC (mean of the two folds, operating point from the other fold) above the
#: two-threshold heuristic's mean on the same cases, in DSC points.
MIN_MARGIN_OVER_HEURISTIC = 0.05
#: On the external scan (``external_check.py``): the share of the mask in the lesion's
#: neighbourhood, the share of the FLAIR-bright lesion it covers, and the share of the enhancing
#: voxels near the lesion it covers.
MIN_NEAR_LESION = 0.8
MAX_LESION_COVERED = 0.5
MIN_ENHANCING_COVERED = 0.3

@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((MODEL_DIR / "model.json").read_text(encoding="utf-8"))


def test_the_starter_model_is_a_card_and_safetensors_weights_under_10_mb():
    assert sorted(p.name for p in MODEL_DIR.iterdir()) == ["model.json", "model.safetensors"]
    assert (MODEL_DIR / "model.safetensors").stat().st_size <= 10 * 1024 * 1024


def test_the_starter_model_loads_by_name_with_verified_weights_as_the_original_deepmedic():
    from asymseg.modelfile import sha256_file
    from asymseg.nets import DEFAULT_HPARAMS
    from asymseg.registry import load_model

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
    settings = json.loads((RECIPE / "final.json").read_text())
    assert prov["recipe"] == "recipes/starter/train.sh" and prov["settings"] == settings
    assert prov["data"]["train"] == ["brats_2013_pat0005_1", "brats_2013_pat0006_1"] and prov["data"]["val"] == []
    assert "deepmedic/deepmedic" in prov["data"]["source"] and prov["data"]["label_convention"] == "brats2015"
    # The entry of final.json's comparison: a technique, from scratch or (<technique>-phantoms)
    # fine-tuned from the phantom base, which the card then describes.
    assert prov["entry"] == settings["technique"]
    assert prov["technique"]["name"] == settings["technique"].removesuffix("-phantoms")
    if settings["technique"].endswith("-phantoms"):
        base = prov["base_model"]
        assert base["recipe"] == "recipes/starter/phantom_base.sh" and base["technique"] == "ce"
        assert base["iterations"] == settings["phantom_base"]["iterations"]
        assert base["phantoms"]["cases"] == settings["phantom_base"]["cases"]
        assert base["phantoms"]["vessels"] == settings["phantom_base"]["vessels"]
        assert ",".join(map(str, base["phantoms"]["size_xyz"])) == settings["phantom_base"]["size"]
        assert "pre-trained on" in card["description"]
    else:
        assert prov["base_model"] is None and "from scratch" in card["description"]
    assert prov["iterations"] == settings["stop_at"] and prov["schedule_iterations"] == settings["iterations"]
    for key in ("dsc", "sensitivity", "precision"):
        assert 0.0 <= prov["validation"][key] <= 1.0
    assert "leave-one-out" in prov["validation_note"] and "other fold" in prov["validation_note"]
    assert re.search(r"CC BY-NC-SA 3\.0.*non-commercial use only", prov["license_note"])
    cited = " ".join(prov["cite"])
    assert "1907.10982" in cited and "Menze" in cited and "DeepMedic" in cited


def test_the_leave_one_out_numbers_on_the_card_beat_the_two_threshold_heuristic(card):
    loo = card["provenance"]["leave_one_out"]
    settings = json.loads((RECIPE / "final.json").read_text())
    assert loo["iteration"] == settings["stop_at"]
    assert set(loo["techniques"]) >= {settings["technique"]}
    # The technique is the one the rule of final.json ranks first (mean cross-fold DSC over the
    # scored snapshots), among every technique compared.
    assert [r["technique"] for r in loo["ranking"]][0] == settings["technique"]
    assert {r["technique"] for r in loo["ranking"]} == set(settings["compare"])
    chosen = loo["techniques"][settings["technique"]]
    heuristic = {h["case_id"]: h["dsc"] for h in loo["heuristic"]}
    assert set(heuristic) == {"brats_2013_pat0005_1", "brats_2013_pat0006_1"}
    honest = {fold["case_id"]: fold["cross_fold"]["dsc"] for fold in chosen.values()}
    assert set(honest) == set(heuristic)
    # The network with the operating point chosen on the other fold beats the heuristic on average.
    assert sum(honest.values()) / 2 > sum(heuristic.values()) / 2 + MIN_MARGIN_OVER_HEURISTIC
    assert card["provenance"]["validation"]["dsc"] == pytest.approx(sum(honest.values()) / 2, abs=1e-3)


def test_the_operating_point_was_chosen_on_the_leave_one_out_folds(card):
    from asymseg.operating import OperatingPoint

    point = OperatingPoint.from_dict(card["operating_point"])
    technique = card["provenance"]["technique"]["name"]
    assert point.chosen_on == "validation"
    assert sorted(point.validation["cases"]) == ["brats_2013_pat0005_1", "brats_2013_pat0006_1"]
    assert sorted(point.validation["models"]) == [f"loo-{technique}-{fold}-{card['provenance']['iterations']}"
                                                  for fold in ("5to6", "6to5")]  # names, not work paths
    steps = point.validation["steps"]
    assert all(final >= first - 1e-9 for final, first in zip(steps[-1]["dsc"], steps[0]["dsc"]))
    assert f"dz > {point.threshold:g}" in card["description"]


def test_the_committed_recipe_is_the_one_that_made_the_model(card):
    settings = json.loads((RECIPE / "final.json").read_text())
    assert card["provenance"]["settings"] == settings, "final.json changed after the model was trained"
    train_sh = (RECIPE / "train.sh").read_text()
    for stage in ("phantom_base.sh", "loo.py", "loo_eval.py", "finalize.py", "operating-point --model", "--fold-model"):
        assert stage in train_sh
    readme = (RECIPE / "README.md").read_text()
    assert "leave-one-out" in readme.lower() and "final.json" in readme


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


def test_the_starter_model_segments_an_unseen_phantom_with_its_operating_point(tmp_path, asymseg_proc):
    made = asymseg_proc("phantom", "--out", tmp_path / "cases", "--cases", 1, "--size", 64, "--seed", 99,
                        "--progress", "none")
    assert made.returncode == 0, made.stderr
    case = tmp_path / "cases" / "phantom_000"
    output = tmp_path / "seg.nii.gz"
    proc = asymseg_proc("--threads", 2, "segment", "--model", STARTER_MODEL, "--case", case, "--output", output,
                        "--evaluate", "--json", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["cases"][0]
    assert result["operating_point"]["chosen_on"] == "validation"
    metrics = result["metrics"]
    assert metrics["dsc"] >= MIN_PHANTOM_DSC, metrics
    labels = sitk.ReadImage(str(output))
    flair = sitk.ReadImage(str(case / "phantom_000_flair.nii.gz"))
    assert labels.GetSize() == flair.GetSize() and labels.GetOrigin() == flair.GetOrigin()
    assert set(np.unique(sitk.GetArrayFromImage(labels)).tolist()) <= {0, 1}


@pytest.mark.slow
@pytest.mark.data
def test_on_an_unlabelled_external_scan_the_mask_is_core_sized_not_the_oedema(brats2015, tmp_path):
    import subprocess
    import sys

    external = brats2015.parent / "external" / "BraTS-GLI-00001-000"
    if not external.is_dir():
        pytest.skip("../shared/data/external is absent")
    proc = subprocess.run([sys.executable, str(RECIPE / "external_check.py"), "--model", STARTER_MODEL, "--out",
                           str(tmp_path), "--case", str(external), "--threads", "2"],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    # The FLAIR-bright lesion (oedema + tumour) is about 90 ml. A core mask lies at the lesion, is
    # smaller than it, covers a minority of it (the oedema is left out) and most of the enhancing
    # rim. The phantom base alone marked the venous sinuses instead (94% of its mask elsewhere).
    assert report["core_near_lesion"] > MIN_NEAR_LESION, report
    assert report["core_ml"] < report["flair_bright_ml"], report
    assert report["flair_bright_covered_by_core"] < MAX_LESION_COVERED, report
    assert report["enhancing_covered_by_core"] > MIN_ENHANCING_COVERED, report


def test_the_external_lesion_is_the_bright_blob_not_the_bright_cortical_rim():
    import importlib.util

    spec = importlib.util.spec_from_file_location("external_check", RECIPE / "external_check.py")
    external_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(external_check)
    # A ball of brain (radius 30 voxels of 1.5 mm) whose outer 3 mm are FLAIR-bright, as on a raw
    # scan, with a bright lesion (radius 8) touching that rim and one isolated bright voxel.
    grid = np.indices((72, 72, 72)).astype(np.float32)
    radius = np.sqrt(((grid - 36.0) ** 2).sum(axis=0))
    brain = radius < 30
    lesion_true = np.sqrt(((grid - np.array([36.0, 36.0, 55.0])[:, None, None, None]) ** 2).sum(axis=0)) < 8
    flair = np.where(brain, -0.5, 0.0).astype(np.float32)
    flair[brain & (radius >= 28)] = 2.0
    flair[lesion_true & brain] = 2.5
    flair[36, 20, 36] = 3.0
    lesion, near = external_check.lesion_regions(flair, brain, (1.5, 1.5, 1.5))
    # The lesion is the blob seen at least 5 mm inside the brain (the rim and the speck are not in it).
    deep = lesion_true & (radius < 30 - external_check.EDGE_MM / 1.5)
    assert not (lesion & (radius >= 28)).any() and not lesion[36, 20, 36]
    assert (lesion & deep).sum() / deep.sum() > 0.9 and (lesion & ~lesion_true).sum() == 0
    # Its neighbourhood reaches 10 mm (about 6.7 voxels) beyond it, inside the brain.
    assert near[lesion].all() and not near[~brain].any()
    assert near[36, 36, 48 - 6] and not near[36, 36, 48 - 8]  # the blob begins at x = 48
    empty_lesion, empty_near = external_check.lesion_regions(np.zeros_like(flair), brain, (1.5, 1.5, 1.5))
    assert not empty_lesion.any() and not empty_near.any()


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


def _scores(dsc_by_technique: dict[str, float], card: dict) -> dict:
    """A loo_eval result with every compared technique at every scored snapshot, cross-fold DSC given."""
    settings = card["provenance"]["settings"]
    snapshots = {}
    for technique, dsc in dsc_by_technique.items():
        for iteration in sorted({*settings["score_at"], settings["stop_at"]}):
            metrics = {"dsc": dsc, "sensitivity": dsc, "precision": dsc, "volume_ml": 10.0, "oedema_marked": 0.1}
            snapshots[f"{technique}@{iteration}"] = {
                "technique": technique, "iteration": iteration, "tta_considered": False,
                "folds": {fold: {"case_id": f"case-{fold}", "argmax": metrics, "cross_fold": metrics,
                                 "both_folds": metrics} for fold in ("5to6", "6to5")}}
    return {"snapshots": snapshots, "heuristic": card["provenance"]["leave_one_out"]["heuristic"]}


def test_refreshing_the_card_rewrites_only_its_leave_one_out_record_and_refuses_a_new_winner(card, tmp_path):
    import shutil
    import subprocess
    import sys

    model = shutil.copytree(MODEL_DIR, tmp_path / "model")
    compare = card["provenance"]["settings"]["compare"]
    shipped = card["provenance"]["entry"]

    def refresh(scores):
        (tmp_path / "scores.json").write_text(json.dumps(scores))
        return subprocess.run([sys.executable, str(RECIPE / "finalize.py"), "--refresh", str(model), "--loo-eval",
                               str(tmp_path / "scores.json")], capture_output=True, text=True, timeout=300)

    others = [t for t in compare if t != shipped]
    loser = refresh(_scores({shipped: 0.3, **{t: 0.6 for t in others}}, card))
    assert loser.returncode != 0 and f"the rule now picks {others[0]}, not the shipped {shipped}" in loser.stderr
    assert json.loads((model / "model.json").read_text()) == card  # refused: nothing written
    missing = refresh(_scores({shipped: 0.6}, card))
    assert missing.returncode != 0 and "the scores lack" in missing.stderr

    done = refresh(_scores({shipped: 0.6, **{t: 0.3 for t in others}}, card))
    assert done.returncode == 0, done.stderr
    after = json.loads((model / "model.json").read_text())
    changed = {k for k in after["provenance"] if after["provenance"][k] != card["provenance"].get(k)}
    assert changed <= {"settings", "leave_one_out"}
    assert {k: v for k, v in after.items() if k != "provenance"} == {k: v for k, v in card.items() if k != "provenance"}
    record = after["provenance"]["leave_one_out"]
    assert [r["technique"] for r in record["ranking"]] == [shipped, *others]
    assert record["ranking"][0]["mean_cross_fold_dsc"] == 0.6 and set(record["techniques"]) == set(compare)


def test_the_phantom_base_recipe_pretrains_a_base_that_resumes_and_is_scored_on_both_cases(tmp_path):
    import shutil
    import subprocess
    import sys

    script = RECIPE / "phantom_base.sh"
    usage = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--base-model" in usage.stdout and "--smoke" in usage.stdout
    assert "--vessels" in usage.stdout
    bad = subprocess.run(["bash", str(script), "--fast"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --fast" in bad.stderr

    work = tmp_path / "base"
    run = subprocess.run(["bash", str(script), "--smoke", "--work", str(work), "--threads", "1"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    result = json.loads((work / "base-result.json").read_text())
    assert result["iterations"] == result["total_iterations"] == 4
    base = json.loads((work / "base" / "model.json").read_text())
    assert [c["name"] for c in base["channels"]] == ["flair", "t1c"]
    assert base["target"]["convention"] == "brats2017" and base.get("operating_point") is None
    assert len((work / "train-cases.txt").read_text().split()) == 3
    # Given again, the finished run is not trained again and the base is unchanged.
    weights = (work / "base" / "model.safetensors").read_bytes()
    again = subprocess.run(["bash", str(script), "--smoke", "--work", str(work), "--threads", "1"],
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    assert (work / "base" / "model.safetensors").read_bytes() == weights
    # Phantoms written without vessels are not taken for phantoms with them.
    assert json.loads((work / "phantoms" / "phantom.json").read_text())["vessels"] is False
    mixed = subprocess.run(["bash", str(script), "--smoke", "--vessels", "--work", str(work), "--threads", "1"],
                           capture_output=True, text=True, timeout=900)
    assert mixed.returncode == 2 and "written with vessels 0, asked 1; use another --work" in mixed.stderr

    # The base, trained on neither real case, is scored on both by loo_eval.py --model (here two
    # more phantoms under the BRATS 2015 case names: their labels 1, 2, 4 are BRATS 2015 labels too).
    data = tmp_path / "data"
    for index, case_id in ((7, "brats_2013_pat0005_1"), (8, "brats_2013_pat0006_1")):
        subprocess.run([sys.executable, "-m", "asymseg", "phantom", "--out", str(tmp_path / "cases"), "--cases", "1",
                        "--size", "40", "--seed", "5", "--first-index", str(index)], check=True, capture_output=True)
        shutil.move(str(tmp_path / "cases" / f"phantom_{index:03d}"), str(data / case_id))
    out = tmp_path / "scores.json"
    scored = subprocess.run([sys.executable, str(RECIPE / "loo_eval.py"), "--work", str(tmp_path / "no-folds"),
                             "--techniques", "", "--model", f"phantoms={work / 'base'}", "--data", str(data),
                             "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert scored.returncode == 0, scored.stderr
    row = json.loads(out.read_text())["snapshots"]["phantoms@4"]
    assert row["held_out_both"] and row["iteration"] == 4
    # Fold 5to6 scores the case in the pat0006 folder, 6to5 the one in pat0005 (ids from the files).
    assert [row["folds"][f]["case_id"] for f in ("5to6", "6to5")] == ["phantom_008", "phantom_007"]
    for fold in row["folds"].values():
        assert {"argmax", "cross_fold", "both_folds"} <= set(fold) and "threshold" in fold["cross_fold"]["point"]

    # Fold runs from a base are scored under another name (--rename), beside the earlier scores.
    for fold, held_out in (("5to6", "brats_2013_pat0006_1"), ("6to5", "brats_2013_pat0005_1")):
        fold_dir = tmp_path / "folds" / "ce" / fold
        shutil.copytree(work / "base", fold_dir / "model")
        (fold_dir / "snapshots").mkdir()
        shutil.copyfile(work / "base" / "model.safetensors", fold_dir / "snapshots" / "iter-00004.safetensors")
        (fold_dir / "settings.json").write_text(json.dumps({"held_out": held_out, "train": "the other"}))
    renamed = subprocess.run([sys.executable, str(RECIPE / "loo_eval.py"), "--work", str(tmp_path / "folds"),
                              "--techniques", "ce", "--rename", "ce=ce-phantoms", "--data", str(data),
                              "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert renamed.returncode == 0, renamed.stderr
    scores = json.loads(out.read_text())["snapshots"]
    assert sorted(scores) == ["ce-phantoms@4", "phantoms@4"] and scores["ce-phantoms@4"]["technique"] == "ce-phantoms"
    assert scores["ce-phantoms@4"]["folds"]["5to6"]["argmax"] == row["folds"]["5to6"]["argmax"]  # the same weights
