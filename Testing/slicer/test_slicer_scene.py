"""Scene <-> files and segments, against real MRML (slicer-core), a fresh scene per test."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="slicer-core (real MRML) is not installed")

import SimpleITK as sitk  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from slicer import util as sutil  # noqa: E402
from AsymSegLib import jobs  # noqa: E402
from AsymSegLib import scene as S  # noqa: E402
from mrmlhelpers import addVolume  # noqa: E402

pytestmark = pytest.mark.slicer

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def obliqueMatrix(spacing=(0.7, 1.1, 2.5), origin=(10.3, -20.1, 5.05), degrees=(20.0, -12.0, 7.0)) -> np.ndarray:
    """An IJK-to-RAS matrix with a rotation about three axes and anisotropic spacing."""
    ax, ay, az = (math.radians(d) for d in degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


@pytest.fixture
def oblique(mrml):
    rng = np.random.default_rng(7)
    array = rng.normal(size=(6, 9, 11)).astype(np.float32)  # (K, J, I)
    matrix = obliqueMatrix()
    return addVolume(mrml.scene, array, matrix, "T2 FLAIR oblique"), array, matrix


# ------------------------------------------------------------------------------ volumes
def test_nrrd_round_trip_keeps_voxels_and_oblique_anisotropic_geometry_exactly(mrml, oblique, tmp_path):
    node, array, matrix = oblique
    path = S.writeVolume(node, tmp_path / "flair.nrrd")
    back = S.readVolume(path, mrml.scene, name="back")
    assert np.array_equal(sutil.arrayFromVolume(back), array)
    assert np.allclose(S.ijkToRas(back), matrix, rtol=0, atol=1e-12)
    assert back.GetName() == "back" and back.GetStorageNode() is None
    assert S.sameGrid(back, node) and S.dimensions(back) == (11, 9, 6)
    assert [p.name for p in tmp_path.iterdir()] == ["flair.nrrd"]  # no temporary file left


def test_written_file_read_by_simpleitk_has_the_same_geometry_in_lps(mrml, oblique, tmp_path):
    node, array, matrix = oblique
    image = sitk.ReadImage(str(S.writeVolume(node, tmp_path / "flair.nrrd")))
    assert np.array_equal(sitk.GetArrayFromImage(image), array)  # SimpleITK arrays are (K, J, I) too
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    assert np.allclose(spacing, [0.7, 1.1, 2.5], atol=1e-12)
    assert np.allclose(direction @ np.diag(spacing), LPS_FROM_RAS @ matrix[:3, :3], atol=1e-12)
    assert np.allclose(image.GetOrigin(), LPS_FROM_RAS @ matrix[:3, 3], atol=1e-12)


def test_file_written_by_simpleitk_loads_with_its_geometry(mrml, tmp_path):
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.9, 3.0))
    image.SetOrigin((1.0, 2.0, 3.0))
    rotation = obliqueMatrix(spacing=(1, 1, 1), degrees=(0, 0, 30))[:3, :3]
    image.SetDirection(tuple((LPS_FROM_RAS @ rotation).ravel()))
    sitk.WriteImage(image, str(tmp_path / "t1.nii.gz"))
    node = S.readVolume(tmp_path / "t1.nii.gz", mrml.scene)
    assert node.GetName() == "t1"
    assert np.array_equal(sutil.arrayFromVolume(node), array)
    expected = np.eye(4)
    expected[:3, :3] = rotation @ np.diag([0.5, 0.9, 3.0])
    expected[:3, 3] = LPS_FROM_RAS @ np.array([1.0, 2.0, 3.0])
    assert np.allclose(S.ijkToRas(node), expected, atol=1e-5)  # NIfTI stores float32


def test_nifti_keeps_geometry_to_float32_precision(mrml, oblique, tmp_path):
    node, array, matrix = oblique
    back = S.readVolume(S.writeVolume(node, tmp_path / "case_flair.nii.gz"), mrml.scene)
    assert np.array_equal(sutil.arrayFromVolume(back), array)
    assert np.allclose(S.ijkToRas(back), matrix, atol=1e-5)


def test_writing_refuses_transformed_volumes_bad_extensions_and_empty_nodes(mrml, oblique, tmp_path):
    node, _, _ = oblique
    with pytest.raises(ValueError, match=r"unsupported volume file extension"):
        S.writeVolume(node, tmp_path / "flair.png")
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match=r"T2 FLAIR oblique: is under the transform 'registration'"):
        S.writeVolume(node, tmp_path / "flair.nrrd")
    empty = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="empty: the volume has no voxels"):
        S.writeVolume(empty, tmp_path / "empty.nrrd")
    with pytest.raises(FileNotFoundError, match="missing.nrrd: no such file"):
        S.readVolume(tmp_path / "missing.nrrd", mrml.scene)


def test_new_volume_like_checks_the_array_shape(mrml, oblique):
    node, _, matrix = oblique
    copy = S.newVolumeLike(node, mrml.scene, np.ones((6, 9, 11), np.uint8), "mask", labelmap=True)
    assert copy.IsA("vtkMRMLLabelMapVolumeNode") and np.allclose(S.ijkToRas(copy), matrix)
    with pytest.raises(ValueError, match=r"array shape \(9, 6, 11\) does not match the grid"):
        S.newVolumeLike(node, mrml.scene, np.ones((9, 6, 11)), "bad")


# ------------------------------------------------------------------------------ segments
def labelArray():
    labels = np.zeros((6, 9, 11), np.int16)
    labels[1:4, 2:6, 3:8] = 1     # 3 * 4 * 5 = 60 voxels
    labels[5, 8, 10] = 2
    return labels


def test_labelmap_file_becomes_a_named_coloured_segment_with_terminology(mrml, oblique, tmp_path):
    node, _, _ = oblique
    labels = labelArray()
    path = S.writeArrayOnGrid(labels, node, tmp_path / "labels.nrrd", mrml.scene)
    segNode = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    colorNodes = mrml.scene.GetNumberOfNodesByClass("vtkMRMLColorNode")
    ids = S.importLabelmapFile(path, segNode, [S.TUMOUR_CORE_SEGMENT], mrml.segmentations, mrml.scene,
                               referenceVolume=node)
    assert ids == ["TumourCore"]
    segmentation = segNode.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetSegment("TumourCore")
    assert segment.GetName() == "Tumour core"
    assert segment.GetColor() == pytest.approx(S.TUMOUR_CORE_SEGMENT.color)
    tag = vtk.reference("")
    assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(str(tag), entry)
    assert entry.GetTypeObject().GetCodeValue() == "108369006"
    assert entry.GetTypeObject().GetCodeMeaning() == "Neoplasm"
    assert entry.GetRegionObject().GetCodeValue() == "12738006"
    assert entry.GetCategoryObject().GetCodeValue() == "49755003"
    # geometry = the input volume, referenced as the source volume
    assert segNode.GetNodeReference(segNode.GetReferenceImageGeometryReferenceRole()) is node
    mask = S.segmentsToArray(segNode, ids, node, mrml.segmentations, mrml.scene)
    assert np.array_equal(mask, (labels == 1).astype(np.uint8))
    # temporary nodes are gone
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLColorNode") == colorNodes


def test_several_labels_absent_label_and_rerun_replace_segments(mrml, oblique):
    node, _, _ = oblique
    labels = labelArray()
    segNode = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    specs = [S.TUMOUR_CORE_SEGMENT, S.SegmentSpec(2, "Dot", "dot", (0.1, 0.8, 0.2)),
             S.SegmentSpec(3, "Absent", "absent", (0.2, 0.2, 0.9))]
    S.importLabelmapArray(labels, node, segNode, specs, mrml.segmentations, mrml.scene, referenceVolume=node)
    counts = {i: int(S.segmentsToArray(segNode, [i], node, mrml.segmentations, mrml.scene).sum())
              for i in ("TumourCore", "Dot", "Absent")}
    assert counts == {"TumourCore": 60, "Dot": 1, "Absent": 0}
    # a second run replaces the segment instead of adding one
    S.importLabelmapArray(np.zeros_like(labels), node, segNode, [S.TUMOUR_CORE_SEGMENT], mrml.segmentations,
                          mrml.scene, referenceVolume=node)
    assert segNode.GetSegmentation().GetNumberOfSegments() == 3
    assert S.segmentsToArray(segNode, ["TumourCore"], node, mrml.segmentations, mrml.scene).sum() == 0
    with pytest.raises(ValueError, match="duplicate segment IDs"):
        S.importLabelmapArray(labels, node, segNode, [S.TUMOUR_CORE_SEGMENT, S.TUMOUR_CORE_SEGMENT],
                              mrml.segmentations, mrml.scene)
    with pytest.raises(KeyError, match="no segment with ID 'nope'"):
        S.segmentsToArray(segNode, ["nope"], node, mrml.segmentations, mrml.scene)


def test_segmentation_becomes_a_binary_array_on_another_reference_grid(mrml):
    fine = addVolume(mrml.scene, np.zeros((8, 8, 8), np.float32), np.diag([1.0, 1.0, 1.0, 1.0]), "fine")
    coarse = addVolume(mrml.scene, np.zeros((4, 4, 4), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), "coarse")
    labels = np.zeros((8, 8, 8), np.int16)
    labels[0:4, 0:4, 0:4] = 1  # the first 4 mm cube = the first 2x2x2 coarse voxels
    segNode = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    S.importLabelmapArray(labels, fine, segNode, [S.TUMOUR_CORE_SEGMENT], mrml.segmentations, mrml.scene)
    onCoarse = S.segmentsToArray(segNode, ["TumourCore"], coarse, mrml.segmentations, mrml.scene)
    assert onCoarse.shape == (4, 4, 4) and onCoarse.dtype == np.uint8
    expected = np.zeros((4, 4, 4), np.uint8)
    expected[0:2, 0:2, 0:2] = 1
    assert np.array_equal(onCoarse, expected)
    assert np.array_equal(S.segmentsToArray(segNode, [], coarse, mrml.segmentations, mrml.scene),
                          np.zeros((4, 4, 4), np.uint8))


def test_labelmap_reference_uses_the_given_label_values_and_resamples(mrml):
    grid = addVolume(mrml.scene, np.zeros((8, 8, 8), np.float32), np.eye(4), "flair")
    values = np.zeros((8, 8, 8), np.int16)
    values[0, 0, 0:4] = [1, 2, 3, 4]
    ref = addVolume(mrml.scene, values, np.eye(4), "labels", labelmap=True)
    core = S.referenceToArray(ref, grid, mrml.segmentations, mrml.scene, labelValues=[1, 3, 4])
    assert core[0, 0, 0:5].tolist() == [1, 0, 1, 1, 0] and core.sum() == 3
    assert S.referenceToArray(ref, grid, mrml.segmentations, mrml.scene).sum() == 4
    # a labelmap on a coarser grid is resampled (nearest neighbour) onto the input grid
    coarseValues = np.zeros((4, 4, 4), np.int16)
    coarseValues[0, 0, 0] = 4
    coarseMatrix = np.diag([2.0, 2.0, 2.0, 1.0])
    coarseMatrix[:3, 3] = 0.5  # coarse voxel 0 covers [-0.5, 1.5] mm: fine voxels 0 and 1 on each axis
    coarseRef = addVolume(mrml.scene, coarseValues, coarseMatrix, "coarse labels", labelmap=True)
    resampled = S.referenceToArray(coarseRef, grid, mrml.segmentations, mrml.scene, labelValues=[1, 3, 4])
    assert resampled.shape == (8, 8, 8) and resampled.sum() == 8 and resampled[0:2, 0:2, 0:2].all()
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "t")
    with pytest.raises(TypeError, match="t: a reference must be a segmentation or a labelmap"):
        S.referenceToArray(table, grid, mrml.segmentations, mrml.scene)


def test_reference_segments_prefer_core_names_then_label_values_then_all(mrml, oblique, tmp_path):
    node, _, _ = oblique
    segNode = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "ref")
    labels = labelArray()
    specs = [S.SegmentSpec(1, "a", "Necrosis", (1, 0, 0)), S.SegmentSpec(2, "b", "Oedema", (0, 1, 0))]
    S.importLabelmapArray(labels, node, segNode, specs, mrml.segmentations, mrml.scene)
    assert S.referenceSegmentIds(segNode) == ["a", "b"]
    segNode.GetSegmentation().GetSegment("b").SetName("Tumor core (manual)")
    assert S.referenceSegmentIds(segNode) == ["b"]

    # A label file loaded as a segmentation keeps each segment's label value.
    fileLabels = np.zeros((6, 9, 11), np.int16)
    fileLabels[0, 0, 0:4] = [1, 2, 3, 4]
    path = S.writeArrayOnGrid(fileLabels, node, tmp_path / "OTMultiClass.nrrd", mrml.scene)
    loaded = mrml.segmentations.LoadSegmentationFromFile(str(path), False)
    assert loaded.GetSegmentation().GetNumberOfSegments() == 4
    ids = S.referenceSegmentIds(loaded, labelValues=[1, 3, 4])
    assert len(ids) == 3
    core = S.referenceToArray(loaded, node, mrml.segmentations, mrml.scene, labelValues=[1, 3, 4])
    assert core[0, 0, 0:5].tolist() == [1, 0, 1, 1, 0]


def test_place_beside_puts_the_output_in_the_input_folder(mrml, oblique):
    node, _, _ = oblique
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), "patient 5")
    if sh.GetItemByDataNode(node):
        sh.SetItemParent(sh.GetItemByDataNode(node), folder)
    else:  # slicer-core has no GUI plugin that creates items for new nodes
        sh.CreateItem(folder, node)
    segNode = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    S.placeBeside(segNode, node, mrml.scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(segNode)) == folder


def test_segments_for_model_classes():
    assert S.segmentSpecsForClasses(["background", "tumour_core"]) == [S.TUMOUR_CORE_SEGMENT]
    specs = S.segmentSpecsForClasses(["background", "necrosis", "oedema", "enhancing_tumour"])
    assert [(s.labelValue, s.segmentId, s.name) for s in specs] == [
        (1, "Necrosis", "Necrosis"), (2, "Oedema", "Oedema"), (3, "EnhancingTumour", "Enhancing tumour")]
    assert specs[0].terminology == S.TUMOUR_CORE_TERMINOLOGY and specs[1].terminology is None
    assert len({s.color for s in specs}) == 3


# ------------------------------------------------------------------------------ jobs
def test_a_job_whose_inputs_cannot_be_written_raises_and_leaves_no_temporary_folder(mrml, oblique, tmp_path):
    node, _, _ = oblique
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    node.SetAndObserveTransformNodeID(transform.GetID())
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    request = jobs.SegmentationRequest(volumes={"flair": node}, model="starter", outputSegmentation=segmentation)
    job = jobs.SegmentationJob(request, mrml.scene, mrml.segmentations, workDirectory=tmp_path)
    with pytest.raises(ValueError, match="under the transform 'shift'"):
        job.start()
    assert job.folder is not None and not job.folder.exists()
    assert list(tmp_path.iterdir()) == [] and not job.process.started


def test_the_overlap_of_two_volumes_is_the_engines_for_the_files_they_are_written_to(mrml, tmp_path):
    from asymseg import constants
    from asymseg.io import read_geometry
    from asymseg.io.resample import overlap_fraction

    assert S.MIN_VOLUME_OVERLAP == constants.MIN_CHANNEL_OVERLAP
    angle = math.radians(20)
    tilted = np.array([[math.cos(angle) * 0.9, -math.sin(angle), 0, -40.0],
                       [math.sin(angle) * 0.9, math.cos(angle), 0, 12.0],
                       [0, 0, 5.5, -30.0], [0, 0, 0, 1]])
    shifted = np.diag([1.0, 1.0, 1.0, 1.0])
    shifted[:3, 3] = (-30.0, -10.0, -25.0)
    a = addVolume(mrml.scene, np.zeros((12, 60, 70), np.float32), tilted, "thick tilted")
    b = addVolume(mrml.scene, np.zeros((50, 64, 64), np.float32), shifted, "fine shifted")
    fraction = S.overlapFraction(a, b)
    assert 0.05 < fraction < 0.95 and S.overlapFraction(b, a) == pytest.approx(fraction)
    engine = overlap_fraction(read_geometry(S.writeVolume(a, tmp_path / "a.nrrd")),
                              read_geometry(S.writeVolume(b, tmp_path / "b.nrrd")))
    assert fraction == pytest.approx(engine, rel=1e-9)
    assert S.overlapFraction(a, a) == pytest.approx(1.0)
