"""Loading a case: channels stacked (C, D, H, W), geometry checked, brain mask, z-score normalisation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from asymseg import constants as C
from asymseg.errors import InputError
from asymseg.io.discovery import CaseFiles, canonical_channel
from asymseg.io.geometry import Geometry
from asymseg.io.images import MAX_VOXELS_ENV, max_voxels, read_image, read_label
from asymseg.io.resample import LINEAR, MASK, NEAREST, resample_array, working_grid

log = logging.getLogger(__name__)


@dataclass
class Case:
    """One loaded case.

    Args:
        case_id: from :class:`CaseFiles`.
        channels: channel names in the order of ``image``'s first axis.
        image: float32, shape (C, D, H, W); z-scored inside the mask (0 outside) unless loaded with
            ``normalize=False``.
        label: the source label values (int16/int32, shape (D, H, W)), or None.
        mask: bool brain mask, shape (D, H, W).
        mask_source: "file" or "derived".
        geometry: the working grid every array of the case is on.
        files: where it came from.
        reference_geometry: the reference channel's original grid, where results go back (equal
            to ``geometry`` when nothing was resampled).
        findings: plausibility problems (:class:`~asymseg.io.checks.Finding`), already logged.
    """

    case_id: str
    channels: tuple[str, ...]
    image: np.ndarray
    label: np.ndarray | None
    mask: np.ndarray
    mask_source: str
    geometry: Geometry
    files: CaseFiles
    reference_geometry: Geometry | None = None
    findings: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.reference_geometry is None:
            self.reference_geometry = self.geometry

    @property
    def resampled(self) -> bool:
        """Whether the working grid differs from the reference channel's original grid."""
        return bool(self.reference_geometry.differences(self.geometry))

    @property
    def label_values(self) -> tuple[int, ...]:
        """Sorted distinct label values (empty without a label)."""
        return label_values(self.label) if self.label is not None else ()

    @property
    def brain_voxels(self) -> int:
        return int(np.count_nonzero(self.mask))


def label_values(label: np.ndarray) -> tuple[int, ...]:
    """Sorted distinct values of an integer label map."""
    return tuple(int(v) for v in np.unique(label))


def _border_values(volume: np.ndarray) -> np.ndarray:
    """The voxels on the six faces of a (D, H, W) volume, flattened (edges counted more than once)."""
    return np.concatenate([volume[0].ravel(), volume[-1].ravel(), volume[:, 0].ravel(), volume[:, -1].ravel(),
                           volume[:, :, 0].ravel(), volume[:, :, -1].ravel()])


def background_value(volume: np.ndarray, *, name: object = "channel") -> float:
    """The value that fills most of a (D, H, W) volume's border (the skull-stripped background).

    Logs a warning naming ``name`` when no value covers half of the border.
    """
    values, counts = np.unique(_border_values(volume), return_counts=True)
    best = int(np.argmax(counts))
    if counts[best] < 0.5 * counts.sum():
        log.warning("%s: the volume border is not a constant background (the most common value "
                    "covers %.0f%%); the derived brain mask may include non-brain voxels",
                    name, 100.0 * counts[best] / counts.sum())
    return float(values[best])


def fill_mask_holes(mask: np.ndarray) -> np.ndarray:
    """Fill cavities completely enclosed by a (D, H, W) bool mask, in 3-D (face connectivity)."""
    if not mask.any():
        return mask
    filled = sitk.BinaryFillhole(sitk.GetImageFromArray(mask.astype(np.uint8)), fullyConnected=False,
                                 foregroundValue=1)
    return sitk.GetArrayFromImage(filled).astype(bool)


def background_values(image: np.ndarray) -> tuple[float, ...]:
    """Per channel, the value that fills most of the volume border (the skull-stripped background).

    Args:
        image: shape (C, D, H, W).

    Returns:
        One value per channel: 0 for BraTS, a negative constant for pre-normalised data.
    """
    return tuple(background_value(image[c], name=f"channel {c}") for c in range(image.shape[0]))


def derive_brain_mask(image: np.ndarray, *, fill_holes: bool = True) -> np.ndarray:
    """Brain mask of skull-stripped data: voxels that differ from the background in any channel.

    Skull-stripped volumes fill everything outside the brain with one constant, the value found
    on the volume border (:func:`background_values`): 0 for BraTS, a negative constant for data
    z-scored before skull-stripping was applied to the background (../shared/data). A voxel is
    brain when any channel differs from its channel's background value exactly. Brain voxels that
    happen to equal the background in every channel form enclosed holes, which are filled in 3-D
    (face connectivity) when ``fill_holes`` is set. No component filtering is done.

    Args:
        image: shape (C, D, H, W), before normalisation.
        fill_holes: fill cavities completely enclosed by brain.

    Returns:
        bool array of shape (D, H, W).
    """
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(f"expected a (C, D, H, W) image, got shape {image.shape}")
    mask = np.zeros(image.shape[1:], dtype=bool)
    for c, background in enumerate(background_values(image)):
        mask |= image[c] != background
    return fill_mask_holes(mask) if fill_holes else mask


