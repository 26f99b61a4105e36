"""Loading a case: channels stacked (C, D, H, W), geometry checked, brain mask, z-score normalisation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from asymseg import constants as C
from asymseg.errors import InputError
from asymseg.io.discovery import CaseFiles, canonical_channel
from asymseg.io.geometry import Geometry
from asymseg.io.images import read_image, read_label

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
        geometry: shared by every image of the case.
        files: where it came from.
    """

    case_id: str
    channels: tuple[str, ...]
    image: np.ndarray
    label: np.ndarray | None
    mask: np.ndarray
    mask_source: str
    geometry: Geometry
    files: CaseFiles

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


def background_values(image: np.ndarray) -> tuple[float, ...]:
    """Per channel, the value that fills most of the volume border (the skull-stripped background).

    Args:
        image: shape (C, D, H, W).

    Returns:
        One value per channel: 0 for BraTS, a negative constant for pre-normalised data.
    """
    out = []
    for c in range(image.shape[0]):
        values, counts = np.unique(_border_values(image[c]), return_counts=True)
        best = int(np.argmax(counts))
        if counts[best] < 0.5 * counts.sum():
            log.warning("channel %d: the volume border is not a constant background (the most common value "
                        "covers %.0f%%); the derived brain mask may include non-brain voxels",
                        c, 100.0 * counts[best] / counts.sum())
        out.append(float(values[best]))
    return tuple(out)


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
    if fill_holes and mask.any():
        filled = sitk.BinaryFillhole(sitk.GetImageFromArray(mask.astype(np.uint8)), fullyConnected=False,
                                     foregroundValue=1)
        mask = sitk.GetArrayFromImage(filled).astype(bool)
    return mask


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


def load_case(files: CaseFiles, *, channels: Sequence[str] | None = None, normalize: bool = True,
              require_label: bool = False) -> Case:
    """Read a case's channels, label and mask, check they share one grid, and normalise.

    Args:
        files: from :func:`~asymseg.io.discover_case`.
        channels: the channel names to load, in order (a model's inputs); None loads every
            channel found, in ``constants.CHANNEL_NAMES`` order.
        normalize: z-score each channel inside the brain mask (0 outside).
        require_label: fail when the case has no label file.

    Returns:
        The :class:`Case`.

    Raises:
        InputError: a requested channel or the label is missing, a file cannot be read, files are on
            different grids (names both and the difference), the brain mask is empty, or a channel is
            constant inside the mask while ``normalize`` is set.
    """
    wanted = list(files.channels) if channels is None else [canonical_channel(n) for n in channels]
    if len(set(wanted)) != len(wanted):
        raise InputError(f"channel list {list(channels or [])} names a channel twice")
    for name in wanted:
        if name not in files.channels:
            raise InputError(f"{files.where}: no {name} channel (found: {', '.join(files.channels) or 'none'})")
    if require_label and files.label is None:
        raise InputError(f"{files.where}: no label file (looked for seg/label/OTMultiClass; pass --label PATH)")

    image: np.ndarray | None = None
    geometry: Geometry | None = None
    first_path = files.channels[wanted[0]]
    for index, name in enumerate(wanted):
        path = files.channels[name]
        array, geo = read_image(path, role=f"{name} channel")
        if image is None:
            geometry = geo
            image = np.empty((len(wanted), *array.shape), dtype=np.float32)
        else:
            _check_same_grid(geometry, first_path, geo, path)
        image[index] = array
        del array

    label = None
    if files.label is not None:
        label, geo = read_label(files.label)
        _check_same_grid(geometry, first_path, geo, files.label)
    if files.mask is not None:
        mask_array, geo = read_image(files.mask, role="mask")
        _check_same_grid(geometry, first_path, geo, files.mask)
        mask, mask_source = mask_array != 0, "file"
        if not mask.any():
            raise InputError(f"{files.mask}: the brain mask is empty")
    else:
        mask, mask_source = derive_brain_mask(image), "derived"
        if not mask.any():
            raise InputError(f"{files.where}: the derived brain mask is empty (every channel equals its "
                             "border value); pass --mask PATH")
    if normalize:
        for name, (mean, std) in zip(wanted, channel_statistics(image, mask)):
            if _is_constant(mean, std):
                raise InputError(f"{files.channels[name]}: the {name} channel is constant ({mean:g}) inside the "
                                 "brain mask; cannot normalise")
        image = zscore(image, mask)
    log.debug("loaded case %s: channels %s, %s, mask %s", files.case_id, wanted, geometry.describe(), mask_source)
    return Case(case_id=files.case_id, channels=tuple(wanted), image=image, label=label, mask=mask,
                mask_source=mask_source, geometry=geometry, files=files)
