"""Bringing a case's images onto one working grid, and results back onto the reference grid.

The working grid lies in the physical space of a reference channel (the first channel, or the
one named with ``--reference-channel``): its voxels with the axes put in the order and sense the
model was trained in (the model card's ``orientation``, e.g. ``LPS``: a permutation and flips,
exact, no interpolation), then the same physical box (the centre is kept, the size becomes
``round(size * spacing / model spacing)``) at the spacing the model was trained at (the card's
``spacing``). Every other image is resampled by its own physical
geometry (origin, spacing, direction), as nnU-Net and TotalSegmentator do. Scans of one visit
share the scanner's coordinates, so this is no registration: images from different visits or
scanners must be registered first.

Interpolation: linear for images (no overshoot, so a constant background stays constant),
nearest neighbour for label maps, and linear-then-threshold (>= 0.5) for binary masks. Results
go back onto the reference channel's original grid: probability and dz maps linearly, label
maps class by class (the indicator of each class interpolated linearly, then the arg-max), which
keeps their borders smooth when the working grid is coarser than the original.

When the reference is already in the model's orientation and at its spacing, the working grid
IS the reference grid and images on it are used as read, so such cases take exactly the path
they took before.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from asymseg import constants as C
from asymseg.io.geometry import Geometry, all_close

log = logging.getLogger(__name__)

#: Interpolation kinds of :func:`resample_array`.
LINEAR, NEAREST, MASK = "linear", "nearest", "mask"


#: Physical (LPS) unit vector each orientation letter names: ITK's x grows to the Left, y to the
#: Posterior, z to the Superior.
_LETTERS = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def check_orientation(code: str) -> str:
    """Validate a 3-letter orientation code (``"LPS"``: array axes x, y, z run toward Left,
    Posterior, Superior, as ITK's identity direction does).

    Raises:
        ValueError: not one letter of each pair L/R, P/A, S/I.
    """
    text = str(code).upper()
    if len(text) != 3 or any(c not in _LETTERS for c in text) or len({_LETTERS[c][0] for c in text}) != 3:
        raise ValueError(f"orientation {code!r}: expected 3 letters, one of each pair L/R, P/A, S/I (e.g. LPS)")
    return text


def reoriented(reference: Geometry, orientation: str) -> Geometry:
    """The same voxels with their axes permuted and flipped so they run closest to ``orientation``.

    No voxel moves in physical space: only the order of the axes and their direction change (a
    tilted grid stays tilted). Ties between axes (45 degrees) go to the lower axis.
    """
    code = check_orientation(orientation)
    direction = np.asarray(reference.direction, dtype=np.float64).reshape(3, 3)  # columns: the axes
    perm: list[int] = []
    signs: list[float] = []
    for letter in code:
        row, sign = _LETTERS[letter]
        weights = [abs(direction[row, j]) if j not in perm else -1.0 for j in range(3)]
        j = int(np.argmax(weights))
        perm.append(j)
        signs.append(1.0 if direction[row, j] * sign >= 0 else -1.0)
    new_direction = np.stack([signs[k] * direction[:, perm[k]] for k in range(3)], axis=1)
    corner = [0] * 3
    for k in range(3):
        corner[perm[k]] = 0 if signs[k] > 0 else reference.size[perm[k]] - 1
    origin = np.asarray(reference.origin) + direction @ (np.asarray(reference.spacing) * np.asarray(corner))
    return Geometry(tuple(reference.size[j] for j in perm), tuple(reference.spacing[j] for j in perm),
                    tuple(float(v) for v in origin), tuple(float(v) for v in new_direction.ravel()))


def working_grid(reference: Geometry, spacing: Sequence[float] | None, orientation: str | None = None) -> Geometry:
    """The grid a case is processed on.

    Args:
        reference: the reference channel's grid.
        spacing: the model's spacing in mm, (x, y, z); None keeps the reference spacing.
        orientation: the model's axis orientation (e.g. ``"LPS"``, :func:`reoriented`); None
            keeps the reference's axes.

    Returns:
        ``reference`` itself when it is already in ``orientation`` and at ``spacing`` (within
        ``constants.GEOMETRY_TOLERANCE``), or when both are None; otherwise the reference's
        voxels reoriented, then a grid with that direction and physical centre, the given
        spacing and ``round(size * spacing_ref / spacing)`` voxels per axis (at least 1).
    """
    if orientation is not None:
        turned = reoriented(reference, orientation)
        if turned.differences(reference):
            reference = turned
    if spacing is None or all_close(reference.spacing, spacing):
        return reference
    spacing = tuple(float(s) for s in spacing)
    size = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(reference.size, reference.spacing, spacing))
    direction = np.asarray(reference.direction, dtype=np.float64).reshape(3, 3)
    half = np.asarray(reference.spacing) * (np.asarray(reference.size) - 1) / 2
    centre = np.asarray(reference.origin) + direction @ half
    origin = centre - direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)
    return Geometry(size, spacing, tuple(float(v) for v in origin), reference.direction)


def physical_box(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned physical bounding box (mm) of the grid's voxel corners: (low, high)."""
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(geometry.spacing)
    corners = []
    for upper in itertools.product((False, True), repeat=3):
        index = np.where(upper, np.asarray(geometry.size) - 0.5, -0.5)
        corners.append(np.asarray(geometry.origin) + direction @ (spacing * index))
    points = np.stack(corners)
    return points.min(axis=0), points.max(axis=0)


def overlap_fraction(a: Geometry, b: Geometry) -> float:
    """Volume of the intersection of two grids' physical boxes over the smaller box's volume (0..1)."""
    low_a, high_a = physical_box(a)
    low_b, high_b = physical_box(b)
    inter = np.clip(np.minimum(high_a, high_b) - np.maximum(low_a, low_b), 0.0, None)
    smaller = min(float(np.prod(high_a - low_a)), float(np.prod(high_b - low_b)))
    return float(np.prod(inter)) / smaller if smaller > 0 else 0.0


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of a (D, H, W) array with the given geometry."""
    return geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(array)))


def resample_array(array: np.ndarray, source: Geometry, target: Geometry, *, kind: str = LINEAR,
                   default: float = 0.0) -> np.ndarray:
    """Resample a (D, H, W) array from its grid onto another by physical position.

    Args:
        array: shape ``source.shape_zyx``.
        source, target: the grids.
        kind: "linear" (images, maps; float32 out), "nearest" (label maps; the input dtype out)
            or "mask" (a binary mask: linear, then >= 0.5; bool out).
        default: value of target voxels outside the source grid.

    Returns:
        An array of shape ``target.shape_zyx``.
    """
    if kind not in (LINEAR, NEAREST, MASK):
        raise ValueError(f"unknown interpolation {kind!r}; expected {LINEAR}, {NEAREST} or {MASK}")
    mapping = axis_mapping(source, target)
    if mapping is not None:  # the same voxel centres in another axis order: exact, no interpolation
        out = apply_axis_mapping(array, *mapping)
        return out != 0 if kind == MASK else (out.astype(np.float32) if kind == LINEAR else out)
    if kind == NEAREST:
        image = to_sitk(array, source)
        interpolator = sitk.sitkNearestNeighbor
        pixel = image.GetPixelID()
    else:
        image = to_sitk(np.asarray(array, dtype=np.float32), source)
        interpolator = sitk.sitkLinear
        pixel = sitk.sitkFloat32
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize(target.size)
    resampler.SetOutputSpacing(target.spacing)
    resampler.SetOutputOrigin(target.origin)
    resampler.SetOutputDirection(target.direction)
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(float(default))
    resampler.SetOutputPixelType(pixel)
    out = sitk.GetArrayFromImage(resampler.Execute(image))
    if kind == MASK:
        return out >= 0.5
    return out


def axis_mapping(source: Geometry, target: Geometry) -> tuple[tuple[int, ...], tuple[bool, ...]] | None:
    """How ``target`` reorders ``source``'s voxels when it holds the same voxel centres.

    Returns:
        ``(perm, flips)``: target axis k (x, y, z) is source axis ``perm[k]``, reversed when
        ``flips[k]``; None when the grids do not hold the same voxel centres.
    """
    ds = np.asarray(source.direction, dtype=np.float64).reshape(3, 3)
    dt = np.asarray(target.direction, dtype=np.float64).reshape(3, 3)
    dots = ds.T @ dt  # dots[j, k]: source axis j against target axis k
    perm = tuple(int(np.argmax(np.abs(dots[:, k]))) for k in range(3))
    if len(set(perm)) != 3 or any(abs(abs(dots[perm[k], k]) - 1.0) > C.GEOMETRY_TOLERANCE for k in range(3)):
        return None
    flips = tuple(bool(dots[perm[k], k] < 0) for k in range(3))
    for k in range(3):
        j = perm[k]
        if target.size[k] != source.size[j] or not all_close((target.spacing[k],), (source.spacing[j],)):
            return None
    corner = [0] * 3
    for k in range(3):
        corner[perm[k]] = source.size[perm[k]] - 1 if flips[k] else 0
    origin = np.asarray(source.origin) + ds @ (np.asarray(source.spacing) * np.asarray(corner))
    if np.abs(origin - np.asarray(target.origin)).max() > C.GEOMETRY_TOLERANCE * max(1.0, *map(abs, origin)):
        return None
    return perm, flips


def apply_axis_mapping(array: np.ndarray, perm: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
    """Reorder a (D, H, W) array as :func:`axis_mapping` says (numpy axes are z, y, x)."""
    xyz = np.transpose(array, (2, 1, 0))  # numpy axis a <-> ITK axis 2 - a
    xyz = np.transpose(xyz, tuple(perm))
    for k, flip in enumerate(flips):
        if flip:
            xyz = np.flip(xyz, axis=k)
    return np.ascontiguousarray(np.transpose(xyz, (2, 1, 0)))


def labels_to_grid(labels: np.ndarray, source: Geometry, target: Geometry, num_classes: int) -> np.ndarray:
    """Class indices resampled class by class: each indicator linearly, then the arg-max.

    Ties go to the lower class index; voxels outside the source grid get class 0.

    Shape:
        labels (D, H, W) integer on ``source``; returns uint8 (D, H, W) on ``target``.
    """
    mapping = axis_mapping(source, target)
    if mapping is not None:
        return apply_axis_mapping(labels, *mapping).astype(np.uint8)
    best = np.full(target.shape_zyx, -1.0, dtype=np.float32)
    out = np.zeros(target.shape_zyx, dtype=np.uint8)
    for index in range(max(2, int(num_classes))):
        if index > 0 and not np.any(labels == index):
            continue
        score = resample_array((labels == index).astype(np.float32), source, target, kind=LINEAR,
                               default=1.0 if index == 0 else 0.0)
        better = score > best
        out[better] = index
        best[better] = score[better]
    return out