def channel_statistics(image: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """Per channel (mean, std) inside the mask, computed in float64.

    Shape:
        image (C, D, H, W), mask (D, H, W) bool.
    """
    return [(float(v.mean()), float(v.std())) for v in (image[c][mask].astype(np.float64) for c in range(image.shape[0]))]


def _is_constant(mean: float, std: float) -> bool:
    return std <= C.EPS_STD * max(1.0, abs(mean))


def zscore(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score each channel with its mean and standard deviation inside the mask; 0 outside.

    Args:
        image: shape (C, D, H, W), any real dtype.
        mask: bool, shape (D, H, W), not empty.

    Returns:
        float32 array of shape (C, D, H, W).

    Raises:
        ValueError: the shapes do not fit.
        InputError: the mask is empty, or a channel is constant inside it.
    """
    image = np.asarray(image)
    mask = np.asarray(mask, dtype=bool)
    if image.ndim != 4 or mask.shape != image.shape[1:]:
        raise ValueError(f"expected image (C, D, H, W) and mask (D, H, W); got {image.shape} and {mask.shape}")
    if not mask.any():
        raise InputError("the brain mask is empty; cannot normalise")
    out = np.zeros(image.shape, dtype=np.float32)
    for c, (mean, std) in enumerate(channel_statistics(image, mask)):
        if _is_constant(mean, std):
            raise InputError(f"channel {c} is constant ({mean:g}) inside the brain mask; cannot normalise")
        out[c][mask] = ((image[c][mask].astype(np.float64) - mean) / std).astype(np.float32)
    return out


def _check_same_grid(reference: Geometry, reference_path: object, other: Geometry, other_path: object) -> None:
    problems = reference.differences(other)
    if problems:
        raise InputError(f"{reference_path} and {other_path} are on different grids: {'; '.join(problems)}")


def _onto(array: np.ndarray, geometry: Geometry, grid: Geometry, *, kind: str, default: float = 0.0) -> np.ndarray:
    """``array`` as read when its grid is the working grid, else resampled onto it."""
    if not grid.differences(geometry):
        return array
    return resample_array(array, geometry, grid, kind=kind, default=default)


def load_case(files: CaseFiles, *, channels: Sequence[str] | None = None, normalize: bool = True,
              require_label: bool = False, spacing: Sequence[float] | None = None,
              orientation: str | None = None, strict: bool = False) -> Case:
    """Read a case's channels, label and mask onto one working grid, check it, and normalise.

    The working grid is the reference channel's grid (``files.reference_channel``, else the
    first requested channel) in ``orientation`` and at ``spacing``
    (:func:`~asymseg.io.resample.working_grid`); images
    on other grids are resampled by their physical geometry (channels linearly, the label by
    nearest neighbour, the mask linearly then thresholded at 0.5). Images whose physical extent
    barely overlaps the reference's are refused. When every image is on the reference grid and
    ``spacing`` and ``orientation`` are None or the reference's own, nothing is resampled.

    Brain mask (one rule for every command): the mask file when there is one; else the voxels
    that differ from the border background in ANY channel the case holds (not only the requested
    ones), each channel compared on its own grid, then holes filled (:func:`derive_brain_mask`).

    Plausibility checks (:mod:`asymseg.io.checks`: brain volume, slice thickness, CT-like
    intensities) are logged as warnings and kept in :attr:`Case.findings`; ``strict`` refuses
    the case on the first one instead.

    Args:
        files: from :func:`~asymseg.io.discover_case`.
        channels: the channel names to load, in order (a model's inputs); None loads every
            channel found, in ``constants.CHANNEL_NAMES`` order.
        normalize: z-score each channel inside the brain mask (0 outside).
        require_label: fail when the case has no label file.
        spacing: the working spacing in mm, (x, y, z) (a model card's ``spacing``); None keeps
            the reference channel's.
        orientation: the working axis orientation (a model card's ``orientation``, e.g. "LPS");
            None keeps the reference channel's axes.
        strict: refuse the case when a plausibility check fails.

    Returns:
        The :class:`Case`, on the working grid; ``reference_geometry`` is the reference
        channel's original grid, where results go back.

    Raises:
        InputError: a requested channel or the label is missing, a file cannot be read, an image
            barely overlaps the reference, the brain mask is empty, a channel is constant inside
            the mask while ``normalize`` is set, or (``strict``) a plausibility check failed.
    """
    from asymseg.io import checks

    wanted = list(files.channels) if channels is None else [canonical_channel(n) for n in channels]
    if len(set(wanted)) != len(wanted):
        raise InputError(f"channel list {list(channels or [])} names a channel twice")
    for name in wanted:
        if name not in files.channels:
            raise InputError(f"{files.where}: no {name} channel (found: {', '.join(files.channels) or 'none'})")
    if require_label and files.label is None:
        raise InputError(f"{files.where}: no label file (looked for seg/label/OTMultiClass; pass --label PATH)")
    reference_name = canonical_channel(files.reference_channel) if files.reference_channel else wanted[0]
    if reference_name not in files.channels:
        raise InputError(f"{files.where}: no {reference_name} channel to use as the reference channel "
                         f"(found: {', '.join(files.channels)})")

    # The reference first, then the requested channels, then the others (read only for the mask).
    order = [reference_name] + [n for n in wanted if n != reference_name]
    order += [n for n in files.channels if n not in order] if files.mask is None else []
    reference_path = files.channels[reference_name]
    reference_geometry: Geometry | None = None
    grid: Geometry | None = None
    image: np.ndarray | None = None
    derived: np.ndarray | None = None
    findings: list[checks.Finding] = []
    for name in order:
        path = files.channels[name]
        array, geo = read_image(path, role=f"{name} channel")
        if grid is None:
            reference_geometry, grid = geo, working_grid(geo, spacing, orientation)
            voxels, limit = int(np.prod(grid.size, dtype=np.int64)), max_voxels()
            if voxels > limit:  # e.g. a header claiming 100 mm slices, resampled to 1 mm
                raise InputError(f"{path}: at the model's spacing {tuple(grid.spacing)} mm this image would have "
                                 f"{' x '.join(map(str, grid.size))} = {voxels:,} voxels, above the limit of "
                                 f"{limit:,} (check its spacing {tuple(geo.spacing)} mm; {MAX_VOXELS_ENV} allows more)")
            image = np.empty((len(wanted), *grid.shape_zyx), dtype=np.float32)
        else:
            checks.check_overlap(reference_geometry, reference_path, geo, path)
        findings += [f for f in (checks.check_mr_intensities(array, path),
                                 checks.check_slice_thickness(geo, path, spacing)) if f is not None]
        on_grid = not grid.differences(geo)
        background = background_value(array, name=path) if files.mask is None or not on_grid else 0.0
        if files.mask is None:
            brain = _onto(array != background, geo, grid, kind=MASK)
            derived = brain if derived is None else (derived | brain)
        if name in wanted:
            image[wanted.index(name)] = _onto(array, geo, grid, kind=LINEAR, default=background)
        del array

    label = None
    if files.label is not None:
        label, geo = read_label(files.label)
        checks.check_overlap(reference_geometry, reference_path, geo, files.label)
        label = _onto(label, geo, grid, kind=NEAREST)
    if files.mask is not None:
        mask_array, geo = read_image(files.mask, role="mask")
        checks.check_overlap(reference_geometry, reference_path, geo, files.mask)
        mask, mask_source = _onto(mask_array != 0, geo, grid, kind=MASK), "file"
        if not mask.any():
            raise InputError(f"{files.mask}: the brain mask is empty")
    else:
        mask, mask_source = fill_mask_holes(derived), "derived"
        if not mask.any():
            raise InputError(f"{files.where}: the derived brain mask is empty (every channel equals its "
                             "border value); pass --mask PATH")
    volume = checks.check_brain_volume(float(np.count_nonzero(mask)) * grid.voxel_volume_ml,
                                       files.mask if files.mask is not None else files.where, mask_source)
    findings += [volume] if volume is not None else []
    checks.report(findings, strict=strict)
    if normalize:
        for name, (mean, std) in zip(wanted, channel_statistics(image, mask)):
            if _is_constant(mean, std):
                raise InputError(f"{files.channels[name]}: the {name} channel is constant ({mean:g}) inside the "
                                 "brain mask; cannot normalise")
        image = zscore(image, mask)
    log.debug("loaded case %s: channels %s, %s, mask %s", files.case_id, wanted, grid.describe(), mask_source)
    return Case(case_id=files.case_id, channels=tuple(wanted), image=image, label=label, mask=mask,
                mask_source=mask_source, geometry=grid, files=files, reference_geometry=reference_geometry,
                findings=findings)
