"""Export a training case from the scene: channel volumes + a segmentation -> a case folder.

The folder uses BraTS 2017-2021 names, which the engine's case discovery understands::

    <folder>/<id>/<id>_flair.nii.gz, <id>_t1ce.nii.gz, <id>_t1.nii.gz, <id>_t2.nii.gz, <id>_seg.nii.gz

The label map holds 1 for the foreground (the union of the chosen segments, or the chosen label
values of a labelmap) and 0 elsewhere; 1 is tumour core in every BraTS convention. NIfTI keeps
the geometry at float32 precision; pass ``extension=".nrrd"`` to keep it exactly.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from AsymSegLib import channels as C
from AsymSegLib import scene as S

log = logging.getLogger(__name__)

#: File suffix per canonical channel (BraTS 2017-2021 names).
CHANNEL_SUFFIXES: dict[str, str] = {"flair": "flair", "t1c": "t1ce", "t1": "t1", "t2": "t2"}
LABEL_SUFFIX = "seg"
#: The foreground label value written to the label map.
FOREGROUND_LABEL = 1
#: Geometry tolerance (mm and direction cosines) between the channels of one case.
CASE_GRID_TOLERANCE = 1e-4

_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class SceneCase:
    """A training case in the scene.

    Attributes:
        caseId: folder and file prefix (letters, digits, ``._-``).
        volumes: canonical channel name -> scalar volume node.
        labels: a vtkMRMLSegmentationNode or a labelmap volume node.
        segmentIds: segments forming the foreground (segmentations; default: see
            :func:`AsymSegLib.scene.referenceSegmentIds`).
        labelValues: label values forming the foreground (labelmaps; default: every non-zero value).
    """

    caseId: str
    volumes: Mapping[str, object]
    labels: object
    segmentIds: Sequence[str] | None = None
    labelValues: Sequence[int] | None = None

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


def caseFileName(caseId: str, channel: str, extension: str = ".nii.gz") -> str:
    """``caseFileName("c1", "t1c")`` -> ``"c1_t1ce.nii.gz"``; channel ``"seg"`` gives the label file."""
    suffix = LABEL_SUFFIX if channel == LABEL_SUFFIX else CHANNEL_SUFFIXES[C.canonicalChannel(channel)]
    return f"{caseId}_{suffix}{extension}"


def exportTrainingCase(case: SceneCase, folder: str | os.PathLike, segmentationsLogic, scene,
                       extension: str = ".nii.gz", overwrite: bool = False) -> Path:
    """Write a scene case as ``<folder>/<caseId>/`` with channel files and a binary label map.

    The first volume gives the grid; the labels are resampled onto it (nearest neighbour). The
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
        ValueError: a bad case (id, channels, channels on different grids) or an existing folder.
    """
    case.check()
    volumes = list(case.volumes.items())
    referenceVolume = volumes[0][1]
    for channel, node in volumes[1:]:
        if not S.sameGrid(node, referenceVolume, tolerance=CASE_GRID_TOLERANCE):
            raise ValueError(f"{case.caseId}: {node.GetName()} ({channel}) is not on the grid of "
                             f"{referenceVolume.GetName()}; resample it first (Resample Scalar/Vector/DWI Volume)")
    target = Path(folder) / case.caseId
    if target.exists() and not overwrite:
        raise ValueError(f"{target}: the case folder exists already")
    partial = Path(folder) / f".{case.caseId}.{uuid.uuid4().hex[:8]}.partial"
    partial.mkdir(parents=True)
    try:
        for channel, node in volumes:
            S.writeVolume(node, partial / caseFileName(case.caseId, channel, extension))
        labels = S.referenceToArray(case.labels, referenceVolume, segmentationsLogic, scene,
                                    labelValues=case.labelValues, segmentIds=case.segmentIds)
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
