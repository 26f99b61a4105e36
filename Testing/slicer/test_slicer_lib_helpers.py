"""Channels by name, the model registry through the engine, first-use installs and sample data."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from AsymSegLib import channels, install, models, sampledata

pytestmark = pytest.mark.slicer

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ channels
@pytest.mark.parametrize("name, channel", [
    ("Flair_subtrMeanDivStd", "flair"), ("T1c_subtrMeanDivStd", "t1c"),
    ("BraTS-GLI-00001-000-t2f", "flair"), ("BraTS-GLI-00001-000-t1c", "t1c"),
    ("BraTS-GLI-00001-000-t1n", "t1"), ("BraTS-GLI-00001-000-t2w", "t2"),
    ("Brats18_2013_2_1_t1ce", "t1c"), ("Brats18_2013_2_1_flair", "flair"), ("Brats18_2013_2_1_t2", "t2"),
    ("Brats18_2013_2_1_t1", "t1"), ("T1 post-contrast", "t1c"), ("T1Gd", "t1c"), ("ax T1+C", "t1c"),
    ("T2-FLAIR axial", "flair"), ("MPRAGE", "t1"), ("t1_weighted", "t1"), ("T2w", "t2"),
    ("brainmask", None), ("OTMultiClass", None), ("segmentation", None), ("T10 map", None),
])
def test_volume_names_denote_channels(name, channel):
    assert channels.channelOfName(name) == channel


def test_channels_are_assigned_once_each_in_scene_order():
    names = ["OTMultiClass", "T1c_subtrMeanDivStd", "Flair_subtrMeanDivStd", "second flair"]
    assert channels.assignChannels(["flair", "t1c"], names) == {"flair": "Flair_subtrMeanDivStd",
                                                                "t1c": "T1c_subtrMeanDivStd"}
    assert channels.assignChannels(["flair", "t1ce", "t2"], ["a_flair"]) == {"flair": "a_flair", "t1ce": None,
                                                                            "t2": None}
    # one channel, one unnamed volume: paired
    assert channels.assignChannels(["flair"], ["scan 1"]) == {"flair": "scan 1"}
    assert channels.assignChannels(["flair", "t1c"], ["scan 1"]) == {"flair": None, "t1c": None}
    assert channels.canonicalChannel("T1ce") == "t1c" and channels.channelTitle("t1gd") == "T1 post-contrast"


# ------------------------------------------------------------------------------ models
def test_model_list_json_is_parsed_and_invalid_entries_are_left_out():
    text = json.dumps({"bundled_dir": "/b", "user_dir": "/u", "models": [
        {"name": "starter", "source": "bundled", "path": "/b/starter", "channels": ["flair", "t1c"],
         "description": "DeepMedic", "error": None},
        {"name": "multi", "source": "user", "path": "/u/multi", "channels": ["flair"],
         "classes": ["background", "necrosis", "enhancing"], "rare": [False, True, True]},
        {"name": "broken", "source": "user", "path": "/u/broken", "error": "model.json: bad JSON"},
        {"name": "mine", "source": "user", "path": "/u/mine", "channels": [{"name": "flair"}],
         "provenance": {"technique": "combo"}},
        {"name": "listed", "source": "user", "path": "/u/listed", "technique": "a-focal"},
        {"name": "carded", "path": "/u/carded", "provenance": {"technique": {"name": "a-lm", "margin": 0.5}}},
    ]})
    listed = models.parseModelList(text)
    assert [m.name for m in listed] == ["starter", "multi", "mine", "listed", "carded"]
    assert "Technique: a-focal" in listed[3].tooltip() and "Technique: a-lm\n" in listed[4].tooltip()
    assert listed[1].classes == ("background", "necrosis", "enhancing")
    listed.pop(1)
    assert listed[0].channels == ("flair", "t1c") and listed[0].title == "starter (bundled)"
    assert listed[0].classes == ()
    assert listed[0].modelArgument() == str(Path("/b/starter"))
    assert listed[1].channels == ("flair",) and "Technique: combo" in listed[1].tooltip()
    assert [m.name for m in models.parseModelList('[{"name": "plain"}]')] == ["plain"]
    with pytest.raises(models.ModelRegistryError, match="not JSON"):
        models.parseModelList("no models")


def test_user_models_folder_follows_asymseg_home(tmp_path):
    assert models.userModelsDirectory({"ASYMSEG_HOME": str(tmp_path)}) == tmp_path / "models"
    assert models.userModelsDirectory({}) == Path.home() / ".asymseg" / "models"


def test_engine_lists_bundled_and_user_models_and_cards_read_without_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))
    folder = tmp_path / "home" / "models" / "tiny"
    created = subprocess.run([sys.executable, "-m", "asymseg", "models", "create", "--architecture", "deepmedic",
                              "--channels", "flair,t1c", "--out", str(folder)], capture_output=True, text=True,
                             timeout=300)
    assert created.returncode == 0, created.stderr
    listed = {m.name: m for m in models.listModels()}
    assert "tiny" in listed
    tiny = listed["tiny"]
    assert tiny.source == "user" and tiny.path == folder and tiny.channels == ("flair", "t1c")
    assert tiny.classes == ("background", "tumour_core")
    card = models.readModelCard(folder)
    assert card.name == "tiny" and card.channels == ("flair", "t1c") and card.path == folder
    with pytest.raises(models.ModelRegistryError, match="not a model folder"):
        models.readModelCard(tmp_path)


def test_models_are_read_from_their_folders_when_the_engine_cannot_run(tmp_path, monkeypatch):
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))
    folder = tmp_path / "home" / "models" / "mine"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"name": "mine", "channels": ["flair", "t1c"],
                                                   "target": {"names": ["background", "tumour_core"]}}))
    (tmp_path / "home" / "models" / "junk").mkdir()
    listed, problem = models.listModelsOrScan(pythonExecutable=str(tmp_path / "no-python"))
    assert "cannot start Python" in problem
    mine = [m for m in listed if m.name == "mine"]
    assert len(mine) == 1 and mine[0].source == "user" and mine[0].classes == ("background", "tumour_core")
    listedByEngine, problem = models.listModelsOrScan()
    assert problem is None  # the engine answered, and it checks cards fully: this one has no weights
    assert "mine" not in {m.name for m in listedByEngine}
    assert models.bundledModelsDirectory() == REPO / "AsymSeg" / "asymseg" / "models"


def test_engine_errors_reach_the_user_as_one_line(tmp_path):
    with pytest.raises(models.ModelRegistryError) as info:
        models.importModel(tmp_path / "missing.zip")
    assert "missing.zip" in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------ install
VERSIONS = {"torch": "2.13.0", "numpy": "2.1.0", "safetensors": "0.3.0", "tqdm": "4.66.0",
            "matplotlib": "3.9.0", "SimpleITK": "2.5.0"}


def test_missing_requirements_are_absent_or_too_old():
    assert install.missingRequirements(["safetensors>=0.4", "tqdm>=4.60", "nothere>=1"], VERSIONS.get) == [
        "safetensors>=0.4", "nothere>=1"]
    assert install.requirementName("matplotlib>=3.6") == "matplotlib"
    assert install.pinnedConstraints(VERSIONS.get) == ["numpy==2.1.0", "SimpleITK==2.5.0", "torch==2.13.0"]


def test_declining_the_install_raises_and_installs_nothing():
    calls = []
    with pytest.raises(install.DependencyError, match="cannot run without: safetensors>=0.4"):
        install.ensureDependencies(lambda text: False, calls.append, lambda r, c: calls.append(r), VERSIONS.get)
    assert calls == []


def test_accepting_installs_torch_via_the_extension_and_the_rest_with_pins():
    versions = dict(VERSIONS)
    del versions["torch"]
    questions, torchCalls, pipCalls = [], [], []
    report = install.ensureDependencies(lambda text: questions.append(text) or True, torchCalls.append,
                                        lambda r, c: pipCalls.append((r, c)), versions.get)
    assert "PyTorch" in questions[0] and "safetensors>=0.4" in questions[0]
    assert torchCalls == [install.TORCH_REQUIREMENT]
    assert pipCalls == [(["safetensors>=0.4"], ["numpy==2.1.0", "SimpleITK==2.5.0"])]
    assert report.torchMissing and report.installed == [install.TORCH_REQUIREMENT, "safetensors>=0.4"]
    # nothing missing: no question
    report = install.ensureDependencies(lambda text: pytest.fail("asked"), torchCalls.append,
                                        lambda r, c: pytest.fail("pip"), {**VERSIONS, "safetensors": "0.4.5"}.get)
    assert not report.torchMissing and report.missing == []


def test_a_failing_installer_becomes_a_dependency_error():
    def broken(requirements, constraints):
        raise RuntimeError("pip exited with 1")

    with pytest.raises(install.DependencyError, match="installing safetensors>=0.4 failed: pip exited with 1"):
        install.ensureDependencies(lambda text: True, lambda r: None, broken, VERSIONS.get)


def test_engine_requirements_match_the_package_dependencies():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {install.requirementName(r).lower(): r for r in project["dependencies"]}
    listed = {install.requirementName(r).lower(): r for r in install.ENGINE_REQUIREMENTS}
    provided = {install.requirementName(r).lower() for r in install.PROVIDED_BY_SLICER} | {"torch"}
    assert set(declared) == set(listed) | provided, "update AsymSegLib/install.py ENGINE_REQUIREMENTS"
    for name, requirement in listed.items():
        assert requirement.replace(" ", "") == declared[name].replace(" ", "")
    assert declared["torch"].replace(" ", "") == install.TORCH_REQUIREMENT


# ------------------------------------------------------------------------------ sample data
def test_sample_data_is_registered_with_matching_lists_and_sha256_checksums():
    calls = []
    count = sampledata.registerSampleData(lambda **kwargs: calls.append(kwargs), thumbnailFileName="icon.png")
    assert count == len(calls) == 2
    for call in calls:
        lengths = {len(call[k]) for k in ("uris", "fileNames", "nodeNames", "checksums", "loadFileType")}
        assert lengths == {3}
        assert call["category"] == "AsymSeg" and call["thumbnailFileName"] == "icon.png"
        for uri, checksum in zip(call["uris"], call["checksums"]):
            assert uri.startswith("https://raw.githubusercontent.com/deepmedic/deepmedic/")
            assert "/examples/dataForExamples/brats2015TrainingData/train/brats_2013_pat000" in uri
            assert re.fullmatch(r"SHA256:[0-9a-f]{64}", checksum)
        assert call["loadFileType"] == ["VolumeFile", "VolumeFile", "SegmentationFile"]
    names = [n for call in calls for n in call["fileNames"]]
    assert len(set(names)) == len(names)


@pytest.mark.data
def test_sample_checksums_match_the_local_copies(brats2015):
    for case in sampledata.SAMPLE_CASES:
        for sample in case.files:
            path = brats2015 / case.caseId / sample.fileName
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sample.sha256, path
