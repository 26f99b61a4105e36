"""AsymSegTrainingLib: the finetune command line, progress curves and scene case export."""

from __future__ import annotations

import argparse
import importlib
import json

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="slicer-core (real MRML) is not installed")

import SimpleITK as sitk  # noqa: E402
from slicer import util as sutil  # noqa: E402
from AsymSegLib import progress  # noqa: E402
from AsymSegLib import scene as S  # noqa: E402
from AsymSegTrainingLib import export, params, series  # noqa: E402
from mrmlhelpers import addVolume  # noqa: E402

pytestmark = pytest.mark.slicer


def finetuneParser() -> argparse.ArgumentParser:
    """The engine's own command-line parser, with ``finetune`` and the options every command takes
    (skips where the engine is not importable)."""
    try:
        cli = importlib.import_module("asymseg.cli")
    except ImportError:
        pytest.skip("the asymseg engine is not importable here")
    return cli.build_parser()


# ------------------------------------------------------------------------------ command line
def test_arg_list_carries_every_setting_in_engine_option_names():
    p = params.TrainingParameters(
        trainCases=["/c/a", "/c/b"], valCases=["/c/v"], outputModel="site-model", baseModel="starter",
        technique="a-focal", iterations=250, learningRate=5e-4, fgFraction=0.6, batchSize=4, validateEvery=50,
        labelConvention="brats2015", seed=3, device="cpu", extraArguments=["--patience", "5"])
    assert p.asArgList() == [
        "finetune", "--train-case", "/c/a", "--train-case", "/c/b", "--val-case", "/c/v",
        "--base-model", "starter", "--technique", "a-focal", "--iterations", "250", "--lr", "0.0005",
        "--fg-fraction", "0.6", "--batch-size", "4", "--val-every", "50", "--label-convention", "brats2015",
        "--seed", "3", "--device", "cpu", "--output-model", "site-model", "--patience", "5",
        "--progress", "jsonl"]


def test_symmetric_switch_picks_the_twin_preset_or_the_symmetric_flag():
    def resolved(technique):
        return params.TrainingParameters(["a"], "m", technique=technique, symmetric=True).resolvedTechnique()

    assert resolved("a-lm") == ("lm", False) and resolved("a-mixup") == ("mixup", False)
    assert resolved("combo") == ("combo", True)
    assert resolved("ce") == ("ce", False)
    assert resolved("combo-authors") == ("combo-authors", True)
    args = params.TrainingParameters(["a"], "m", technique="combo", symmetric=True).asArgList()
    assert args[args.index("--technique") + 1] == "combo" and "--symmetric" in args
    assert params.defaultFgFraction("fg-sampling") == 0.8 and params.defaultFgFraction("combo") == 0.5
    assert list(params.TECHNIQUE_PRESETS)[0] == params.DEFAULT_TECHNIQUE == "ce"


@pytest.mark.parametrize("change, message", [
    ({"trainCases": []}, "no training case"),
    ({"outputModel": "my model"}, "output model name 'my model'"),
    ({"technique": "magic"}, "technique 'magic': expected one of ce, a-focal"),
    ({"iterations": 0}, "iterations must be a positive integer, got 0"),
    ({"learningRate": -1.0}, "learning rate must be > 0, got -1.0"),
    ({"fgFraction": 1.5}, r"foreground fraction must be in \[0, 1\], got 1.5"),
    ({"labelConvention": "brats2099"}, "label convention 'brats2099'"),
    ({"device": "tpu"}, "device 'tpu'"),
    ({"operatingPoint": "best"}, "operating point 'best': expected one of validation, cross-validation"),
    ({"operatingPoint": "cross-validation", "valCases": ["v"], "trainCases": ["a", "b"]},
     "without validation cases"),
    ({"operatingPoint": "cross-validation"}, "at least 2 training cases"),
])
def test_invalid_settings_name_the_setting_and_value(change, message):
    p = params.TrainingParameters(trainCases=["a"], outputModel="m")
    for key, value in change.items():
        setattr(p, key, value)
    with pytest.raises(ValueError, match=message):
        p.asArgList()


