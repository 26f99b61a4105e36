"""``asymseg models``: create, show, list, import, export, path; errors and exit codes."""

from __future__ import annotations

import json
import zipfile

import pytest

from asymseg import constants as C
from asymseg.modelfile import CARD_FILE, load_model


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_create_show_list_through_a_real_subprocess(tmp_path, home, asymseg_proc):
    env = {"ASYMSEG_HOME": str(home)}
    out_dir = tmp_path / "fresh"
    done = asymseg_proc("models", "create", "--architecture", "deepmedic", "--channels", "flair,t1ce",
                        "--out", out_dir, "--seed", "4", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    card = summary["card"]
    assert card["name"] == "fresh" and card["architecture"]["name"] == "deepmedic"
    assert [c["name"] for c in card["channels"]] == ["flair", "t1c"]
    assert card["target"]["convention"] == "brats2017" and card["target"]["classes"][1]["labels"] == [1, 4]
    assert card["provenance"]["init_seed"] == 4 and card["provenance"]["iterations"] == 0

    shown = asymseg_proc("models", "show", out_dir, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    # 2 input channels instead of 4: 2 x 30 x 27 fewer first-layer weights in each of the two pathways.
    assert info["parameters"] == 662_702 - 2 * (2 * 30 * 27)
    assert info["geometry"]["training_input_size"] == 57 and info["weights_verified"] is True

    imported = asymseg_proc("models", "import", out_dir, "--name", "mine", env=env)
    assert imported.returncode == 0, imported.stderr
    listed = asymseg_proc("models", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    names = [(m["name"], m["source"]) for m in json.loads(listed.stdout)["models"]]
    assert ("mine", "user") in names


def test_create_with_hparams_and_foreground_labels(cli, tmp_path, home):
    r = cli("models", "create", "--architecture", "unet", "--channels", "flair", "--foreground-labels", "1,2,4",
            "--hparam", "depth=2", "--hparam", "base_features=4", "--hparam", "training_output_size=8",
            "--out", tmp_path / "u", "--name", "u-net")
    assert r.code == 0, r.err
    loaded = load_model(tmp_path / "u")
    assert loaded.card.name == "u-net" and loaded.card.target.classes[1].labels == (1, 2, 4)
    assert loaded.net.hparams["depth"] == 2
    r = cli("models", "show", tmp_path / "u")
    assert r.code == 0 and "unet" in r.out and "tumour_core (labels [1, 2, 4]) rare" in r.out


def test_text_list_show_path_export(cli, tmp_path, home):
    assert cli("models", "path").out.strip() == str(home / "models")
    before = [line.split() for line in cli("models", "list").out.splitlines()[1:] if line and not line.startswith("(")]
    assert before and all(row[1] == "bundled" for row in before)  # an empty user folder: bundled models only
    assert cli("models", "create", "--architecture", "unet", "--channels", "flair", "--hparam", "depth=2",
               "--hparam", "training_output_size=8", "--out", tmp_path / "m").code == 0
    assert cli("models", "import", tmp_path / "m").code == 0
    r = cli("models", "list")
    rows = [line.split() for line in r.out.splitlines()[1:] if line and not line.startswith("(")]
    assert r.code == 0 and [row[:4] for row in rows if row[1] == "user"] == [["m", "user", "unet", "flair"]]
    assert len(rows) == len(before) + 1
    r = cli("models", "export", "m", "--out", tmp_path / "m.zip")
    assert r.code == 0, r.err
    assert sorted(zipfile.ZipFile(tmp_path / "m.zip").namelist()) == ["m/model.json", "m/model.safetensors"]


def test_errors_exit_with_the_model_code_and_one_line(cli, tmp_path, home):
    r = cli("models", "show", "missing-model")
    assert r.code == C.EXIT_MODEL and r.err.count("\n") == 1
    assert "unknown model 'missing-model'" in r.err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CARD_FILE).write_text("[1, 2")
    r = cli("models", "show", bad)
    assert r.code == C.EXIT_MODEL and "invalid JSON" in r.err
    r = cli("models", "create", "--architecture", "unet", "--channels", "flair", "--hparam", "depth=0",
            "--out", tmp_path / "x")
    assert r.code == C.EXIT_USAGE and "depth must be an integer >= 1" in r.err
    r = cli("models", "create", "--architecture", "unet", "--channels", "brain", "--out", tmp_path / "x")
    assert r.code == C.EXIT_USAGE and "unknown channel name 'brain'" in r.err
    assert not (tmp_path / "x").exists()


def test_show_counts_the_cases_of_each_training_stage(cli, home):
    r = cli("models", "show", "asymseg-starter-deepmedic")
    assert r.code == 0, r.err
    line = next(line for line in r.out.splitlines() if line.startswith("training:"))
    assert '"name": "ce"' in line and "iterations 2000," in line
    assert "cases train 2, val 0," in line
    assert line.endswith("base model phantom base")  # the card's record of the base, in a word
    listed = json.loads(cli("models", "list", "--json").out)["models"]
    assert next(m for m in listed if m["name"] == "asymseg-starter-deepmedic")["technique"] == "ce"
