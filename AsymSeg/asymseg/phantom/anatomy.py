"""The generic part of a phantom: a head-shaped brain with folded cortex, white matter and CSF.

Every case draws its anatomy from the same distribution, so the healthy brain is the
"background" class a network sees in every case. Lengths are fractions of the brain's mean
semi-axis ``R`` (mm), with floors in voxels so that small test volumes keep visible structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asymseg.phantom.fields import smooth_noise

#: Tissue codes of the anatomy map (0 is outside the brain).
OUTSIDE, CSF, GM, WM, DEEP_GM = 0, 1, 2, 3, 4
TISSUE_NAMES: dict[int, str] = {CSF: "csf", GM: "grey_matter", WM: "white_matter", DEEP_GM: "deep_grey_matter"}

#: Brain semi-axes as fractions of the half field of view (z, y, x): fills a BraTS 240x240x155 grid.
BRAIN_FRACTION_ZYX = (0.80, 0.74, 0.60)


@dataclass
class Anatomy:
    """A healthy brain.

    Attributes:
        mask: bool (D, H, W), the head (= brain, skull-stripped) mask.
        tissue: uint8 (D, H, W), tissue codes (``OUTSIDE``, ``CSF``, ``GM``, ``WM``, ``DEEP_GM``).
        depth: float32 (D, H, W), normalised depth below the outer surface (0 at the surface,
            about 1 at the centre; negative outside).
        coords: normalised coordinates (z, y, x), each broadcastable to (D, H, W), 1 at the semi-axes.
        radius_mm: the brain's mean semi-axis ``R`` in mm.
        params: the drawn parameters (JSON-safe).
    """

    mask: np.ndarray
    tissue: np.ndarray
    depth: np.ndarray
    coords: tuple[np.ndarray, np.ndarray, np.ndarray]
    radius_mm: float
    params: dict[str, Any] = field(default_factory=dict)


def _sigma_vox(length_mm: float, spacing_zyx: Sequence[float], floor_vox: float) -> tuple[float, ...]:
    return tuple(max(length_mm / s, floor_vox) for s in spacing_zyx)


def make_anatomy(rng: np.random.Generator, shape_zyx: Sequence[int], spacing_zyx: Sequence[float]) -> Anatomy:
    """Draw a healthy brain.

    Args:
        rng: random generator for the anatomy (consumed in a fixed order).
        shape_zyx: volume shape (D, H, W).
        spacing_zyx: voxel spacing in mm (z, y, x).

    Returns:
        The :class:`Anatomy`.
    """
    shape = tuple(int(n) for n in shape_zyx)
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    half_fov = np.asarray(shape) * spacing / 2.0
    semi_axes = half_fov * np.asarray(BRAIN_FRACTION_ZYX) * rng.uniform(0.95, 1.05, 3)
    radius_mm = float(np.prod(semi_axes) ** (1.0 / 3.0))
    vox_in_r = float(radius_mm / spacing.mean())  # R in voxels (mean spacing)

    z, y, x = (((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s / a).astype(np.float32)
               for n, s, a in zip(shape, spacing, semi_axes))
    z = z.reshape(-1, 1, 1)
    y = y.reshape(1, -1, 1)
    x = x.reshape(1, 1, -1)

    # Head outline: an ellipsoid with a flatter base, a narrower front and a wobbly surface.
    wobble = smooth_noise(rng, shape, _sigma_vox(0.30 * radius_mm, spacing, 1.5))
    zs = np.where(z < 0, z * 1.18, z)
    xs = x * (1.0 + 0.08 * np.clip(y, 0, None))  # frontal lobes are narrower than occipital
    radius = np.sqrt(zs * zs + y * y + xs * xs) * (1.0 + 0.035 * wobble)
    mask = radius < 1.0
    depth = (1.0 - radius).astype(np.float32)

    # Folded cortex: sulci are where a smooth field crosses zero; the folded surface is the
    # level set of an "effective depth" pushed down along the sulci and the midline fissure.
    voxel_depth = 1.0 / vox_in_r  # one voxel in depth units
    sulcus_field = smooth_noise(rng, shape, _sigma_vox(0.05 * radius_mm, spacing, 1.2))
    thickness_field = smooth_noise(rng, shape, _sigma_vox(0.12 * radius_mm, spacing, 1.5))
    sulcal_depth = float(rng.uniform(0.24, 0.30))
    fissure_x = 0.03 * smooth_noise(rng, shape, _sigma_vox(0.4 * radius_mm, spacing, 2.0))
    fissure_width = max(0.035, 1.2 * spacing[2] / semi_axes[2])
    fissure = np.clip(1.0 - np.abs(x - fissure_x) / fissure_width, 0.0, None) * (z > -0.15)
    csf_layer = max(0.012, 0.6 * voxel_depth)
    cortex = max(0.08, 1.6 * voxel_depth) * (1.0 + 0.3 * thickness_field)
    # A narrow fold for the CSF in the sulcus, a wide one for the grey matter lining it.
    abs_sulcus = np.abs(sulcus_field)
    eff_csf = depth - sulcal_depth * np.clip(1.0 - abs_sulcus / 0.22, 0.0, None) - 0.55 * fissure
    eff_gm = depth - sulcal_depth * np.clip(1.0 - abs_sulcus / 0.9, 0.0, None) - 0.55 * fissure

    tissue = np.full(shape, WM, dtype=np.uint8)
    tissue[eff_gm < csf_layer + cortex] = GM
    tissue[eff_csf < csf_layer] = CSF

    # Deep grey matter (basal ganglia, thalami) and the ventricles.
    ventricle_scale = float(rng.uniform(0.8, 1.35))
    for side in (-1.0, 1.0):
        cz, cy, cx = -0.08, 0.02, side * 0.21
        q = ((z - cz) / 0.14) ** 2 + ((y - cy) / 0.24) ** 2 + ((x - cx) / 0.11) ** 2
        tissue[(q < 1.0) & (tissue == WM)] = DEEP_GM
    for side in (-1.0, 1.0):
        ly = 0.36 * ventricle_scale
        bend = -0.22 * (y / ly) ** 2  # the horns bend down at both ends
        q = (((z - 0.14 - bend) / (0.10 * ventricle_scale)) ** 2 + (y / ly) ** 2
             + ((x - side * 0.10) / (0.075 * ventricle_scale)) ** 2)
        tissue[q < 1.0] = CSF
    third = (np.abs(x) < max(0.012, 0.6 * spacing[2] / semi_axes[2])) & (np.abs(y) < 0.16) & (np.abs(z + 0.06) < 0.13)
    tissue[third] = CSF
    tissue[~mask] = OUTSIDE

    params = {
        "semi_axes_mm_zyx": [round(float(a), 3) for a in semi_axes],
        "sulcal_depth": round(sulcal_depth, 4),
        "ventricle_scale": round(ventricle_scale, 4),
    }
    return Anatomy(mask=mask, tissue=tissue, depth=depth, coords=(z, y, x), radius_mm=radius_mm, params=params)
