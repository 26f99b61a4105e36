"""The panels list models from their cards: no engine process, no torch, so a module opens at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from AsymSegLib import models

pytestmark = pytest.mark.slicer

REPO = Path(__file__).resolve().parents[2]


def test_models_come_from_the_cards_without_starting_any_process(tmp_path, monkeypatch):
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))
    created = subprocess.run([sys.executable, "-m", "asymseg", "models", "create", "--architecture", "deepmedic",
                              "--channels", "flair,t1c", "--out", str(tmp_path / "home" / "models" / "tiny")],
                             capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stderr
    noWeights = tmp_path / "home" / "models" / "no-weights"
    noWeights.mkdir()
    (noWeights / "model.json").write_text(json.dumps({"name": "no-weights", "channels": ["flair"],
                                                      "weights": {"file": "model.safetensors"}}))
    (tmp_path / "home" / "models" / "tiny.run").mkdir()  # a run folder: no card

    def noProcess(*args, **kwargs):
        raise AssertionError("listing models started a process")

    monkeypatch.setattr(subprocess, "Popen", noProcess)
    monkeypatch.setattr(subprocess, "run", noProcess)
    listed = models.listModelsFromCards()
    assert [(m.name, m.source) for m in listed] == [("asymseg-starter-deepmedic", "bundled"), ("tiny", "user")]
    starter = listed[0]
    bundled = json.loads((REPO / "AsymSeg" / "asymseg" / "models" / "asymseg-starter-deepmedic" / "model.json").read_text())
    assert starter.channels == ("flair", "t1c") and starter.card["operating_point"] == bundled["operating_point"]
    assert starter.card["operating_point"]["threshold"] < 0  # the starter's point, not the argmax default
    # the same list as the engine's, which checks each model fully
    monkeypatch.undo()
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))
    assert [(m.name, m.source) for m in models.listModels()] == [(m.name, m.source) for m in listed]


def test_listing_models_imports_neither_torch_nor_the_engine(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "AsymSeg")!r})
        from AsymSegLib import models
        assert models.listModelsFromCards()
        assert "torch" not in sys.modules and "asymseg" not in sys.modules, sorted(sys.modules)
    """)
    env = {**os.environ, "ASYMSEG_HOME": str(tmp_path)}
    env.pop("PYTHONPATH", None)
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize("moduleName", ["AsymSeg", "AsymSegTraining"])
def test_the_module_logics_list_models_from_the_cards(moduleFile, moduleName, monkeypatch, tmp_path):
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path))
    logic = getattr(moduleFile(moduleName), f"{moduleName}Logic")
    assert [m.name for m in logic.listModels()] == ["asymseg-starter-deepmedic"]


def test_the_sample_cases_are_named_as_the_starters_training_cases_and_the_panel_notices_them():
    from AsymSegLib import sampledata

    starter = {m.name: m for m in models.listModelsFromCards()}["asymseg-starter-deepmedic"]
    trained = sampledata.trainingCases(starter.card)
    assert sorted(trained) == sorted(c.caseId for c in sampledata.SAMPLE_CASES)
    assert all("(a starter-model training case)" in c.sampleName for c in sampledata.SAMPLE_CASES)
    note = sampledata.trainedOnNote(starter.name, starter.card, ["pat0005_flair", "pat0005_t1c"])
    assert note.startswith("brats_2013_pat0005_1 is one of the cases asymseg-starter-deepmedic was trained on")
    assert sampledata.trainedOnNote(starter.name, starter.card, ["BraTS-GLI-00001-000-t2f"]) is None
    assert sampledata.trainedOnNote("m", {}, ["pat0005_flair"]) is None  # a card without provenance