def test_technique_presets_are_the_engines():
    techniques = pytest.importorskip("asymseg.techniques")
    assert set(params.TECHNIQUE_PRESETS) == set(techniques.TECHNIQUES)
    for name, twin in params.SYMMETRIC_TWIN.items():
        assert techniques.TECHNIQUES[twin].symmetric and not techniques.TECHNIQUES[name].symmetric
    for name in params.TECHNIQUE_PRESETS:
        assert params.defaultFgFraction(name) == techniques.TECHNIQUES[name].fg_fraction


def test_the_engine_finetune_parser_accepts_the_arg_list(tmp_path):
    parser = finetuneParser()
    p = params.TrainingParameters(
        trainCases=[str(tmp_path / "a")], valCases=[str(tmp_path / "v")], outputModel="site-model",
        baseModel="starter", technique="combo", symmetric=True, iterations=7, learningRate=0.002, fgFraction=0.4,
        batchSize=2,
        validateEvery=3, foregroundLabels=(1,), seed=11, device="cpu")
    args = parser.parse_args(p.asArgList())
    assert args.command == "finetune"
    assert [str(x) for x in args.train_case] == [str(tmp_path / "a")]
    assert [str(x) for x in args.val_case] == [str(tmp_path / "v")]
    assert (args.base_model, args.technique, args.symmetric) == ("starter", "combo", True)
    assert (args.iterations, args.lr, args.fg_fraction, args.batch_size, args.val_every) == (7, 0.002, 0.4, 2, 3)
    assert tuple(args.foreground_labels) == (1,) and args.label_convention is None
    assert (args.seed, args.device, args.output_model, args.progress) == (11, "cpu", "site-model", "jsonl")
    assert args.operating_point is None  # the engine's default unless the panel asks


def test_cross_validation_of_the_operating_point_reaches_the_engine_only_without_validation_cases(tmp_path):
    assert params.operatingPointChoice(True, []) == "cross-validation"
    assert params.operatingPointChoice(True, ["v"]) is None and params.operatingPointChoice(False, []) is None
    p = params.TrainingParameters(trainCases=[str(tmp_path / "a"), str(tmp_path / "b")], outputModel="m",
                                  operatingPoint=params.operatingPointChoice(True, []))
    args = finetuneParser().parse_args(p.asArgList())
    assert args.operating_point == "cross-validation"
    assert set(params.OPERATING_POINTS) <= set(pytest.importorskip("asymseg.train.config").OPERATING_POINT_CHOICES)


# ------------------------------------------------------------------------------ progress curves
def events(*objects):
    return [progress.parseLine(json.dumps(o)) for o in objects]


def test_training_progress_collects_losses_validation_and_eta():
    tracker = series.TrainingProgress()
    stream = events(
        {"event": "start", "stage": "train", "done": 0, "total": 4, "iterations": 4},
        {"event": "iteration", "stage": "train", "done": 1, "total": 4, "loss_clean": 0.9, "lr": 1e-3,
         "losses": {"clean": 0.9, "adversarial": None, "mixup": None}, "eta_seconds": 30.0},
        {"event": "iteration", "stage": "train", "done": 2, "total": 4, "loss_clean": 0.7, "loss_adversarial": 0.8,
         "lr": 1e-3, "eta_seconds": 20.0},
        {"event": "validation", "stage": "validate", "done": 2, "total": 4,
         "mean": {"dsc": 0.4, "sensitivity": 0.3, "precision": 0.8}, "cases": {"v": {"dsc": 0.4}}},
        {"event": "checkpoint", "done": 2, "path": "/runs/x/checkpoint"},
        {"event": "iteration", "stage": "train", "done": 4, "total": 4, "loss_clean": 0.5, "eta_seconds": 0.0},
        {"event": "validation", "done": 4, "mean": {"dsc": 0.6, "sensitivity": 0.55, "precision": 0.7}},
    )
    changes = [tracker.update(e) for e in stream]
    assert changes[0] == {"progress"} and changes[1] == {"progress", "losses"} and changes[3] == {"validation"}
    x, losses = tracker.lossCurves()
    assert x == [1.0, 2.0, 4.0]
    assert losses == {"loss clean": [0.9, 0.7, 0.5], "loss adversarial": [None, 0.8, None]}
    vx, validation = tracker.validationCurves()
    assert vx == [2.0, 4.0]
    assert validation == {"DSC": [0.4, 0.6], "Sensitivity": [0.3, 0.55], "Precision": [0.8, 0.7]}
    assert tracker.bestDsc == 0.6 and tracker.lastCheckpoint == "/runs/x/checkpoint"
    assert tracker.fraction == 1.0 and tracker.learningRates == [1e-3, 1e-3, None]
    assert tracker.statusText() == "Iteration 4/4, best validation DSC 0.600"


