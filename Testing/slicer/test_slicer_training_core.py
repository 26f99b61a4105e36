"""Training on scene cases uses only the chosen tumour-core labels or segments (real MRML, real files)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer_core", reason="slicer-core (real MRML) is not installed")

from AsymSegLib import scene as S  # noqa: E402
from AsymSegTrainingLib import export, jobs, params  # noqa: E402
from mrmlhelpers import addVolume  # noqa: E402

pytestmark = pytest.mark.slicer

SHAPE = (6, 8, 10)


def bratsLabels() -> np.ndarray:
    """A four-label BraTS 2015 labelmap: 2 (oedema) around 1, 3 and 4."""
    labels = np.zeros(SHAPE, np.int16)
    labels[1:5, 1:7, 1:9] = 2
    labels[2:4, 2:4, 2:4] = 1
    labels[2:4, 4:6, 2:4] = 3
    labels[2:4, 2:6, 5:8] = 4
    return labels


@pytest.fixture
def volumes(mrml):
    matrix = np.diag([1.0, 1.0, 2.0, 1.0])
    rng = np.random.default_rng(4)
    flair = addVolume(mrml.scene, rng.normal(size=SHAPE).astype(np.float32), matrix, "pat FLAIR")
    t1c = addVolume(mrml.scene, rng.normal(size=SHAPE).astype(np.float32), matrix, "pat T1c")
    return {"flair": flair, "t1c": t1c}


def exportedLabels(case, mrml, folder) -> np.ndarray:
    caseFolder = export.exportTrainingCase(case, folder, mrml.segmentations, mrml.scene)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(caseFolder / f"{case.caseId}_seg.nii.gz")))


def test_a_four_label_brats_labelmap_trains_on_the_core_only_by_default(mrml, volumes, tmp_path):
    labels = bratsLabels()
    labelNode = addVolume(mrml.scene, labels, np.diag([1.0, 1.0, 2.0, 1.0]), "pat labels", labelmap=True)
    case = export.SceneCase("pat", volumes, labelNode)
    seg = exportedLabels(case, mrml, tmp_path / "default")
    assert np.array_equal(seg, np.isin(labels, (1, 3, 4)).astype(seg.dtype))
    assert not seg[labels == 2].any()
    _, preview = export.coreMask(case, mrml.segmentations, mrml.scene)
    core = int(np.isin(labels, (1, 3, 4)).sum())
    assert preview.voxels == core and preview.millilitres == pytest.approx(core * 2.0 / 1000)
    assert preview.text() == f"pat: {core:,} core voxels ({core * 2.0 / 1000:.1f} ml) from labels 1, 3, 4; left out: label 2"
    # the BraTS 2017-2021 preset: the core is 1 and 4
    preset = export.BRATS_CORE_LABELS["BraTS 2017-2021 (1 necrosis/non-enhancing, 4 enhancing)"]
    seg = exportedLabels(export.SceneCase("pat", volumes, labelNode, labelValues=preset), mrml, tmp_path / "2017")
    assert np.array_equal(seg, np.isin(labels, (1, 4)).astype(seg.dtype))


def test_a_segmentation_loaded_from_a_brats_label_file_trains_on_its_core_segments(mrml, volumes, tmp_path):
    labels = bratsLabels()
    path = S.writeArrayOnGrid(labels, volumes["flair"], tmp_path / "labels.nrrd", mrml.scene)
    segmentation = mrml.segmentations.LoadSegmentationFromFile(str(path), False)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 4  # oedema included
    case = export.SceneCase("pat", volumes, segmentation)
    seg = exportedLabels(case, mrml, tmp_path / "default")
    assert np.array_equal(seg, np.isin(labels, (1, 3, 4)).astype(seg.dtype))
    _, preview = export.coreMask(case, mrml.segmentations, mrml.scene)
    assert preview.source == "segments Segment_1, Segment_3, Segment_4" and preview.leftOut == "Segment_2"
    # chosen by name: only that segment
    byName = export.SceneCase("pat", volumes, segmentation, segmentNames=export.parseSegmentNames(" segment_4 "))
    seg = exportedLabels(byName, mrml, tmp_path / "named")
    assert np.array_equal(seg, (labels == 4).astype(seg.dtype))


def test_hand_drawn_segments_are_chosen_by_name_and_never_all_at_once(mrml, volumes):
    labels = bratsLabels()
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn")
    S.importLabelmapArray(labels, volumes["flair"], segmentation,
                          [S.SegmentSpec(2, "a", "Region A", (0, 1, 0)), S.SegmentSpec(4, "b", "Region B", (1, 0, 0))],
                          mrml.segmentations, mrml.scene)
    values = [segmentation.GetSegmentation().GetNthSegment(i).GetLabelValue() for i in range(2)]
    assert values == [1, 1]  # segments imported (or drawn) one by one all carry the value 1
    with pytest.raises(ValueError, match=r"pat: drawn: cannot tell which segments are tumour core.*'Region A' \(label 1\)"):
        export.coreMask(export.SceneCase("pat", volumes, segmentation), mrml.segmentations, mrml.scene)
    mask, preview = export.coreMask(export.SceneCase("pat", volumes, segmentation, segmentNames=("region b",)),
                                    mrml.segmentations, mrml.scene)
    assert np.array_equal(mask, (labels == 4).astype(mask.dtype)) and preview.leftOut == "Region A"
    with pytest.raises(ValueError, match="no segment named necrosis; its segments are 'Region A'"):
        export.coreMask(export.SceneCase("pat", volumes, segmentation, segmentNames=("Necrosis",)),
                        mrml.segmentations, mrml.scene)
    # a segment named as oedema is never core; a "... core" name is
    segmentation.GetSegmentation().GetSegment("a").SetName("Oedema")
    with pytest.raises(ValueError, match="cannot tell"):
        export.coreMask(export.SceneCase("pat", volumes, segmentation), mrml.segmentations, mrml.scene)
    segmentation.GetSegmentation().GetSegment("b").SetName("Tumour core")
    mask, preview = export.coreMask(export.SceneCase("pat", volumes, segmentation), mrml.segmentations, mrml.scene)
    assert np.array_equal(mask, (labels == 4).astype(mask.dtype)) and preview.source == "segment Tumour core"


def test_start_refuses_cases_whose_channels_or_labels_do_not_fit(mrml, volumes):
    labels = bratsLabels()
    matrix = np.diag([1.0, 1.0, 2.0, 1.0])
    otherConvention = addVolume(mrml.scene, np.where(labels > 0, labels + 4, 0).astype(np.int16), matrix,
                                "pat labels 5-8", labelmap=True)
    with pytest.raises(ValueError, match="pat: pat labels 5-8 has labels 5, 6, 7, 8, none of the core labels 1, 3, 4"):
        export.checkCaseFits(export.SceneCase("pat", volumes, otherConvention), ["flair", "t1c"],
                             mrml.segmentations, mrml.scene)
    onlyOedema = addVolume(mrml.scene, np.where(labels == 2, 2, 0).astype(np.int16), matrix, "oedema", labelmap=True)
    with pytest.raises(ValueError, match="pat: oedema has labels 2, none of the core labels 1, 3, 4"):
        export.checkCaseFits(export.SceneCase("pat", volumes, onlyOedema), ["flair"], mrml.segmentations, mrml.scene)
    empty = addVolume(mrml.scene, np.zeros(SHAPE, np.int16), matrix, "empty", labelmap=True)
    with pytest.raises(ValueError, match="pat: no tumour-core voxel with the chosen no label"):
        export.checkCaseFits(export.SceneCase("pat", volumes, empty), ["flair"], mrml.segmentations, mrml.scene)
    good = addVolume(mrml.scene, labels, matrix, "good", labelmap=True)
    with pytest.raises(ValueError, match=r"pat: the model needs the t2 channel\(s\); the case has flair, t1c"):
        export.checkCaseFits(export.SceneCase("pat", volumes, good), ["flair", "t2"], mrml.segmentations, mrml.scene)
    elsewhere = np.eye(4)
    elsewhere[:3, 3] = (0.0, 0.0, 500.0)
    resliced = addVolume(mrml.scene, np.zeros(SHAPE, np.float32), elsewhere, "T1c elsewhere")
    with pytest.raises(ValueError, match=r"pat: T1c elsewhere \(t1c\) and pat FLAIR overlap by only 0%"):
        export.checkCaseFits(export.SceneCase("pat", {"flair": volumes["flair"], "t1c": resliced}, good),
                             ["flair", "t1c"], mrml.segmentations, mrml.scene)
    preview = export.checkCaseFits(export.SceneCase("pat", volumes, good), ["flair", "t1c"], mrml.segmentations,
                                   mrml.scene)
    assert preview.voxels == int(np.isin(labels, (1, 3, 4)).sum())


def test_core_label_text_is_parsed_and_checked():
    assert export.parseLabelValues(" 1; 4 ") == (1, 4)
    assert export.parseLabelValues("") is None
    with pytest.raises(ValueError, match="core labels 'core': expected whole numbers"):
        export.parseLabelValues("core")
    with pytest.raises(ValueError, match="0 is the background"):
        export.parseLabelValues("0,1")
    assert export.DEFAULT_CORE_LABELS == (1, 3, 4)
    assert sorted(export.BRATS_CORE_LABELS.values()) == [(1, 3), (1, 3, 4), (1, 4)]
    assert export.parseSegmentNames(" a ,, b ") == ("a", "b") and export.parseSegmentNames(" ") is None


def test_the_training_job_exports_scene_cases_with_only_the_core_as_foreground(mrml, volumes, tmp_path):
    labels = bratsLabels()
    labelNode = addVolume(mrml.scene, labels, np.diag([1.0, 1.0, 2.0, 1.0]), "pat labels", labelmap=True)
    parameters = params.TrainingParameters(trainCases=[], outputModel=str(tmp_path / "model"), iterations=2)
    job = jobs.TrainingJob(parameters, mrml.scene, mrml.segmentations,
                           sceneTrainCases=[export.SceneCase("pat", volumes, labelNode)], workDirectory=tmp_path)
    try:
        args = job.prepare()
        caseFolder = args[args.index("--train-case") + 1]
        seg = sitk.GetArrayFromImage(sitk.ReadImage(f"{caseFolder}/pat_seg.nii.gz"))
        assert np.array_equal(seg, np.isin(labels, (1, 3, 4)).astype(seg.dtype))
        assert args[args.index("--foreground-labels") + 1] == "1"
    finally:
        job.cleanup()


def test_real_brats_labels_become_the_core_and_leave_the_oedema_out(mrml, brats2015, tmp_path):
    caseFolder = brats2015 / "brats_2013_pat0005_1"
    flair = S.readVolume(caseFolder / "Flair_subtrMeanDivStd.nii.gz", mrml.scene, name="pat0005 FLAIR")
    labelNode = S.readVolume(caseFolder / "OTMultiClass.nii.gz", mrml.scene, name="pat0005 labels", labelmap=True)
    labels = np.asarray(S.sutil.arrayFromVolume(labelNode))
    assert set(np.unique(labels)) >= {0, 1, 2, 3, 4}
    case = export.SceneCase("pat0005", {"flair": flair}, labelNode)
    preview = export.checkCaseFits(case, ["flair"], mrml.segmentations, mrml.scene)
    core = np.isin(labels, (1, 3, 4))
    assert preview.voxels == int(core.sum()) and preview.leftOut == "label 2"
    seg = exportedLabels(case, mrml, tmp_path)
    assert np.array_equal(seg.astype(bool), core) and not seg[labels == 2].any()


def test_the_training_logic_checks_scene_cases_before_start(mrml, volumes, moduleFile):
    module = moduleFile("AsymSegTraining")
    labels = bratsLabels()
    labelNode = addVolume(mrml.scene, labels, np.diag([1.0, 1.0, 2.0, 1.0]), "pat labels", labelmap=True)
    case = export.SceneCase("pat", volumes, labelNode,
                            labelValues=export.parseLabelValues(module.AsymSegTrainingParameterNode.coreLabels))
    [preview] = module.AsymSegTrainingLogic.checkSceneCases([case], ["flair", "t1c"])
    assert preview.voxels == int(np.isin(labels, (1, 3, 4)).sum()) and preview.leftOut == "label 2"
    with pytest.raises(ValueError, match="pat: the model needs the t2 channel"):
        module.AsymSegTrainingLogic.checkSceneCases([case], ["flair", "t2"])
