"""Vessels of a phantom brain: the healthy structures that enhance like a tumour rim.

On a contrast-enhanced T1 the venous sinuses, the cortical veins and the choroid plexus are as
bright as an enhancing tumour rim, and in a skull-stripped scan the sinuses lie along the brain's
edge: the superior sagittal sinus over the midline, the straight sinus between the hemispheres
and the cerebellum, the transverse sinuses along the back of the base. A network that has only
seen enhancement around a tumour marks them as core. Here they are tubes along paths of control
points (normalised brain coordinates, as :class:`~asymseg.phantom.anatomy.Anatomy` uses), with
a soft edge, and two plexus blobs in the lateral ventricles; they are background (label 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asymseg.phantom.anatomy import CSF, Anatomy
from asymseg.phantom.fields import logistic

#: Per-case vessel intensity ranges relative to white matter: enhancing on T1c, flow voids
#: (darker than white matter or near it) on FLAIR, T1 and T2.
VESSEL_CONTRAST: dict[str, tuple[float, float]] = {
    "flair": (0.35, 0.95),
    "t1c": (1.55, 2.60),
    "t1": (0.55, 1.00),
    "t2": (0.35, 0.95),
}
#: Tube radii (mm): the sinuses, the straight sinus, the cortical veins.
SINUS_RADIUS_MM = (2.5, 4.0)
STRAIGHT_RADIUS_MM = (1.5, 2.5)
VEIN_RADIUS_MM = (0.8, 1.4)
#: Number of cortical veins per case and the length of each (mm).
VEIN_COUNT = (6, 14)
VEIN_LENGTH_MM = (20.0, 55.0)
#: Sinus centres lie this fraction of the way out to the brain's surface (they straddle its edge).
SINUS_DEPTH = 0.985


@dataclass
class Vessels:
    """The vessels of one brain.

    Attributes:
        weight: float32 (D, H, W), about 1 inside a vessel and 0 away from it, 0 outside the brain.
        params: the drawn parameters (JSON-safe).
    """

    weight: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def surface_point(direction: Sequence[float]) -> np.ndarray:
    """The point of the anatomy's head outline (without its wobble) along a direction (z, y, x)
    from the centre, in normalised coordinates."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    zs = d[0] * (1.18 if d[0] < 0 else 1.0)
    xs = d[2] * (1.0 + 0.08 * max(d[1], 0.0))
    return d / np.sqrt(zs * zs + d[1] * d[1] + xs * xs)


def _polyline_distance(points_mm: np.ndarray, grid_mm: tuple[np.ndarray, np.ndarray, np.ndarray],
                       reach_mm: float) -> np.ndarray:
    """Distance (mm) from every voxel to a polyline, computed in each segment's bounding box only;
    ``inf`` farther than ``reach_mm`` from every segment's box."""
    z, y, x = grid_mm
    shape = (z.shape[0], y.shape[1], x.shape[2])
    distance = np.full(shape, np.inf, dtype=np.float32)
    axes = (z.ravel(), y.ravel(), x.ravel())
    for a, b in zip(points_mm[:-1], points_mm[1:]):
        box = []
        for k, values in enumerate(axes):
            lo, hi = min(a[k], b[k]) - reach_mm, max(a[k], b[k]) + reach_mm
            idx = np.nonzero((values >= lo) & (values <= hi))[0]
            if idx.size == 0:
                break
            box.append(slice(int(idx[0]), int(idx[-1]) + 1))
        if len(box) < 3:
            continue
        pz, py, px = z[box[0]], y[:, box[1]], x[:, :, box[2]]
        ab = b - a
        t = ((pz - a[0]) * ab[0] + (py - a[1]) * ab[1] + (px - a[2]) * ab[2]) / max(float(ab @ ab), 1e-12)
        t = np.clip(t, 0.0, 1.0)
        d = np.sqrt((pz - a[0] - t * ab[0]) ** 2 + (py - a[1] - t * ab[1]) ** 2 + (px - a[2] - t * ab[2]) ** 2)
        region = distance[box[0], box[1], box[2]]
        np.minimum(region, d.astype(np.float32), out=region)
    return distance


def _arc(start: np.ndarray, end: np.ndarray, steps: int, depth: float) -> np.ndarray:
    """Points along the outline between two directions, ``depth`` of the way out."""
    out = []
    for t in np.linspace(0.0, 1.0, steps):
        out.append(depth * surface_point((1.0 - t) * start + t * end))
    return np.asarray(out)