def test_status_text_shows_the_eta_while_running():
    tracker = series.TrainingProgress()
    tracker.update(events({"event": "iteration", "done": 10, "total": 100, "loss_clean": 1.0,
                           "eta_seconds": 125})[0])
    assert tracker.statusText() == "Iteration 10/100, about 2 min 05 s left"
    assert series.TrainingProgress().statusText() == "Starting..."


# ------------------------------------------------------------------------------ case export
def addCaseVolume(scene, array, name, spacing=(1.0, 1.0, 2.0), labelmap=False):
    matrix = np.diag([*spacing, 1.0])
    matrix[:3, 3] = (5.0, -3.0, 1.5)
    return addVolume(scene, array, matrix, name, labelmap=labelmap)


@pytest.fixture
def sceneCase(mrml):
    rng = np.random.default_rng(2)
    flair = addCaseVolume(mrml.scene, rng.normal(size=(5, 7, 9)).astype(np.float32), "pat1 FLAIR")
    t1c = addCaseVolume(mrml.scene, rng.normal(size=(5, 7, 9)).astype(np.float32), "pat1 T1c")
    labels = np.zeros((5, 7, 9), np.int16)
    labels[1:3, 2:5, 3:7] = 1
    labels[4, 6, 8] = 2
    segNode = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "pat1 labels")
    S.importLabelmapArray(labels, flair, segNode, [S.SegmentSpec(1, "core", "Tumour core", (1, 0, 0)),
                                                   S.SegmentSpec(2, "oedema", "Oedema", (0, 1, 0))],
                          mrml.segmentations, mrml.scene)
    return export.SceneCase("pat1", {"flair": flair, "t1c": t1c}, segNode), labels


def test_scene_case_exports_brats_names_with_a_binary_core_label(mrml, sceneCase, tmp_path):
    case, labels = sceneCase
    folder = export.exportTrainingCase(case, tmp_path, mrml.segmentations, mrml.scene)
    assert folder == tmp_path / "pat1"
    assert sorted(p.name for p in folder.iterdir()) == ["pat1_flair.nii.gz", "pat1_seg.nii.gz", "pat1_t1ce.nii.gz"]
    assert [p.name for p in tmp_path.iterdir()] == ["pat1"]  # no partial folder left
    flair = sitk.ReadImage(str(folder / "pat1_flair.nii.gz"))
    assert np.allclose(sitk.GetArrayFromImage(flair), sutil.arrayFromVolume(case.volumes["flair"]))
    assert np.allclose(flair.GetSpacing(), (1.0, 1.0, 2.0)) and np.allclose(flair.GetOrigin(), (-5.0, 3.0, 1.5))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "pat1_seg.nii.gz")))
    # the segment named "... core" is the foreground; the oedema is not
    assert np.array_equal(seg, (labels == 1).astype(seg.dtype))


def test_exported_case_is_found_by_the_engine_case_discovery(mrml, sceneCase, tmp_path):
    discovery = pytest.importorskip("asymseg.io.discovery")
    case, _ = sceneCase
    folder = export.exportTrainingCase(case, tmp_path, mrml.segmentations, mrml.scene)
    found = discovery.discover_case(folder)
    text = repr(found)
    assert "pat1_flair.nii.gz" in text and "pat1_t1ce.nii.gz" in text and "pat1_seg.nii.gz" in text


