"""The real engine driven from MRML: segment, cancel and fine-tune on tiny phantoms.

A phantom case and an untrained model are made once per session with the engine's own
commands; every test gets a fresh scene.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

pytest.importorskip("slicer_core", reason="slicer-core (real MRML) is not installed")

from slicer import util as sutil  # noqa: E402
from AsymSegLib import jobs, plots, process, scene as S, tables  # noqa: E402

pytestmark = [pytest.mark.slicer, pytest.mark.slow]


def engine(*args, timeout=600):
    completed = subprocess.run([sys.executable, "-m", "asymseg", *map(str, args)], capture_output=True, text=True,
                               timeout=timeout)
    assert completed.returncode == 0, completed.stderr
    return completed


def engineHas(command: str) -> bool:
    from asymseg import cli

    return command in cli.COMMANDS


@pytest.fixture(scope="session")
def phantomData(tmp_path_factory):
    if not engineHas("segment"):
        pytest.skip("asymseg segment is not available yet")
    folder = tmp_path_factory.mktemp("engine")
    engine("phantom", "--out", folder / "cases", "--cases", "2", "--size", "32", "--seed", "3")
    engine("models", "create", "--architecture", "deepmedic", "--channels", "flair,t1c", "--out", folder / "model")
    cases = sorted(p for p in (folder / "cases").iterdir() if p.is_dir())
    return folder, cases


def loadCase(mrml, caseFolder):
    caseId = caseFolder.name
    flair = S.readVolume(caseFolder / f"{caseId}_flair.nii.gz", mrml.scene, name=f"{caseId} FLAIR")
    t1c = S.readVolume(caseFolder / f"{caseId}_t1ce.nii.gz", mrml.scene, name=f"{caseId} T1c")
    labels = S.readVolume(caseFolder / f"{caseId}_seg.nii.gz", mrml.scene, name=f"{caseId} labels", labelmap=True)
    return flair, t1c, labels


def test_segment_imports_segment_probability_metrics_and_logit_plot(mrml, phantomData, moduleFile):
    folder, cases = phantomData
    flair, t1c, labels = loadCase(mrml, cases[0])
    logic = moduleFile("AsymSeg").AsymSegLogic(pythonExecutable=sys.executable)
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "phantom tumour core")
    probability = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "phantom probability")
    seen = []
    result = logic.segment({"flair": flair, "t1c": t1c}, model=str(folder / "model"),
                           outputSegmentation=segmentation, reference=labels, probabilityVolume=probability,
                           referenceLabelValues=[1, 4], device="cpu", timeout=600, onEvent=seen.append)
    # progress parsed from the real engine, in order, ending with done
    stages = [e.stage for e in seen if e.kind == "progress"]
    assert "infer" in stages and seen[-1].kind == "done"
    infer = [e for e in seen if e.kind == "progress" and e.stage == "infer"]
    assert infer[-1].done == infer[-1].total
    # the segment: named, coloured, on the input grid
    assert result.segmentIds == ["TumourCore"] and result.device == "cpu"
    segment = segmentation.GetSegmentation().GetSegment("TumourCore")
    assert segment.GetName() == "Tumour core"
    predicted = S.segmentsToArray(segmentation, ["TumourCore"], flair, mrml.segmentations, mrml.scene)
    assert predicted.shape == sutil.arrayFromVolume(flair).shape
    # the probability map on the input grid, consistent with the label map
    assert S.sameGrid(probability, flair)
    probabilities = sutil.arrayFromVolume(probability)
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    assert np.array_equal(probabilities > 0.5, predicted.astype(bool))
    # metrics from the engine in the table, matching the numbers computed here
    reference = np.isin(sutil.arrayFromVolume(labels), [1, 4])
    tp = int((predicted.astype(bool) & reference).sum())
    metrics = tables.readMetricsTable(result.metricsTable)
    assert set(metrics) >= {"dsc", "sensitivity", "precision", "specificity", "hd95",
                            "volume_prediction_ml", "volume_reference_ml"}
    expectedDsc = 2 * tp / (predicted.sum() + reference.sum())
    assert metrics["dsc"] == pytest.approx(expectedDsc, abs=1e-9)
    assert metrics["volume_reference_ml"] == pytest.approx(reference.sum() * np.prod(flair.GetSpacing()) / 1000)
    # the logit distribution: two curves over the reference's foreground and background voxels
    histogram = result.histogram
    assert result.plotNodes.chart.GetNumberOfPlotSeriesNodes() == 2
    inBrain = plots.backgroundMask(sutil.arrayFromVolume(flair))
    assert histogram.foregroundCount == int((reference & inBrain).sum())
    assert histogram.backgroundCount == int((~reference & inBrain).sum())
    # nothing temporary left in the scene
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 1  # the reference only


def segmentationJob(mrml, caseFolder, model, **jobOptions):
    """A CPU segmentation job for a phantom case, into a new empty segmentation node."""
    flair, t1c, _ = loadCase(mrml, caseFolder)
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    request = jobs.SegmentationRequest(volumes={"flair": flair, "t1c": t1c}, model=str(model),
                                       outputSegmentation=segmentation, device="cpu")
    return jobs.SegmentationJob(request, mrml.scene, mrml.segmentations, **jobOptions), segmentation


def test_engine_error_is_one_line_and_leaves_the_scene_unchanged(mrml, phantomData):
    folder, cases = phantomData
    job, segmentation = segmentationJob(mrml, cases[0], folder / "no-such-model")
    with pytest.raises(process.EngineError, match="no-such-model") as info:
        job.run(timeout=300)
    assert info.value.returnCode in (2, 3) and "\n" not in str(info.value)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0
    assert not job.folder.exists()


def test_cancel_stops_the_engine_and_leaves_no_process_behind(mrml, phantomData):
    folder, cases = phantomData
    job, segmentation = segmentationJob(mrml, cases[1], folder / "model",
                                        processFactory=lambda: process.EngineProcess(gracePeriod=5.0))
    job.start()
    tree = {job.process.pid}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not job.finished:
        events = job.poll()
        try:
            tree |= {p.pid for p in psutil.Process(job.process.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
        if any(e.kind == "progress" for e in events) or time.monotonic() > deadline - 110:
            break
        time.sleep(0.05)
    job.cancel()
    result = job.process.wait(timeout=60)
    assert result.cancelled and not result.succeeded
    with pytest.raises(process.EngineError, match="cancelled"):
        job.finish()
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0

    def gone(pid):
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(gone(pid) for pid in tree):
        time.sleep(0.1)
    assert all(gone(pid) for pid in tree), f"left behind: {[p for p in tree if not gone(p)]}"
    assert not job.folder.exists()


def test_finetune_from_a_scene_case_reports_curves_and_writes_a_model(mrml, phantomData, moduleFile, tmp_path):
    if not engineHas("finetune"):
        pytest.skip("asymseg finetune is not available yet")
    folder, cases = phantomData
    flair, t1c, labels = loadCase(mrml, cases[0])
    training = moduleFile("AsymSegTraining")
    logic = training.AsymSegTrainingLogic(pythonExecutable=sys.executable)
    sceneCase = training.export.SceneCase("scene_case", {"flair": flair, "t1c": t1c}, labels, labelValues=[1, 4])
    parameters = training.params.TrainingParameters(
        trainCases=[], valCases=[str(cases[1])], outputModel=str(tmp_path / "finetuned"),
        baseModel=str(folder / "model"), technique="a-focal", iterations=2, validateEvery=1, batchSize=2,
        labelConvention="brats2017", device="cpu")
    job = logic.createTrainingJob(parameters, sceneTrainCases=[sceneCase])
    result = job.run(timeout=900)
    assert result.succeeded, result.engine.summary()
    assert result.modelPath == tmp_path / "finetuned" and (tmp_path / "finetuned" / "model.json").is_file()
    x, losses = result.progress.lossCurves()
    assert x == [1.0, 2.0] and list(losses) == ["loss clean"]
    assert all(value > 0 for value in losses["loss clean"])
    vx, validation = result.progress.validationCurves()
    assert vx == [1.0, 2.0] and all(v is not None for curve in validation.values() for v in curve)
    job.updatePlots()
    assert job.lossPlot.chart.GetNumberOfPlotSeriesNodes() == len(losses)
    assert job.validationPlot.chart.GetNumberOfPlotSeriesNodes() == 3
    assert not job.folder.exists()  # the exported scene case is cleaned up
