"""Plausibility checks run on a case before the network sees it.

Each check returns a :class:`Finding`: one line that names the file, what looks wrong and what
to do. :func:`~asymseg.io.load_case` collects them on :attr:`Case.findings`, logs them as
warnings and, with ``strict``, refuses the case instead (:class:`~asymseg.errors.InputError`).
The commands copy them into their ``--json`` output and their JSON progress lines.

==================  ====================================================================================
check               fires when
==================  ====================================================================================
brain-volume        the brain mask is larger than ``constants.MAX_BRAIN_ML`` (skull left in)
slice-thickness     a channel's thickest axis exceeds ``SLICE_THICKNESS_FACTOR`` x the model's spacing
not-mr              at least ``CT_AIR_FRACTION`` of the voxels lie at -1100..-500 (CT in HU)
==================  ====================================================================================

Channels whose physical extents barely overlap are not a finding but an error in every mode
(:func:`check_overlap`): they are probably not from the same visit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from asymseg import constants as C
from asymseg.errors import InputError
from asymseg.io.geometry import Geometry
from asymseg.io.resample import overlap_fraction

log = logging.getLogger(__name__)

#: Hounsfield range of air and fat, never reached by MR intensities (raw or z-scored).
CT_AIR_RANGE = (-1100.0, -500.0)
#: The spacing (mm, x y z) checks compare with when the model card records none: the BraTS grid.
DEFAULT_TRAINING_SPACING = (1.0, 1.0, 1.0)
SKULL_STRIP_ADVICE = ("skull-strip it first (e.g. HD-BET, or Slicer's SwissSkullStripper extension) "
                      "or pass the brain mask with --mask")


@dataclass(frozen=True)
class Finding:
    """One plausibility problem.

    Args:
        check: "brain-volume", "slice-thickness" or "not-mr".
        file: the file concerned (or the case folder).
        message: one line naming the file, the problem and what to do.
        value: the measured figure (ml, mm, fraction).
    """

    check: str
    file: str
    message: str
    value: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_overlap(reference: Geometry, reference_path: object, other: Geometry, other_path: object) -> float:
    """Refuse two images whose physical boxes barely overlap.

    Returns:
        The overlap fraction (intersection over the smaller box).

    Raises:
        InputError: below ``constants.MIN_CHANNEL_OVERLAP``.
    """
    fraction = overlap_fraction(reference, other)
    if fraction < C.MIN_CHANNEL_OVERLAP:
        raise InputError(f"{other_path} and {reference_path} overlap by only {100 * fraction:.0f}% in physical "
                         "space; they are probably not from the same visit: register them first (e.g. Slicer's "
                         "General Registration (BRAINS) or Elastix modules)")
    return fraction


def check_brain_volume(volume_ml: float, where: object, mask_source: str) -> Finding | None:
    """A brain mask far larger than a brain: the skull (or the whole head) is still in."""
    if volume_ml <= C.MAX_BRAIN_ML:
        return None
    how = "the brain mask" if mask_source == "file" else "the brain mask derived from the background"
    return Finding("brain-volume", str(where),
                   f"{where}: {how} is {volume_ml:,.0f} ml, more than a brain ({C.MAX_BRAIN_ML:,.0f} ml at most); "
                   f"the skull is probably still in: {SKULL_STRIP_ADVICE}", volume_ml)


def check_slice_thickness(geometry: Geometry, path: object,
                          training_spacing: Sequence[float] | None) -> Finding | None:
    """Voxels much thicker than the model was trained on (e.g. 5.5 mm slices against 1 mm)."""
    reference = max(training_spacing or DEFAULT_TRAINING_SPACING)
    thickest = max(geometry.spacing)
    if thickest <= C.SLICE_THICKNESS_FACTOR * reference:
        return None
    return Finding("slice-thickness", str(path),
                   f"{path}: voxels are {thickest:g} mm thick, far above the {reference:g} mm the model was "
                   "trained at; the image is resampled, but detail between slices is lost and results are less "
                   "reliable: use a thin-slice (3-D) acquisition if there is one", thickest)


def check_mr_intensities(array: np.ndarray, path: object) -> Finding | None:
    """Intensities of a CT scan (air and fat in Hounsfield units), which MR never has."""
    low, high = CT_AIR_RANGE
    fraction = float(np.count_nonzero((array >= low) & (array <= high))) / max(1, array.size)
    if fraction < C.CT_AIR_FRACTION:
        return None
    return Finding("not-mr", str(path),
                   f"{path}: {100 * fraction:.0f}% of the voxels lie between {low:g} and {high:g}, the Hounsfield "
                   "units of air and fat: this looks like a CT scan, not MR; the model takes MR (FLAIR, T1c ...)",
                   fraction)


def report(findings: Sequence[Finding], *, strict: bool) -> None:
    """Log each finding as a warning, or refuse the case on the first one when ``strict``.

    Raises:
        InputError: ``strict`` and at least one finding (its message, plus how to go on).
    """
    for finding in findings:
        if strict:
            raise InputError(f"{finding.message} (refused with --strict; run without it to go on anyway)")
        log.warning("%s", finding.message)

