"""Export a training case from the scene: channel volumes + a segmentation -> a case folder.

The folder uses BraTS 2017-2021 names, which the engine's case discovery understands::

    <folder>/<id>/<id>_flair.nii.gz, <id>_t1ce.nii.gz, <id>_t1.nii.gz, <id>_t2.nii.gz, <id>_seg.nii.gz

The label map holds 1 for the tumour core and 0 elsewhere; 1 is tumour core in every BraTS
convention. Which labels or segments of the case form the core is the case's choice
(:func:`coreMask`): by default the label values 1, 3 and 4, the core in every BraTS convention
(2 is the oedema in all of them), so a four-label BraTS labelmap trains on the core only. NIfTI
keeps the geometry at float32 precision; pass ``extension=".nrrd"`` to keep it exactly.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from slicer import util as sutil

from AsymSegLib import channels as C
from AsymSegLib import scene as S

log = logging.getLogger(__name__)

#: File suffix per canonical channel (BraTS 2017-2021 names).
CHANNEL_SUFFIXES: dict[str, str] = {"flair": "flair", "t1c": "t1ce", "t1": "t1", "t2": "t2"}
LABEL_SUFFIX = "seg"
#: The foreground label value written to the label map.
FOREGROUND_LABEL = 1

#: Tumour-core label values of each BraTS convention (one click away in the panel).
BRATS_CORE_LABELS: dict[str, tuple[int, ...]] = {
    "BraTS 2015 (1 necrosis, 3 non-enhancing, 4 enhancing)": (1, 3, 4),
    "BraTS 2017-2021 (1 necrosis/non-enhancing, 4 enhancing)": (1, 4),
    "BraTS 2023 (1 necrosis, 3 enhancing)": (1, 3),
}
#: The default core labels: the core in every BraTS convention (label 2 is the oedema in all).
DEFAULT_CORE_LABELS: tuple[int, ...] = (1, 3, 4)

#: Segment names that are never tumour core, whatever their label value.
_NOT_CORE = re.compile(r"o?edema|whole|brain|background|normal|healthy", re.IGNORECASE)

_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parseLabelValues(text: str) -> tuple[int, ...] | None:
    """``"1,3,4"`` -> (1, 3, 4); empty -> None (every non-zero label).

    Raises:
        ValueError: a value that is not a whole number >= 1.
    """
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    if not parts:
        return None
    try:
        values = tuple(int(p) for p in parts)
    except ValueError as err:
        raise ValueError(f"core labels {text!r}: expected whole numbers separated by commas, e.g. 1,3,4") from err
    if any(v < 1 for v in values):
        raise ValueError(f"core labels {text!r}: label values are >= 1 (0 is the background)")
    return values


def parseSegmentNames(text: str) -> tuple[str, ...] | None:
    """``"Necrosis, Enhancing"`` -> ("Necrosis", "Enhancing"); empty -> None."""
    names = tuple(p.strip() for p in str(text).split(",") if p.strip())
    return names or None


@dataclass
class SceneCase:
    """A training case in the scene.

    Attributes:
        caseId: folder and file prefix (letters, digits, ``._-``).
        volumes: canonical channel name -> scalar volume node.
        labels: a vtkMRMLSegmentationNode or a labelmap volume node.
        segmentIds: segment IDs forming the core (segmentations; overrides the rest).
        labelValues: label values forming the core (default :data:`DEFAULT_CORE_LABELS`; None:
            every non-zero value of a labelmap). Segmentations: the segments with these values
            unless segments are named or tagged as core (see :func:`coreSegmentIds`).
        segmentNames: segment names forming the core (segmentations; overrides the naming rules).
    """

    caseId: str
    volumes: Mapping[str, object]
    labels: object
    segmentIds: Sequence[str] | None = None
    labelValues: Sequence[int] | None = DEFAULT_CORE_LABELS
    segmentNames: Sequence[str] | None = None

    def check(self) -> None:
        """Raise ValueError naming the first problem."""
        if not _CASE_ID.match(self.caseId or ""):
            raise ValueError(f"case id {self.caseId!r}: use letters, digits, '.', '_' or '-' (no spaces or slashes)")
        if not self.volumes:
            raise ValueError(f"{self.caseId}: no channel volume")
        for channel, node in self.volumes.items():
            if C.canonicalChannel(channel) not in CHANNEL_SUFFIXES:
                raise ValueError(f"{self.caseId}: unknown channel {channel!r}; "
                                 f"expected one of {sorted(CHANNEL_SUFFIXES)}")
            if node is None or node.GetImageData() is None:
                raise ValueError(f"{self.caseId}: no volume (or no voxels) for the {channel} channel")
        if self.labels is None:
            raise ValueError(f"{self.caseId}: no segmentation")


@dataclass(frozen=True)
class CorePreview:
    """What a case contributes as tumour core, shown before training starts.

    Attributes:
        caseId: the case.
        voxels: core voxels on the case's grid.
        millilitres: their volume.
        source: which labels or segments form the core, in words.
        leftOut: the labels or segments that are not core (e.g. the oedema), in words.
    """

    caseId: str
    voxels: int
    millilitres: float
    source: str
    leftOut: str = ""

    def text(self) -> str:
        """``"pat1: 3,120 core voxels (3.1 ml) from labels 1, 4; left out: label 2"``."""
        line = f"{self.caseId}: {self.voxels:,} core voxels ({self.millilitres:.1f} ml) from {self.source}"
        return f"{line}; left out: {self.leftOut}" if self.leftOut else line


def _segmentIdsAndNames(segmentationNode) -> list[tuple[str, str, int]]:
    segmentation = segmentationNode.GetSegmentation()
    result = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        result.append((segmentation.GetNthSegmentID(i), segment.GetName(), segment.GetLabelValue()))
    return result


def coreSegmentIds(segmentationNode, labelValues: Sequence[int] | None = DEFAULT_CORE_LABELS,
                   segmentNames: Sequence[str] | None = None) -> list[str]:
    """The segments of a training segmentation that form the tumour core.

    In order: the segments named in ``segmentNames`` (case-insensitive); else segments named
    "... core" or tagged Neoplasm; else the segments whose label value is in ``labelValues``
    when every segment has its own value, as segmentations loaded from BraTS label files do
    (1, 2, 3, 4; segments drawn or imported one by one all have value 1), except segments named
    as oedema, whole tumour, brain or background; else the only segment. Never every
    segment of several: the oedema must not become tumour core.

    Raises:
        ValueError: a named segment is missing, or the core cannot be told apart (names the segments).
    """
    segments = _segmentIdsAndNames(segmentationNode)
    name = segmentationNode.GetName()
    if not segments:
        raise ValueError(f"{name}: the segmentation has no segment")
    listing = ", ".join(f"{n!r} (label {v})" for _, n, v in segments)
    if segmentNames:
        wanted = {n.strip().lower() for n in segmentNames}
        missing = sorted(wanted - {n.lower() for _, n, _ in segments})
        if missing:
            raise ValueError(f"{name}: no segment named {', '.join(missing)}; its segments are {listing}")
        return [i for i, n, _ in segments if n.lower() in wanted]
    segmentation = segmentationNode.GetSegmentation()
    named = [i for i, _, _ in segments if S.isTumourCoreSegment(segmentation.GetSegment(i))]
    if named:
        return named
    distinct = len({v for _, _, v in segments}) == len(segments)  # as loaded from one label file
    if labelValues and distinct:
        values = {int(v) for v in labelValues}
        byValue = [i for i, n, v in segments if v in values and not _NOT_CORE.search(n)]
        if byValue:
            return byValue
    if len(segments) == 1 and not _NOT_CORE.search(segments[0][1]):
        return [segments[0][0]]
    raise ValueError(f"{name}: cannot tell which segments are tumour core: none is named '... core' and none "
                     f"has a core label value ({', '.join(map(str, labelValues or ()))}); its segments are "
                     f"{listing}. Enter the core segments' names")


def coreMask(case: SceneCase, segmentationsLogic, scene) -> tuple[np.ndarray, CorePreview]:
    """The case's tumour core as a 0/1 array on the grid of its first volume, and its preview.

    Raises:
        ValueError: the chosen labels or segments do not fit the case (the message names the
            case, the labels found and the ones asked for).
    """
    case.check()
    referenceVolume = next(iter(case.volumes.values()))
    labels = case.labels
    if labels.IsA("vtkMRMLSegmentationNode"):
        segments = _segmentIdsAndNames(labels)
        try:
            ids = list(case.segmentIds) if case.segmentIds is not None else coreSegmentIds(
                labels, case.labelValues, case.segmentNames)
        except ValueError as err:
            raise ValueError(f"{case.caseId}: {err}") from err
        mask = S.segmentsToArray(labels, ids, referenceVolume, segmentationsLogic, scene)
        names = {i: n for i, n, _ in segments}
        source = "segment" + ("s " if len(ids) > 1 else " ") + ", ".join(names.get(i, i) for i in ids)
        leftOut = ", ".join(n for i, n, _ in segments if i not in ids)
    else:
        values = sutil.arrayFromVolume(labels) if labels.IsA("vtkMRMLScalarVolumeNode") else None
        if values is None:
            raise ValueError(f"{case.caseId}: {labels.GetName()} is neither a segmentation nor a labelmap")
        present = sorted(int(v) for v in np.unique(values) if v != 0)
        wanted = None if case.labelValues is None else sorted({int(v) for v in case.labelValues})
        chosen = present if wanted is None else [v for v in present if v in wanted]
        if present and not chosen:
            raise ValueError(f"{case.caseId}: {labels.GetName()} has labels {', '.join(map(str, present))}, none of "
                             f"the core labels {', '.join(map(str, wanted))}; choose the core labels of its convention")
        mask = S.referenceToArray(labels, referenceVolume, segmentationsLogic, scene,
                                  labelValues=case.labelValues)
        source = ("label" + ("s " if len(chosen) > 1 else " ") + ", ".join(map(str, chosen))) if chosen else "no label"
        rest = [v for v in present if v not in chosen]
        leftOut = ("label" + ("s " if len(rest) > 1 else " ") + ", ".join(map(str, rest))) if rest else ""
    spacing = referenceVolume.GetSpacing()
    voxels = int(np.count_nonzero(mask))
    preview = CorePreview(case.caseId, voxels, voxels * math.prod(spacing) / 1000.0, source, leftOut)
    return mask, preview


def checkCaseFits(case: SceneCase, modelChannels: Sequence[str], segmentationsLogic, scene) -> CorePreview:
    """Check that a case can train a model with ``modelChannels``; returns its core preview.

    Raises:
        ValueError: a missing channel, volumes that barely overlap, core labels or segments that
            do not fit, or no core voxel at all (each message names the case).
    """
    case.check()
    have = {C.canonicalChannel(c) for c in case.volumes}
    missing = [c for c in modelChannels if C.canonicalChannel(c) not in have]
    if missing:
        raise ValueError(f"{case.caseId}: the model needs the {', '.join(missing)} channel(s); the case has "
                         f"{', '.join(sorted(have))}")
    checkSameVisit(case)
    _, preview = coreMask(case, segmentationsLogic, scene)
    if preview.voxels == 0:
        raise ValueError(f"{case.caseId}: no tumour-core voxel with the chosen {preview.source}; "
                         "a training case needs a labelled core")
    return preview


def checkSameVisit(case: SceneCase) -> None:
    """Refuse a case whose volumes barely overlap in physical space (not one visit's scans).

    Volumes on different grids are fine: each is written as it is, and the engine brings them
    onto one working grid by their physical geometry (no registration).

    Raises:
        ValueError: a volume overlapping the first one less than ``MIN_VOLUME_OVERLAP``.
    """
    volumes = list(case.volumes.items())
    first = volumes[0][1]
    for channel, node in volumes[1:]:
        fraction = S.overlapFraction(node, first)
        if fraction < S.MIN_VOLUME_OVERLAP:
            raise ValueError(f"{case.caseId}: {node.GetName()} ({channel}) and {first.GetName()} overlap by only "
                             f"{100 * fraction:.0f}% in physical space; they are probably not from the same visit: "
                             "register them first (General Registration (BRAINS) or Elastix)")


def caseFileName(caseId: str, channel: str, extension: str = ".nii.gz") -> str:
    """``caseFileName("c1", "t1c")`` -> ``"c1_t1ce.nii.gz"``; channel ``"seg"`` gives the label file."""
    suffix = LABEL_SUFFIX if channel == LABEL_SUFFIX else CHANNEL_SUFFIXES[C.canonicalChannel(channel)]
    return f"{caseId}_{suffix}{extension}"


def exportTrainingCase(case: SceneCase, folder: str | os.PathLike, segmentationsLogic, scene,
                       extension: str = ".nii.gz", overwrite: bool = False) -> Path:
    """Write a scene case as ``<folder>/<caseId>/`` with channel files and a binary label map.

    Each volume is written on its own grid (the engine resamples them by their physical geometry);
    the labels go onto the first volume's grid (nearest neighbour). The
    case folder appears complete or not at all (written under a temporary name, then renamed).

    Args:
        case: the :class:`SceneCase`.
        folder: the parent folder.
        segmentationsLogic: the Segmentations module logic.
        scene: the scene.
        extension: ``.nii.gz`` (default) or ``.nrrd`` (exact geometry).
        overwrite: replace an existing case folder.

    Returns:
        The case folder.

    Raises:
        ValueError: a bad case (id, channels, volumes that barely overlap) or an existing folder.
    """
    case.check()
    checkSameVisit(case)
    volumes = list(case.volumes.items())
    referenceVolume = volumes[0][1]
    target = Path(folder) / case.caseId
    if target.exists() and not overwrite:
        raise ValueError(f"{target}: the case folder exists already")
    partial = Path(folder) / f".{case.caseId}.{uuid.uuid4().hex[:8]}.partial"
    partial.mkdir(parents=True)
    try:
        for channel, node in volumes:
            S.writeVolume(node, partial / caseFileName(case.caseId, channel, extension))
        labels, _ = coreMask(case, segmentationsLogic, scene)
        if not labels.any():
            log.warning("%s: the segmentation is empty on the grid of %s", case.caseId, referenceVolume.GetName())
        S.writeArrayOnGrid(labels * FOREGROUND_LABEL, referenceVolume,
                           partial / caseFileName(case.caseId, LABEL_SUFFIX, extension), scene)
        if target.exists():
            shutil.rmtree(target)
        os.replace(partial, target)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return target