def test_a_volume_on_its_own_grid_is_exported_as_it_is_and_the_engine_brings_it_onto_the_reference(
        mrml, sceneCase, tmp_path):
    io = pytest.importorskip("asymseg.io")
    case, _ = sceneCase
    # The T1c on a finer, shifted grid covering the same head: another series of the same visit.
    finer = np.diag([0.5, 0.5, 1.0, 1.0])
    finer[:3, 3] = (4.75, -3.25, 1.0)
    t1c = addVolume(mrml.scene, np.random.default_rng(3).normal(size=(10, 14, 18)).astype(np.float32), finer,
                    "pat1 T1c fine")
    moved = export.SceneCase("pat1", {"flair": case.volumes["flair"], "t1c": t1c}, case.labels)
    folder = export.exportTrainingCase(moved, tmp_path, mrml.segmentations, mrml.scene)
    flair, flairGrid = io.read_image(folder / "pat1_flair.nii.gz")
    t1cArray, t1cGrid = io.read_image(folder / "pat1_t1ce.nii.gz")
    label, labelGrid = io.read_label(folder / "pat1_seg.nii.gz")
    assert t1cArray.shape == (10, 14, 18) and t1cGrid.spacing == pytest.approx((0.5, 0.5, 1.0))
    assert labelGrid == flairGrid and label.shape == flair.shape
    loaded = io.load_case(io.discover_case(folder), channels=["flair", "t1c"], require_label=True)
    assert loaded.image.shape == (2, *flair.shape) and loaded.geometry == flairGrid


def test_export_refuses_bad_ids_volumes_of_another_visit_and_existing_folders(mrml, sceneCase, tmp_path):
    case, _ = sceneCase
    with pytest.raises(ValueError, match="case id 'pat 1'"):
        export.exportTrainingCase(export.SceneCase("pat 1", case.volumes, case.labels), tmp_path,
                                  mrml.segmentations, mrml.scene)
    far = addVolume(mrml.scene, np.zeros((5, 7, 9), np.float32), np.diag([1.0, 1.0, 2.0, 1.0]) + np.array(
        [[0, 0, 0, 200.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]), "T1c elsewhere")
    with pytest.raises(ValueError, match=r"p2: T1c elsewhere \(t1c\) and pat1 FLAIR overlap by only 0% in physical "
                                         r"space; they are probably not from the same visit: register them first"):
        export.exportTrainingCase(export.SceneCase("p2", {"flair": case.volumes["flair"], "t1c": far},
                                                   case.labels), tmp_path, mrml.segmentations, mrml.scene)
    assert not (tmp_path / "p2").exists() and not list(tmp_path.glob(".p2.*"))
    with pytest.raises(ValueError, match="unknown channel 'pd'"):
        export.SceneCase("p3", {"pd": far}, case.labels).check()
    export.exportTrainingCase(case, tmp_path, mrml.segmentations, mrml.scene)
    with pytest.raises(ValueError, match="the case folder exists already"):
        export.exportTrainingCase(case, tmp_path, mrml.segmentations, mrml.scene)
    assert export.exportTrainingCase(case, tmp_path, mrml.segmentations, mrml.scene, overwrite=True).is_dir()


def test_labelmap_cases_use_the_chosen_label_values_and_nrrd_keeps_geometry(mrml, sceneCase, tmp_path):
    case, labels = sceneCase
    labelNode = addCaseVolume(mrml.scene, labels, "pat1 labelmap", labelmap=True)
    labelCase = export.SceneCase("pat1lm", case.volumes, labelNode, labelValues=[2])
    folder = export.exportTrainingCase(labelCase, tmp_path, mrml.segmentations, mrml.scene, extension=".nrrd")
    seg = sitk.ReadImage(str(folder / "pat1lm_seg.nrrd"))
    assert sitk.GetArrayFromImage(seg).sum() == 1
    assert seg.GetOrigin() == (-5.0, 3.0, 1.5) and seg.GetSpacing() == (1.0, 1.0, 2.0)
