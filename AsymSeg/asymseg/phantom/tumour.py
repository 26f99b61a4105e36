"""The case-specific part of a phantom: a tumour's shape, size, location and compartments.

Each case draws a new tumour: an irregular blob (the union of a few rotated ellipsoids,
warped by smooth noise) whose core holds ``TUMOUR_CORE_FRACTION`` of the brain, a necrotic
centre (label 1) with non-enhancing patches, an enhancing rim (label 4) and oedema (label 2)
that spreads preferentially along white matter. Labels follow BraTS 2017-2021.

All fields are computed in a box around the tumour; the soft weights returned with the labels
let the appearance blend tumour and healthy tissue with per-case sharpness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asymseg.phantom.anatomy import CSF, WM, Anatomy
from asymseg.phantom.fields import logistic, smooth_noise

#: BraTS 2017-2021 label values.
LABEL_NECROSIS, LABEL_OEDEMA, LABEL_ENHANCING = 1, 2, 4
#: Range of the tumour core (labels 1 and 4) as a fraction of the brain volume.
TUMOUR_CORE_FRACTION = (0.005, 0.10)
#: Core fractions are drawn log-uniformly from this range (inside ``TUMOUR_CORE_FRACTION``).
CORE_FRACTION_DRAW = (0.005, 0.09)
#: Oedema volume as a multiple of the core volume (log-uniform).
OEDEMA_RATIO_DRAW = (0.3, 4.0)
#: The whole tumour (core + oedema) never takes more than this fraction of the brain.
MAX_TUMOUR_FRACTION = 0.35


@dataclass
class Tumour:
    """A tumour's labels and the soft weights used to paint it.

    Attributes:
        label: uint8 (D, H, W), values {0, 1, 2, 4}.
        box: slices of the box (z, y, x) holding every tumour voxel and its soft margin.
        core_weight: float32 box, ~1 inside the core (labels 1, 4), soft edge, 0 far away.
        necrosis_weight: float32 box, ~1 in necrotic/non-enhancing parts of the core.
        oedema_weight: float32 box, ~1 in the oedema and core, soft (infiltrative) edge.
        position_mm: box-shaped (z, y, x) offsets in mm from the tumour centre (broadcastable).
        radius_mm: radius of a sphere with the core's volume.
        params: the drawn parameters (JSON-safe).
    """

    label: np.ndarray
    box: tuple[slice, slice, slice]
    core_weight: np.ndarray
    necrosis_weight: np.ndarray
    oedema_weight: np.ndarray
    position_mm: tuple[np.ndarray, np.ndarray, np.ndarray]
    radius_mm: float
    params: dict[str, Any] = field(default_factory=dict)


def _top(values: np.ndarray, where: np.ndarray, count: int) -> tuple[np.ndarray, float]:
    """Exactly ``min(count, where.sum())`` voxels of ``where`` with the largest ``values``.

    Returns:
        The bool mask of the chosen voxels and the smallest chosen value (inf when none).
    """
    index = np.flatnonzero(where)
    chosen = np.zeros(where.shape, dtype=bool)
    count = min(count, index.size)
    if count <= 0:
        return chosen, float("inf")
    candidates = values.ravel()[index]
    top = np.argpartition(candidates, index.size - count)[index.size - count:]
    chosen.ravel()[index[top]] = True
    return chosen, float(candidates[top].min())


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _noise(rng: np.random.Generator, shape: Sequence[int], sigma_mm: float,
           spacing: np.ndarray) -> np.ndarray:
    return smooth_noise(rng, shape, tuple(max(sigma_mm / s, 0.5) for s in spacing))


def make_tumour(rng: np.random.Generator, anatomy: Anatomy, spacing_zyx: Sequence[float]) -> Tumour:
    """Draw a tumour inside ``anatomy``'s brain.

    Args:
        rng: random generator for the tumour (consumed in a fixed order).
        anatomy: the healthy brain the tumour grows in.
        spacing_zyx: voxel spacing in mm (z, y, x).

    Returns:
        The :class:`Tumour`; its core covers 0.5-10% of the brain.
    """
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    shape = anatomy.mask.shape
    brain_voxels = int(anatomy.mask.sum())
    voxel_mm3 = float(np.prod(spacing))

    low, high = TUMOUR_CORE_FRACTION
    fraction = float(np.exp(rng.uniform(*np.log(CORE_FRACTION_DRAW))))
    n_core = int(np.clip(round(fraction * brain_voxels), np.ceil(low * brain_voxels), np.floor(high * brain_voxels)))
    n_core = max(n_core, 1)
    oedema_ratio = float(np.exp(rng.uniform(*np.log(OEDEMA_RATIO_DRAW))))
    n_oedema = int(min(round(oedema_ratio * n_core), MAX_TUMOUR_FRACTION * brain_voxels - n_core))
    radius = float((3.0 * n_core * voxel_mm3 / (4.0 * np.pi)) ** (1.0 / 3.0))
    radius_total = radius * (1.0 + n_oedema / n_core) ** (1.0 / 3.0)

    # Centre: a brain voxel deep enough for the core, off the midline, not in a ventricle.
    z, y, x = anatomy.coords
    min_depth = min(0.75 * radius / anatomy.radius_mm, 0.4)
    allowed = anatomy.mask & (anatomy.depth >= min_depth) & (anatomy.tissue != CSF) & (np.abs(x) > 0.12)
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:  # a tumour too large for the margin: take the deepest voxels
        candidates = np.flatnonzero(anatomy.depth >= np.quantile(anatomy.depth[anatomy.mask], 0.9))
    centre = np.array(np.unravel_index(candidates[rng.integers(candidates.size)], shape))

    half = np.ceil((2.2 * radius_total) / spacing).astype(int) + 3
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    box_shape = tuple(int(b - a) for a, b in zip(lo, hi))
    pz, py, px = ((np.arange(a, b, dtype=np.float32) - c) * s
                  for a, b, c, s in zip(lo, hi, centre, spacing))
    pos = (pz.reshape(-1, 1, 1), py.reshape(1, -1, 1), px.reshape(1, 1, -1))
    brain = anatomy.mask[box]
    tissue = anatomy.tissue[box]

    # Core field: union of rotated ellipsoids (distance-like, in core radii), warped by noise.
    n_blobs = int(rng.integers(1, 5))
    field_ = np.full(box_shape, -np.inf, dtype=np.float32)
    for k in range(n_blobs):
        direction = rng.standard_normal(3)
        offset = radius * 0.6 * rng.uniform(0.0, 1.0) * direction / np.linalg.norm(direction) if k else np.zeros(3)
        axes = radius * rng.uniform(0.55, 1.15, 3)
        rot = _random_rotation(rng)
        d = [pos[i] - offset[i] for i in range(3)]
        q = np.zeros(box_shape, dtype=np.float32)
        for j in range(3):
            comp = rot[0, j] * d[0] + rot[1, j] * d[1] + rot[2, j] * d[2]
            q += (comp / axes[j]) ** 2
        np.maximum(field_, 1.0 - np.sqrt(q), out=field_)
    warp = float(rng.uniform(0.08, 0.35))
    field_ += warp * _noise(rng, box_shape, radius * rng.uniform(0.25, 0.55), spacing)
    core, t_core = _top(field_, brain, n_core)

    # Necrosis (innermost core), non-enhancing patches, and the enhancing rest of the core.
    p_necrosis = 0.0 if rng.random() < 0.2 else float(rng.uniform(0.1, 0.65))
    nec_score = field_ + 0.15 * _noise(rng, box_shape, radius * 0.3, spacing)
    necrosis, t_nec = _top(nec_score, core, int(round(p_necrosis * n_core)))
    p_patches = float(rng.uniform(0.0, 0.3))
    patch_score = _noise(rng, box_shape, radius * rng.uniform(0.2, 0.45), spacing)
    rim = core & ~necrosis
    patches, t_patch = _top(patch_score, rim, int(round(p_patches * rim.sum())))

    # Oedema: around the core, spreading along white matter, avoiding CSF.
    wm_bonus = float(rng.uniform(0.0, 0.35))
    oed_score = (field_ + wm_bonus * (tissue == WM) - 0.4 * (tissue == CSF)
                 + float(rng.uniform(0.05, 0.3)) * _noise(rng, box_shape, radius_total * rng.uniform(0.3, 0.6), spacing))
    oedema, t_oed = _top(oed_score, brain & ~core, n_oedema)

    label = np.zeros(shape, dtype=np.uint8)
    box_label = np.zeros(box_shape, dtype=np.uint8)
    box_label[oedema] = LABEL_OEDEMA
    box_label[core] = LABEL_ENHANCING
    box_label[necrosis | patches] = LABEL_NECROSIS
    label[box] = box_label

    # Soft weights: edge widths in mm, converted to field units (core radii).
    edge_core = float(rng.uniform(0.3, 1.5)) / radius
    edge_nec = float(rng.uniform(0.3, 1.5)) / radius
    edge_oed = float(rng.uniform(0.5, 4.0)) / radius
    core_w = logistic((field_ - t_core) / edge_core)
    nec_w = logistic((nec_score - t_nec) / edge_nec) if necrosis.any() else np.zeros(box_shape, np.float32)
    if patches.any():
        nec_w = np.maximum(nec_w, logistic((patch_score - t_patch) / 0.1) * rim)
    oed_w = logistic((oed_score - t_oed) / edge_oed) if oedema.any() else np.zeros(box_shape, np.float32)
    oed_w = np.maximum(oed_w, core_w)

    counts = {v: int((box_label == v).sum()) for v in (LABEL_NECROSIS, LABEL_OEDEMA, LABEL_ENHANCING)}
    params = {
        "centre_voxel_zyx": [int(c) for c in centre],
        "box_voxel_zyx": [[int(b.start), int(b.stop)] for b in box],
        "core_radius_mm": round(radius, 3),
        "blobs": n_blobs,
        "warp": round(warp, 4),
        "necrosis_fraction_drawn": round(p_necrosis, 4),
        "patch_fraction_drawn": round(p_patches, 4),
        "oedema_ratio_drawn": round(oedema_ratio, 4),
        "white_matter_bonus": round(wm_bonus, 4),
        "edge_mm": {"core": round(edge_core * radius, 3), "necrosis": round(edge_nec * radius, 3),
                    "oedema": round(edge_oed * radius, 3)},
        "brain_voxels": brain_voxels,
        "necrosis_voxels": counts[LABEL_NECROSIS],
        "enhancing_voxels": counts[LABEL_ENHANCING],
        "oedema_voxels": counts[LABEL_OEDEMA],
        "core_voxels": counts[LABEL_NECROSIS] + counts[LABEL_ENHANCING],
        "core_fraction": (counts[LABEL_NECROSIS] + counts[LABEL_ENHANCING]) / brain_voxels,
    }
    return Tumour(label=label, box=box, core_weight=core_w, necrosis_weight=nec_w, oedema_weight=oed_w,
                  position_mm=pos, radius_mm=radius, params=params)
