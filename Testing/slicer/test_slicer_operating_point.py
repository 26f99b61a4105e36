"""The interactive operating point on real MRML with real engine runs.

One run of the real engine (a phantom case, an untrained model whose card carries an operating
point); then the threshold moves on the Slicer side only: the mask, DSC, sensitivity and precision
follow without the engine running again.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="slicer-core (real MRML) is not installed")

from slicer import util as sutil  # noqa: E402

from AsymSegLib import jobs, operatingpoint as O, scene as S, tables  # noqa: E402

pytestmark = [pytest.mark.slicer, pytest.mark.slow]

CARD_THRESHOLD = -0.5


def engine(*args, timeout=600):
    completed = subprocess.run([sys.executable, "-m", "asymseg", *map(str, args)], capture_output=True, text=True,
                               timeout=timeout)
    assert completed.returncode == 0, completed.stderr
    return completed


@pytest.fixture(scope="module")
def runData(tmp_path_factory):
    folder = tmp_path_factory.mktemp("operating")
    engine("phantom", "--out", folder / "cases", "--cases", "1", "--size", "32", "--seed", "11")
    engine("models", "create", "--architecture", "deepmedic", "--channels", "flair,t1c", "--out", folder / "model")
    card = json.loads((folder / "model" / "model.json").read_text())
    card["operating_point"] = {"threshold": CARD_THRESHOLD, "postprocess": "largest", "tta": False,
                               "chosen_on": "validation", "validation": {}}
    (folder / "model" / "model.json").write_text(json.dumps(card))
    return folder, next(p for p in (folder / "cases").iterdir() if p.is_dir())


def runSegmentation(mrml, runData, withReference=True):
    folder, case = runData
    caseId = case.name
    flair = S.readVolume(case / f"{caseId}_flair.nii.gz", mrml.scene, name="FLAIR")
    t1c = S.readVolume(case / f"{caseId}_t1ce.nii.gz", mrml.scene, name="T1c")
    labels = S.readVolume(case / f"{caseId}_seg.nii.gz", mrml.scene, name="labels", labelmap=True)
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "core")
    request = jobs.SegmentationRequest(volumes={"flair": flair, "t1c": t1c}, model=str(folder / "model"),
                                       outputSegmentation=segmentation, device="cpu",
                                       reference=labels if withReference else None, referenceLabelValues=[1, 4])
    job = jobs.SegmentationJob(request, mrml.scene, mrml.segmentations, keepFiles=True)
    result = job.run(timeout=600)
    engineLabels = S.readVolume(job.paths["output"], mrml.scene, name="engine labels", labelmap=True)
    engineMask = sutil.arrayFromVolume(engineLabels).astype(bool)
    reference = np.isin(sutil.arrayFromVolume(labels), [1, 4])
    return result, segmentation, flair, engineMask, reference


def segmentMask(mrml, segmentation, grid):
    return S.segmentsToArray(segmentation, ["TumourCore"], grid, mrml.segmentations, mrml.scene).astype(bool)


def test_the_slider_starts_at_the_card_and_reproduces_the_engine(mrml, runData):
    result, segmentation, flair, engineMask, reference = runSegmentation(mrml, runData)
    session = result.session
    assert result.operatingPoint["threshold"] == CARD_THRESHOLD and session.runThreshold == CARD_THRESHOLD
    assert session.postprocessMethod == "largest"
    # the Slicer-side mask at the card's threshold is the engine's label map, voxel for voxel
    assert np.array_equal(session.maskAt(CARD_THRESHOLD), engineMask)
    assert np.array_equal(segmentMask(mrml, segmentation, flair), engineMask)
    for key in ("dsc", "sensitivity", "precision", "specificity", "volume_prediction_ml"):
        if result.metrics.get(key) is None:
            assert session.metrics[key] is None, key
        else:
            assert session.metrics[key] == pytest.approx(result.metrics[key], abs=1e-9), key
    assert session.metrics["hd95"] == result.metrics["hd95"]
    assert float(segmentation.GetAttribute(O.THRESHOLD_ATTRIBUTE)) == CARD_THRESHOLD
    assert json.loads(segmentation.GetAttribute(O.OPERATING_POINT_ATTRIBUTE))["chosen_on"] == "validation"


def test_moving_the_threshold_updates_mask_metrics_and_table_without_the_engine(mrml, runData, monkeypatch):
    result, segmentation, flair, _, reference = runSegmentation(mrml, runData)
    session = result.session

    def noEngine(*args, **kwargs):
        raise AssertionError("the threshold started a process")

    monkeypatch.setattr(subprocess, "Popen", noEngine)
    low, high = session.range
    assert low <= -4.0 and high >= 8.0 and low < CARD_THRESHOLD < high
    brain = session.brain
    for threshold in (low, -2.0, 0.0, 1.5):
        metrics = session.setThreshold(threshold)
        expected = O.postprocess((session.dz > threshold) & brain, "largest", flair.GetSpacing())
        shown = segmentMask(mrml, segmentation, flair)
        assert np.array_equal(shown, expected)
        tp = int((expected & reference).sum())
        assert metrics["sensitivity"] == pytest.approx(tp / reference.sum())
        if expected.any():
            assert metrics["precision"] == pytest.approx(tp / expected.sum())
            assert metrics["dsc"] == pytest.approx(2 * tp / (expected.sum() + reference.sum()))
        assert metrics["hd95"] is None  # the engine's HD95 holds only at its own threshold
        table = tables.readMetricsTable(result.metricsTable)
        assert table["threshold"] == threshold and table["dsc"] == metrics["dsc"]
        assert float(segmentation.GetAttribute(O.THRESHOLD_ATTRIBUTE)) == threshold
        assert json.loads(segmentation.GetAttribute(O.OPERATING_POINT_ATTRIBUTE))["chosen_on"] == "user"
    # the most sensitive end marks every brain voxel's largest component, the other end fewer
    assert session.setThreshold(low)["volume_prediction_ml"] >= session.setThreshold(high)["volume_prediction_ml"]
    session.reset()
    assert session.threshold == CARD_THRESHOLD
    with pytest.raises(ValueError, match="finite"):
        session.setThreshold(float("nan"))


def test_without_a_reference_the_slider_moves_the_mask_and_reports_the_volume(mrml, runData):
    result, segmentation, flair, engineMask, _ = runSegmentation(mrml, runData, withReference=False)
    assert result.metricsTable is None
    metrics = result.session.setThreshold(-3.0)
    shown = segmentMask(mrml, segmentation, flair)
    assert metrics == {"volume_prediction_ml": pytest.approx(shown.sum() * np.prod(flair.GetSpacing()) / 1000)}
    assert shown.sum() >= engineMask.sum()


def test_the_chosen_threshold_goes_into_a_copy_of_the_model(mrml, runData, tmp_path):
    result, segmentation, _, _, _ = runSegmentation(mrml, runData)
    session = result.session
    session.setThreshold(1.25)
    copy = session.saveModelCopy("tuned", tmp_path / "models")
    card = json.loads((copy / "model.json").read_text())
    assert card["name"] == "tuned"
    assert card["operating_point"]["threshold"] == 1.25 and card["operating_point"]["chosen_on"] == "user"
    assert card["operating_point"]["postprocess"] == "largest"
    assert card["operating_point"]["validation"]["previous_threshold"] == CARD_THRESHOLD
    original = json.loads((runData[0] / "model" / "model.json").read_text())
    assert original["operating_point"]["threshold"] == CARD_THRESHOLD  # the original is untouched
    # the engine accepts the copy and applies its threshold
    folder, case = runData
    done = engine("segment", "--model", copy, "--case", case, "--output", tmp_path / "seg.nii.gz", "--device", "cpu",
                  "--progress", "jsonl").stdout.strip().splitlines()[-1]
    assert json.loads(done)["operating_point"]["threshold"] == 1.25
    with pytest.raises(ValueError, match="exists already"):
        session.saveModelCopy("tuned", tmp_path / "models")
    with pytest.raises(ValueError, match="model name 'a b'"):
        session.saveModelCopy("a b", tmp_path / "models")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tuned"]  # nothing half-written


def test_the_slicer_side_post_processing_is_the_engines():
    from asymseg import operating

    rng = np.random.default_rng(5)
    for method in ("none", "largest", "min-ml:0.02"):
        mask = rng.random((12, 14, 16)) > 0.8
        assert np.array_equal(O.postprocess(mask, method, (1.0, 1.5, 2.0)),
                              operating.postprocess(mask, method, (1.0, 1.5, 2.0))), method
    assert O.probabilityOf(0.0) == 0.5 and O.probabilityOf(-1.25) == pytest.approx(0.2227, abs=1e-4)
    assert O.thresholdRange(-1.25) == (-4.0, 8.0) and O.thresholdRange(7.5) == (-4.0, 9.5)
    assert O.overlapMetrics(np.zeros(4, bool), np.zeros(4, bool), 1.0)["dsc"] is None


def test_the_panel_text_names_threshold_probability_and_metrics(mrml):
    from mrmlhelpers import addVolume

    dz = np.full((4, 5, 6), -3.0, np.float32)
    dz[1:3, 1:4, 1:4] = 2.0
    reference = np.zeros(dz.shape, np.uint8)
    reference[1:3, 1:4, 1:3] = 1
    grid = addVolume(mrml.scene, np.zeros(dz.shape, np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), "grid")
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "core")
    S.importLabelmapArray(np.zeros(dz.shape, np.uint8), grid, segmentation, [S.TUMOUR_CORE_SEGMENT],
                          mrml.segmentations, mrml.scene, referenceVolume=grid)
    point = {"threshold": 0.0, "postprocess": "none", "tta": False, "chosen_on": "default"}
    session = O.OperatingPointSession(dz, np.ones(dz.shape, bool), mrml.scene, mrml.segmentations, segmentation,
                                      "TumourCore", grid, point, reference=reference)
    session.setThreshold(0.0)
    assert session.summary() == ("dz > 0 (probability > 0.500); the model's: 0\n"
                                 "DSC 0.800, sensitivity 1.000, precision 0.667, 0.1 ml")
    session.setThreshold(-3.5)  # every voxel
    assert session.summary() == ("dz > -3.5 (probability > 0.029); the model's: 0\n"
                                 "DSC 0.182, sensitivity 1.000, precision 0.100, 1.0 ml")
    blind = O.OperatingPointSession(dz, np.ones(dz.shape, bool), mrml.scene, mrml.segmentations, segmentation,
                                    "TumourCore", grid, {**point, "postprocess": "largest"})
    blind.setThreshold(0.0)
    assert blind.summary() == "dz > 0 (probability > 0.500), largest component; the model's: 0\n0.1 ml"
