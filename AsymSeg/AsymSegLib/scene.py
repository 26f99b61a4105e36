"""Scene <-> files: volumes with exact geometry, labelmaps into named segments, segments to arrays.

Volumes travel to the engine as files. NRRD keeps the geometry exactly (spacing, origin and
direction are written as decimal text at full precision); NIfTI stores it as float32, so it
is used only where a naming convention asks for it (training-case export).

Slicer works in RAS, files and SimpleITK in LPS: the storage nodes convert, nothing here does
it by hand. Arrays are numpy views of MRML volumes, shape (K, J, I) = (slice, row, column).

Every function takes the scene (and, where needed, the Segmentations module logic) as an
argument; none relies on ``slicer.mrmlScene``, so they run under plain MRML (slicer-core).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk
from slicer import util as sutil

log = logging.getLogger(__name__)

#: File format for volumes exchanged with the engine (exact geometry).
EXCHANGE_EXTENSION = ".nrrd"
#: File extensions that the engine reads (SimpleITK).
VOLUME_EXTENSIONS = (".nrrd", ".nii.gz", ".nii", ".mha", ".mhd")

#: Terminology entry (Slicer's TerminologyEntry tag): category Morphologically Altered Structure
#: (SCT 49755003), type Neoplasm (SCT 108369006), anatomic region Brain (SCT 12738006). Neoplasm is
#: in the DICOM master list; the 3D Slicer General Anatomy list (the subset behind the
#: GenericAnatomyColors table) does not have it.
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
TUMOUR_CORE_TERMINOLOGY = (
    f"{TERMINOLOGY_CONTEXT}"
    "~SCT^49755003^Morphologically Altered Structure"
    "~SCT^108369006^Neoplasm"
    "~^^"
    "~Anatomic codes - DICOM master list"
    "~SCT^12738006^Brain"
    "~^^"
)
NEOPLASM_CODE = "108369006"
#: Geometry tolerance (mm, and direction cosines) for "the same grid".
GRID_TOLERANCE = 1e-6
#: Two volumes of one case whose physical boxes overlap less than this (intersection over the
#: smaller box) are not from the same visit; the engine refuses them too (``MIN_CHANNEL_OVERLAP``).
MIN_VOLUME_OVERLAP = 0.5


@dataclass(frozen=True)
class SegmentSpec:
    """How one label value of a labelmap becomes a segment.

    Args:
        labelValue: the voxel value in the labelmap file.
        segmentId: the segment ID in the segmentation node (re-running replaces that segment).
        name: the displayed segment name.
        color: RGB in [0, 1].
        terminology: a TerminologyEntry tag string (see :data:`TUMOUR_CORE_TERMINOLOGY`) or None.
    """

    labelValue: int
    segmentId: str
    name: str
    color: tuple[float, float, float]
    terminology: str | None = None


TUMOUR_CORE_SEGMENT = SegmentSpec(
    labelValue=1, segmentId="TumourCore", name="Tumour core", color=(0.86, 0.32, 0.24),
    terminology=TUMOUR_CORE_TERMINOLOGY,
)


#: Colours of further classes of multi-class models (RGB in [0, 1]).
CLASS_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.86, 0.32, 0.24), (0.95, 0.80, 0.25), (0.35, 0.70, 0.35), (0.30, 0.55, 0.85), (0.65, 0.40, 0.75),
)
_TUMOUR_WORDS = ("core", "tumour", "tumor", "enhanc", "necro", "neoplasm")


def segmentSpecsForClasses(classNames: Sequence[str]) -> list[SegmentSpec]:
    """Segments for a model's classes (index 0 = background is skipped).

    A binary tumour-core model gives :data:`TUMOUR_CORE_SEGMENT`; other classes become segments
    named after the class, with label value = class index (the engine's label map values), and
    the Neoplasm terminology for tumour classes.

    Example:
        >>> [s.name for s in segmentSpecsForClasses(["background", "necrosis", "enhancing"])]
        ['Necrosis', 'Enhancing']
    """
    names = list(classNames)
    if len(names) <= 2 and (len(names) < 2 or names[1].lower() in ("tumour_core", "tumor_core", "foreground")):
        return [TUMOUR_CORE_SEGMENT]
    specs = []
    for index, name in enumerate(names[1:], start=1):
        segmentId = "".join(part.capitalize() for part in name.replace("-", "_").split("_") if part) or f"Class{index}"
        title = name.replace("_", " ").strip().capitalize() or f"Class {index}"
        tumour = any(word in name.lower() for word in _TUMOUR_WORDS)
        specs.append(SegmentSpec(index, segmentId, title, CLASS_COLORS[(index - 1) % len(CLASS_COLORS)],
                                 TUMOUR_CORE_TERMINOLOGY if tumour else None))
    return specs


# --------------------------------------------------------------------------------- geometry
def ijkToRas(volumeNode) -> np.ndarray:
    """The volume's 4x4 IJK-to-RAS matrix (float64)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return sutil.arrayFromVTKMatrix(matrix).copy()


def dimensions(volumeNode) -> tuple[int, int, int]:
    """Voxel counts (I, J, K) of a volume node, or (0, 0, 0) without image data."""
    image = volumeNode.GetImageData()
    return tuple(image.GetDimensions()) if image is not None else (0, 0, 0)  # type: ignore[return-value]


def sameGrid(volumeA, volumeB, tolerance: float = GRID_TOLERANCE) -> bool:
    """True when two volume nodes have the same dimensions and IJK-to-RAS (within ``tolerance``)."""
    if dimensions(volumeA) != dimensions(volumeB):
        return False
    return bool(np.allclose(ijkToRas(volumeA), ijkToRas(volumeB), rtol=0.0, atol=tolerance))


def physicalBox(volumeNode) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned RAS bounding box (mm) of a volume's voxel corners: (low, high)."""
    matrix = ijkToRas(volumeNode)
    size = np.asarray(dimensions(volumeNode), dtype=np.float64)
    corners = np.array([[(size[a] - 0.5) if (index >> a) & 1 else -0.5 for a in range(3)] + [1.0]
                        for index in range(8)])
    points = (matrix @ corners.T).T[:, :3]
    return points.min(axis=0), points.max(axis=0)


def overlapFraction(volumeA, volumeB) -> float:
    """Volume of the intersection of two volumes' physical boxes over the smaller box's volume (0..1)."""
    lowA, highA = physicalBox(volumeA)
    lowB, highB = physicalBox(volumeB)
    inter = np.clip(np.minimum(highA, highB) - np.maximum(lowA, lowB), 0.0, None)
    smaller = min(float(np.prod(highA - lowA)), float(np.prod(highB - lowB)))
    return float(np.prod(inter)) / smaller if smaller > 0 else 0.0


def copyGeometry(sourceVolume, targetVolume) -> None:
    """Give ``targetVolume`` the IJK-to-RAS matrix of ``sourceVolume``."""
    matrix = vtk.vtkMatrix4x4()
    sourceVolume.GetIJKToRASMatrix(matrix)
    targetVolume.SetIJKToRASMatrix(matrix)


def checkNotTransformed(volumeNode) -> None:
    """Raise ValueError when a node sits under a transform (its file would not include it)."""
    transform = volumeNode.GetParentTransformNode()
    if transform is not None:
        raise ValueError(f"{volumeNode.GetName()}: is under the transform {transform.GetName()!r}; "
                         "harden the transform (Data module) before using it")


# --------------------------------------------------------------------------------- files
def _fileExtension(path: Path) -> str:
    name = path.name.lower()
    for ext in VOLUME_EXTENSIONS:
        if name.endswith(ext):
            return ext
    raise ValueError(f"{path}: unsupported volume file extension; use one of {', '.join(VOLUME_EXTENSIONS)}")


def writeVolume(volumeNode, path: str | os.PathLike, compress: bool = False) -> Path:
    """Write a scalar or labelmap volume node to a file, atomically.

    Args:
        volumeNode: a vtkMRMLScalarVolumeNode or vtkMRMLLabelMapVolumeNode with image data.
        path: destination; the extension picks the format (.nrrd keeps geometry exactly).
        compress: gzip the voxel data (NRRD); .nii.gz is always compressed.

    Returns:
        The written path.

    Raises:
        ValueError: no image data, a parent transform, or an unsupported extension.
        OSError: the file could not be written.
    """
    path = Path(path)
    ext = _fileExtension(path)
    if volumeNode.GetImageData() is None:
        raise ValueError(f"{volumeNode.GetName()}: the volume has no voxels")
    checkNotTransformed(volumeNode)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpName = str(path.parent / f".{path.name[: -len(ext)]}.{uuid.uuid4().hex[:12]}{ext}")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(tmpName)
    storage.SetUseCompression(1 if compress or ext == ".nii.gz" else 0)
    try:
        if not storage.WriteData(volumeNode):
            raise OSError(f"{path}: writing {volumeNode.GetName()} failed")
        os.replace(tmpName, path)
    finally:
        if os.path.exists(tmpName):
            os.remove(tmpName)
    return path


def readVolume(path: str | os.PathLike, scene, name: str | None = None, labelmap: bool = False):
    """Read a volume file into a new scalar (or labelmap) volume node of ``scene``.

    Args:
        path: a .nrrd, .nii.gz, .nii, .mha or .mhd file.
        scene: the vtkMRMLScene to add the node to.
        name: the node name (default: the file name without extension).
        labelmap: create a vtkMRMLLabelMapVolumeNode instead of a scalar volume.

    Returns:
        The new node, with display nodes; no storage node is attached (the file may be temporary).

    Raises:
        FileNotFoundError: the file does not exist.
        OSError: the file could not be read.
    """
    path = Path(path)
    ext = _fileExtension(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    className = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(className, name or path.name[: -len(ext)])
    try:
        readVolumeInto(path, node)
    except OSError:
        scene.RemoveNode(node)
        raise
    return node


def readVolumeInto(path: str | os.PathLike, volumeNode) -> None:
    """Replace the voxels and geometry of an existing volume node with a file's.

    Raises:
        FileNotFoundError: the file does not exist.
        OSError: the file could not be read.
    """
    path = Path(path)
    _fileExtension(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(volumeNode):
        raise OSError(f"{path}: could not be read as a volume")
    if volumeNode.GetDisplayNode() is None:
        volumeNode.CreateDefaultDisplayNodes()


def newVolumeLike(referenceVolume, scene, array: np.ndarray, name: str, labelmap: bool = False):
    """A new volume node on the grid of ``referenceVolume`` holding ``array``.

    Args:
        referenceVolume: gives the IJK-to-RAS matrix; ``array`` must have its (K, J, I) shape.
        scene: the scene to add the node to.
        array: voxel values, shape (K, J, I).
        name: the node name.
        labelmap: create a labelmap volume node.

    Raises:
        ValueError: the array shape does not match the reference grid.
    """
    expected = tuple(reversed(dimensions(referenceVolume)))
    if tuple(array.shape) != expected:
        raise ValueError(f"{name}: array shape {tuple(array.shape)} does not match the grid of "
                         f"{referenceVolume.GetName()} {expected} (K, J, I)")
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    sutil.updateVolumeFromArray(node, np.ascontiguousarray(array))
    copyGeometry(referenceVolume, node)
    node.CreateDefaultDisplayNodes()
    return node


def removeNodes(scene, nodes: Iterable) -> None:
    """Remove nodes (and labelmap colour tables made for them) from the scene."""
    for node in nodes:
        if node is None or scene.GetNodeByID(node.GetID()) is None:
            continue
        display = node.GetDisplayNode() if hasattr(node, "GetDisplayNode") else None
        color = display.GetColorNode() if display is not None and hasattr(display, "GetColorNode") else None
        scene.RemoveNode(node)
        # Exporting segments creates a colour table per labelmap; default tables are singletons.
        if color is not None and color.GetSingletonTag() is None and scene.GetNodeByID(color.GetID()):
            scene.RemoveNode(color)


def writeArrayOnGrid(array: np.ndarray, referenceVolume, path: str | os.PathLike, scene,
                     labelmap: bool = True) -> Path:
    """Write a (K, J, I) array to a file with the geometry of ``referenceVolume``."""
    node = newVolumeLike(referenceVolume, scene, array, "__asymseg_temp__", labelmap=labelmap)
    try:
        return writeVolume(node, path)
    finally:
        removeNodes(scene, [node])


# --------------------------------------------------------------------------------- segments
def _stringArray(values: Iterable[str]) -> vtk.vtkStringArray:
    array = vtk.vtkStringArray()
    for value in values:
        array.InsertNextValue(value)
    return array


def prepareSegmentationNode(segmentationNode, referenceVolume, linkVolume: bool = True) -> None:
    """Give a segmentation node the geometry of ``referenceVolume`` and display nodes.

    Args:
        segmentationNode: the segmentation node.
        referenceVolume: the volume whose grid the segmentation uses.
        linkVolume: also reference it as the segmentation's source volume (needed e.g. for
            DICOM SEG export); False for temporary volumes.
    """
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
    if linkVolume:
        segmentationNode.SetNodeReferenceID(segmentationNode.GetReferenceImageGeometryReferenceRole(),
                                            referenceVolume.GetID())
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()


def importLabelmapArray(array: np.ndarray, gridVolume, segmentationNode, segments: Sequence[SegmentSpec],
                        segmentationsLogic, scene, referenceVolume=None) -> list[str]:
    """Turn label values of an array into named, coloured segments with terminology.

    Each :class:`SegmentSpec` becomes one segment (replacing a segment with the same ID), filled
    with the voxels equal to its label value; an absent label gives an empty segment.

    Args:
        array: integer labels, shape (K, J, I), on the grid of ``gridVolume``.
        gridVolume: a volume node giving the array's geometry.
        segmentationNode: the vtkMRMLSegmentationNode to fill.
        segments: the label values to import, with names, colours and terminology.
        segmentationsLogic: the Segmentations module logic (vtkSlicerSegmentationsModuleLogic).
        scene: the scene (for temporary nodes).
        referenceVolume: the segmentation's reference geometry (default: ``gridVolume``).

    Returns:
        The segment IDs, in the order of ``segments``.

    Raises:
        RuntimeError: MRML refused the import.
        ValueError: duplicate segment IDs or an array that does not fit the grid.
    """
    ids = [spec.segmentId for spec in segments]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate segment IDs: {ids}")
    prepareSegmentationNode(segmentationNode, referenceVolume or gridVolume, linkVolume=referenceVolume is not None)
    segmentation = segmentationNode.GetSegmentation()
    for spec in segments:
        if segmentation.GetSegment(spec.segmentId) is not None:
            segmentation.RemoveSegment(spec.segmentId)
        segmentation.AddEmptySegment(spec.segmentId, spec.name, list(spec.color))
        segment = segmentation.GetSegment(spec.segmentId)
        segment.SetColor(*spec.color)
        if spec.terminology:
            segment.SetTag(segment.GetTerminologyEntryTagName(), spec.terminology)
        mask = (array == spec.labelValue).astype(np.uint8)
        if not mask.any():
            continue  # keep the empty segment: "nothing found" is a result
        temp = newVolumeLike(gridVolume, scene, mask, "__asymseg_temp_label__", labelmap=True)
        try:
            importIds = _stringArray([spec.segmentId])
            if not segmentationsLogic.ImportLabelmapToSegmentationNode(temp, segmentationNode, importIds):
                raise RuntimeError(f"{segmentationNode.GetName()}: importing segment {spec.name!r} failed")
        finally:
            removeNodes(scene, [temp])
    return ids


def importLabelmapFile(path: str | os.PathLike, segmentationNode, segments: Sequence[SegmentSpec],
                       segmentationsLogic, scene, referenceVolume=None) -> list[str]:
    """Read a label file and import its label values as segments (see :func:`importLabelmapArray`).

    The file's own geometry is used for the voxels; ``referenceVolume`` (default: the file's
    grid) becomes the segmentation's reference geometry.
    """
    labelNode = readVolume(path, scene, name="__asymseg_temp_labels__", labelmap=True)
    try:
        array = sutil.arrayFromVolume(labelNode)
        return importLabelmapArray(array, labelNode, segmentationNode, segments, segmentationsLogic, scene,
                                   referenceVolume=referenceVolume)
    finally:
        removeNodes(scene, [labelNode])


def segmentsToArray(segmentationNode, segmentIds: Sequence[str], referenceVolume,
                    segmentationsLogic, scene) -> np.ndarray:
    """The union of segments as a binary array on the grid of ``referenceVolume``.

    Args:
        segmentationNode: the source segmentation.
        segmentIds: the segments to combine (an empty list gives an all-zero array).
        referenceVolume: the target grid.
        segmentationsLogic: the Segmentations module logic.
        scene: the scene (for the temporary labelmap).

    Returns:
        uint8 array of 0/1, shape (K, J, I) of ``referenceVolume``.

    Raises:
        KeyError: an ID that is not in the segmentation.
        RuntimeError: MRML refused the export.
    """
    shape = tuple(reversed(dimensions(referenceVolume)))
    segmentation = segmentationNode.GetSegmentation()
    for segmentId in segmentIds:
        if segmentation.GetSegment(segmentId) is None:
            raise KeyError(f"{segmentationNode.GetName()}: no segment with ID {segmentId!r}")
    if not segmentIds:
        return np.zeros(shape, np.uint8)
    labelNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__asymseg_temp_export__")
    try:
        if not segmentationsLogic.ExportSegmentsToLabelmapNode(segmentationNode, _stringArray(segmentIds),
                                                                labelNode, referenceVolume):
            raise RuntimeError(f"{segmentationNode.GetName()}: exporting segments {list(segmentIds)} failed")
        array = sutil.arrayFromVolume(labelNode)
        if tuple(array.shape) != shape:
            raise RuntimeError(f"{segmentationNode.GetName()}: exported grid {tuple(array.shape)} differs from "
                               f"{referenceVolume.GetName()} {shape}")
        return (array > 0).astype(np.uint8)
    finally:
        removeNodes(scene, [labelNode])


def isTumourCoreSegment(segment) -> bool:
    """True for a segment named "... core" or tagged with the Neoplasm terminology."""
    tag = vtk.reference("")
    hasTag = segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
    return "core" in segment.GetName().lower() or bool(hasTag and f"^{NEOPLASM_CODE}^" in str(tag))


def referenceSegmentIds(segmentationNode, labelValues: Iterable[int] | None = None) -> list[str]:
    """The segments of a reference segmentation that make up the tumour core.

    In order of preference: segments named "... core" or tagged as Neoplasm; else, given label
    values (e.g. BraTS 2015 core 1, 3, 4), the segments carrying those values (segmentations
    loaded from label files keep them); else every segment.
    """
    segmentation = segmentationNode.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    named = [i for i in ids if isTumourCoreSegment(segmentation.GetSegment(i))]
    if named:
        return named
    if labelValues is not None:
        values = set(int(v) for v in labelValues)
        byValue = [i for i in ids if segmentation.GetSegment(i).GetLabelValue() in values]
        if byValue:
            return byValue
    return ids


def referenceToArray(referenceNode, referenceVolume, segmentationsLogic, scene,
                     labelValues: Iterable[int] | None = None,
                     segmentIds: Sequence[str] | None = None) -> np.ndarray:
    """A reference (segmentation or labelmap) as a binary array on the grid of ``referenceVolume``.

    Args:
        referenceNode: a vtkMRMLSegmentationNode, or a labelmap/scalar volume of label values.
        referenceVolume: the target grid (the input volume).
        segmentationsLogic: the Segmentations module logic.
        scene: the scene.
        labelValues: which label values are foreground (volumes: default every non-zero value;
            segmentations: see :func:`referenceSegmentIds`).
        segmentIds: explicit segments of a segmentation (overrides ``labelValues``).

    Returns:
        uint8 array of 0/1, shape (K, J, I) of ``referenceVolume``.

    Raises:
        TypeError: an unsupported node class.
    """
    if referenceNode.IsA("vtkMRMLSegmentationNode"):
        ids = list(segmentIds) if segmentIds is not None else referenceSegmentIds(referenceNode, labelValues)
        return segmentsToArray(referenceNode, ids, referenceVolume, segmentationsLogic, scene)
    if not referenceNode.IsA("vtkMRMLScalarVolumeNode"):  # labelmap nodes are scalar volumes too
        raise TypeError(f"{referenceNode.GetName()}: a reference must be a segmentation or a labelmap, "
                        f"not {referenceNode.GetClassName()}")
    checkNotTransformed(referenceNode)
    values = sutil.arrayFromVolume(referenceNode)
    if labelValues is None:
        mask = (values > 0).astype(np.uint8)
    else:
        mask = np.isin(values, np.asarray(list(labelValues))).astype(np.uint8)
    if sameGrid(referenceNode, referenceVolume):
        return mask
    # Another grid: resample (nearest neighbour) through a temporary segmentation.
    temp = newVolumeLike(referenceNode, scene, mask, "__asymseg_temp_ref__", labelmap=True)
    segNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "__asymseg_temp_refseg__")
    try:
        segNode.GetSegmentation().AddEmptySegment("reference", "reference")
        if not segmentationsLogic.ImportLabelmapToSegmentationNode(temp, segNode, _stringArray(["reference"])):
            raise RuntimeError(f"{referenceNode.GetName()}: resampling the reference failed")
        return segmentsToArray(segNode, ["reference"], referenceVolume, segmentationsLogic, scene)
    finally:
        removeNodes(scene, [temp, segNode])


def placeBeside(node, siblingNode, scene) -> None:
    """Put ``node`` in the same subject-hierarchy folder as ``siblingNode`` (when the hierarchy exists)."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if shNode is None:
        return
    siblingItem = shNode.GetItemByDataNode(siblingNode)
    if not siblingItem:
        return
    parent = shNode.GetItemParent(siblingItem)
    item = shNode.GetItemByDataNode(node)
    if item:
        shNode.SetItemParent(item, parent)
    else:  # without Slicer's GUI plugins, nodes get no item automatically
        shNode.CreateItem(parent, node)
