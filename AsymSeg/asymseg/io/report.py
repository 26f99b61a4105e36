"""What a case folder holds, as a dictionary: the API behind ``asymseg info``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from asymseg.errors import InputError
from asymseg.io.case import label_values, load_case
from asymseg.io.discovery import LABEL, MASK, CaseFiles
from asymseg.target import resolve_target


def case_report(files: CaseFiles, *, convention: str | None = None,
                foreground_labels: Sequence[int] | None = None, strict: bool = False) -> dict[str, Any]:
    """Read a case (without normalising) and describe it.

    The target comes from ``convention`` or ``foreground_labels``, else it is guessed from the
    label values; when the guess is impossible the report says why (``target_error``) instead of
    failing, since describing the case is still useful.

    Args:
        files: from :func:`~asymseg.io.discover_case`.
        convention: BraTS label convention ("brats2015", "brats2017", "brats2023").
        foreground_labels: explicit source label values of the foreground.
        strict: refuse the case when a plausibility check fails (:mod:`asymseg.io.checks`).

    Returns:
        A JSON-ready dict: ``case_id``, ``folder``, ``channels`` (name, file, how it was found,
        intensity statistics inside the brain), ``label`` (file, values), ``mask`` (source, file),
        ``geometry``, ``brain_voxels``, ``brain_volume_ml``, ``target`` (classes, convention,
        guessed, voxels per class), ``target_error``, ``tumour_core_voxels`` (voxels of the rare
        classes).

    Raises:
        InputError: the case cannot be loaded (unreadable file, grids differ, empty mask), or the
            explicit target options conflict.
    """
    case = load_case(files, normalize=False, strict=strict)
    brain = case.mask
    channels = []
    for index, name in enumerate(case.channels):
        inside = case.image[index][brain].astype(np.float64)
        channels.append({
            "name": name, "file": str(files.channels[name]), "found": files.origin.get(name, "given"),
            "brain_mean": float(inside.mean()), "brain_std": float(inside.std()),
            "brain_min": float(inside.min()), "brain_max": float(inside.max()),
        })
    values = label_values(case.label) if case.label is not None else None
    guessed = not convention and not foreground_labels
    target = None
    target_error = None
    try:
        target = resolve_target(convention=convention, foreground_labels=foreground_labels,
                                label_values=values, source=str(files.label or files.where))
    except InputError as err:
        if not guessed:
            raise
        target_error = str(err)
    target_info = None
    core_voxels = None
    if target is not None:
        target_info = {**target.to_dict(), "guessed": guessed, "voxels": None}
        if case.label is not None:
            classes = target.class_map(case.label)
            counts = np.bincount(classes.ravel(), minlength=target.num_classes)
            target_info["voxels"] = {c.name: int(counts[i]) for i, c in enumerate(target.classes)}
            core_voxels = int(np.count_nonzero(target.rare_mask(case.label)))
    brain_voxels = case.brain_voxels
    return {
        "case_id": case.case_id,
        "folder": str(files.folder) if files.folder is not None else None,
        "channels": channels,
        "label": None if files.label is None else {
            "file": str(files.label), "found": files.origin.get(LABEL, "given"), "values": list(values or ()),
        },
        "mask": {"source": case.mask_source, "file": str(files.mask) if files.mask is not None else None,
                 "found": files.origin.get(MASK) if files.mask is not None else None},
        "geometry": {**case.geometry.to_dict(), "voxel_volume_ml": case.geometry.voxel_volume_ml},
        "brain_voxels": brain_voxels,
        "brain_volume_ml": brain_voxels * case.geometry.voxel_volume_ml,
        "target": target_info,
        "target_error": target_error,
        "tumour_core_voxels": core_voxels,
        "tumour_core_fraction_of_brain": (core_voxels / brain_voxels) if core_voxels is not None else None,
        "warnings": [f.to_dict() for f in case.findings],
    }