def make_vessels(rng: np.random.Generator, anatomy: Anatomy, spacing_zyx: Sequence[float]) -> Vessels:
    """Draw the vessels of a brain.

    Args:
        rng: random generator for the vessels (consumed in a fixed order).
        anatomy: the healthy brain.
        spacing_zyx: voxel spacing in mm (z, y, x).

    Returns:
        The :class:`Vessels`.
    """
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    semi_axes = np.asarray(anatomy.params["semi_axes_mm_zyx"], dtype=np.float64)
    grid_mm = tuple(c * a for c, a in zip(anatomy.coords, semi_axes))
    shape = anatomy.mask.shape
    edge_mm = 0.6 * float(spacing.mean())
    weight = np.zeros(shape, dtype=np.float32)

    def tube(points: np.ndarray, radius_mm: float) -> None:
        reach = radius_mm + 4.0 * edge_mm  # the soft edge is cut where it falls under 2%
        distance = _polyline_distance(points * semi_axes, grid_mm, reach)
        near = distance <= reach
        np.maximum(weight, np.where(near, logistic((radius_mm - np.where(near, distance, 0.0)) / edge_mm), 0.0),
                   out=weight)

    # Superior sagittal sinus: over the midline from the front to the back of the head, down to
    # the confluence of the sinuses at the back of the base.
    front = np.radians(rng.uniform(10.0, 25.0))
    back = np.radians(rng.uniform(200.0, 212.0))
    sagittal = [SINUS_DEPTH * surface_point((np.sin(t), np.cos(t), 0.0)) for t in np.linspace(front, back, 24)]
    confluence = sagittal[-1]
    sinus_r = float(rng.uniform(*SINUS_RADIUS_MM))
    tube(np.asarray(sagittal), sinus_r)
    # Transverse sinuses: from the confluence along the back of the base to each side.
    reach = np.radians(rng.uniform(55.0, 75.0))
    for side in (-1.0, 1.0):
        start = confluence / np.linalg.norm(confluence)
        lateral = np.array([start[0], -np.cos(reach), side * np.sin(reach)])
        tube(_arc(start, lateral, 12, SINUS_DEPTH), sinus_r * float(rng.uniform(0.75, 1.0)))
    # Straight sinus: from the confluence forwards and up between the hemispheres.
    straight_end = np.array([rng.uniform(0.05, 0.2), rng.uniform(-0.45, -0.3), 0.0])
    straight_r = float(rng.uniform(*STRAIGHT_RADIUS_MM))
    tube(np.linspace(confluence * 0.97, straight_end, 8), straight_r)
    # Cortical veins: short arcs along the surface.
    n_veins = int(rng.integers(VEIN_COUNT[0], VEIN_COUNT[1] + 1))
    radius_mm = float(np.prod(semi_axes) ** (1.0 / 3.0))
    for _ in range(n_veins):
        start = rng.standard_normal(3)
        start[0] = abs(start[0]) * 0.8  # mostly over the convexity
        start /= np.linalg.norm(start)
        turn = rng.standard_normal(3)
        turn -= (turn @ start) * start
        turn /= np.linalg.norm(turn)
        angle = float(rng.uniform(*VEIN_LENGTH_MM)) / radius_mm
        end = np.cos(angle) * start + np.sin(angle) * turn
        tube(_arc(start, end, 8, float(rng.uniform(0.93, 0.975))), float(rng.uniform(*VEIN_RADIUS_MM)))
    # Choroid plexus: a blob in the atrium of each lateral ventricle, inside the ventricle.
    z, y, x = anatomy.coords
    plexus_scale = float(rng.uniform(0.8, 1.2))
    ventricle = anatomy.tissue == CSF
    for side in (-1.0, 1.0):
        q = ((z - 0.02) / (0.035 * plexus_scale)) ** 2 + ((y + 0.26) / (0.07 * plexus_scale)) ** 2 \
            + ((x - side * 0.10) / (0.035 * plexus_scale)) ** 2
        np.maximum(weight, np.where(q < 2.0, logistic((1.0 - q) / 0.25), 0.0) * ventricle, out=weight)
    weight *= anatomy.mask
    params = {"sinus_radius_mm": round(sinus_r, 3), "straight_radius_mm": round(straight_r, 3),
              "cortical_veins": n_veins, "plexus_scale": round(plexus_scale, 4),
              "vessel_voxels": int((weight > 0.5).sum())}
    return Vessels(weight=weight, params=params)
