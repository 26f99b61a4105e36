"""One synthetic BraTS-like case: generic brain + case-specific tumour, painted per channel.

Randomness comes from ``numpy.random.SeedSequence(seed)``, split into independent streams for
the anatomy, the tumour and each channel, so that

- the same seed gives identical arrays,
- ``tumour=False`` gives the same brain without the tumour,
- a channel looks the same whether 2 or 4 channels are generated.

Intensities are in arbitrary MR-like units (white matter about 400-600, background exactly 0).
Healthy tissue contrasts are nearly the same in every case; tumour contrasts (relative to white
matter), texture and edge sharpness are drawn per case from wide ranges, so a model trained on
a few cases sees only a few tumour appearances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asymseg import constants as C
from asymseg.errors import InputError
from asymseg.phantom.anatomy import CSF, DEEP_GM, GM, WM, make_anatomy
from asymseg.phantom.fields import smooth, smooth_noise
from asymseg.phantom.tumour import make_tumour
from asymseg.phantom.vessels import VESSEL_CONTRAST, make_vessels

#: Bumped whenever the same seed would give different arrays.
GENERATOR_VERSION = 1
#: Smallest and largest accepted size per axis (voxels).
MIN_SIZE, MAX_SIZE = 16, 1024

#: Healthy tissue intensity relative to white matter, per channel (typical MR contrasts).
TISSUE_CONTRAST: dict[str, dict[int, float]] = {
    "flair": {CSF: 0.30, GM: 1.18, WM: 1.0, DEEP_GM: 1.10},
    "t1c": {CSF: 0.32, GM: 0.74, WM: 1.0, DEEP_GM: 0.82},
    "t1": {CSF: 0.28, GM: 0.72, WM: 1.0, DEEP_GM: 0.80},
    "t2": {CSF: 2.10, GM: 1.35, WM: 1.0, DEEP_GM: 1.22},
}
#: Per-case tumour intensity ranges relative to white matter: (necrosis, enhancing, oedema).
#: They are wide and overlap the tissue range a little, as in BraTS.
TUMOUR_CONTRAST: dict[str, dict[str, tuple[float, float]]] = {
    "flair": {"necrosis": (0.45, 1.50), "enhancing": (0.90, 1.70), "oedema": (1.15, 1.90)},
    "t1c": {"necrosis": (0.25, 0.75), "enhancing": (1.22, 2.20), "oedema": (0.60, 0.95)},
    "t1": {"necrosis": (0.30, 0.70), "enhancing": (0.55, 0.95), "oedema": (0.60, 0.90)},
    "t2": {"necrosis": (1.50, 2.40), "enhancing": (1.10, 1.70), "oedema": (1.40, 2.10)},
}
#: Partial-volume blur (voxels) applied to the painted image.
PARTIAL_VOLUME_SIGMA = 0.5
#: Smallest intensity inside the brain, so that "non-zero" recovers the brain mask.
MIN_BRAIN_INTENSITY = 1e-3


@dataclass
class PhantomCase:
    """A synthetic case.

    Attributes:
        case_id: e.g. "phantom_000".
        images: channel name -> float32 (D, H, W) image; 0 outside the brain.
        label: uint8 (D, H, W), BraTS 2017-2021 values {0, 1, 2, 4}; tumour core = {1, 4}.
        spacing: voxel spacing (x, y, z) in mm.
        mask: bool (D, H, W) brain mask (the non-zero voxels of every image).
        params: the drawn parameters: seed, tumour geometry and per-channel contrasts (JSON-safe).
    """

    case_id: str
    images: dict[str, np.ndarray]
    label: np.ndarray
    spacing: tuple[float, float, float]
    mask: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)


def check_phantom_options(size: Sequence[int], channels: Sequence[str], spacing: Sequence[float]) -> None:
    """Raise :class:`InputError` for a bad size (x, y, z), channel list or spacing (x, y, z)."""
    if len(size) != 3:
        raise InputError(f"phantom size must have 3 values (x, y, z), got {list(size)}")
    for n in size:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not MIN_SIZE <= int(n) <= MAX_SIZE:
            raise InputError(f"phantom size {list(size)}: each axis must be an integer in {MIN_SIZE}..{MAX_SIZE}")
    if len(spacing) != 3 or not all(isinstance(s, (int, float, np.floating, np.integer)) and math.isfinite(s)
                                    and s > 0 for s in spacing):
        raise InputError(f"phantom spacing {list(spacing)}: expected 3 positive finite numbers (x, y, z) in mm")
    if not channels:
        raise InputError("phantom channels: none given")
    unknown = [c for c in channels if c not in C.CHANNEL_NAMES]
    if unknown:
        raise InputError(f"phantom channels {unknown} unknown; expected names from {list(C.CHANNEL_NAMES)}")
    if len(set(channels)) != len(channels):
        raise InputError(f"phantom channels {list(channels)} contain a duplicate")


def _paint_channel(rng: np.random.Generator, tumour_rng: np.random.Generator, name: str, anatomy, tumour,
                   shared_texture: np.ndarray, spacing_zyx: np.ndarray, vessels=None,
                   vessel_value: float = 0.0) -> tuple[np.ndarray, dict[str, Any]]:
    """One channel's image and its drawn contrasts (relative to white matter).

    ``rng`` draws the healthy appearance, bias and noise; ``tumour_rng`` the tumour's appearance,
    so that the same case without a tumour has the same brain. ``vessels`` (optional) are painted
    with ``vessel_value`` over the healthy tissue, under the tumour.
    """
    shape = anatomy.mask.shape
    lut = np.zeros(max(TISSUE_CONTRAST[name]) + 1, dtype=np.float32)
    for code, value in TISSUE_CONTRAST[name].items():
        lut[code] = value * rng.uniform(0.97, 1.03)
    image = lut[anatomy.tissue]
    # Healthy texture: fine anatomical grain shared by the channels, slow regional variation.
    grain = float(rng.uniform(0.025, 0.045)) * (1.0 if rng.random() < 0.5 else -1.0)
    regional_sigma = tuple(max(0.15 * anatomy.radius_mm / s, 1.5) for s in spacing_zyx)
    image *= 1.0 + grain * shared_texture + 0.04 * smooth_noise(rng, shape, regional_sigma)
    params: dict[str, Any] = {}
    if vessels is not None:
        image = image * (1.0 - vessels.weight) + vessel_value * vessels.weight
        params["vessels"] = round(vessel_value, 4)

    if tumour is not None:
        ranges = TUMOUR_CONTRAST[name]
        nec, enh, oed = (float(tumour_rng.uniform(*ranges[k])) for k in ("necrosis", "enhancing", "oedema"))
        texture_amp = float(tumour_rng.uniform(0.03, 0.25))
        texture_mm = float(tumour_rng.uniform(0.6, 2.5)) * float(spacing_zyx.mean())
        box = tumour.box
        box_shape = tumour.core_weight.shape
        texture = 1.0 + texture_amp * smooth_noise(tumour_rng, box_shape, tuple(max(texture_mm / s, 0.3) for s in spacing_zyx))
        direction = tumour_rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        gradient_amp = float(tumour_rng.uniform(0.0, 0.2))
        pz, py, px = tumour.position_mm
        ramp = (direction[0] * pz + direction[1] * py + direction[2] * px) / (2.0 * tumour.radius_mm)
        texture *= 1.0 + gradient_amp * np.clip(ramp, -1.0, 1.0)
        region = image[box]
        w_oed, w_core, w_nec = tumour.oedema_weight, tumour.core_weight, tumour.necrosis_weight
        region = region * (1.0 - w_oed) + oed * texture * w_oed
        core_value = enh * (1.0 - w_nec) + nec * w_nec
        region = region * (1.0 - w_core) + core_value * texture * w_core
        image[box] = region
        params.update({"necrosis": round(nec, 4), "enhancing": round(enh, 4), "oedema": round(oed, 4),
                       "texture_amplitude": round(texture_amp, 4), "texture_mm": round(texture_mm, 3),
                       "gradient": round(gradient_amp, 4)})

    image = smooth(image * anatomy.mask, (PARTIAL_VOLUME_SIGMA,) * 3)
    bias_sigma = tuple(max(0.5 * anatomy.radius_mm / s, 2.0) for s in spacing_zyx)
    bias_amp = float(rng.uniform(0.05, 0.15))
    image *= np.exp(bias_amp * smooth_noise(rng, shape, bias_sigma))
    # Rician noise inside the brain, then MR-like units; outside stays exactly 0.
    noise_sigma = float(rng.uniform(0.02, 0.045))
    scale = float(500.0 * rng.uniform(0.8, 1.25))
    inside = anatomy.mask
    values = image[inside]
    real = values + noise_sigma * rng.standard_normal(values.size, dtype=np.float32)
    imag = noise_sigma * rng.standard_normal(values.size, dtype=np.float32)
    out = np.zeros(shape, dtype=np.float32)
    out[inside] = np.maximum(np.sqrt(real * real + imag * imag) * scale, MIN_BRAIN_INTENSITY)
    params.update({"bias_amplitude": round(bias_amp, 4), "noise_sigma": round(noise_sigma, 4),
                   "scale": round(scale, 3)})
    return out, params


def make_phantom(seed: int, *, size: Sequence[int] = (48, 48, 48), channels: Sequence[str] = ("flair", "t1c"),
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), tumour: bool = True, vessels: bool = False,
                 case_id: str | None = None) -> PhantomCase:
    """Generate one synthetic BraTS-like case.

    Args:
        seed: non-negative integer; the same seed gives identical arrays.
        size: volume size (x, y, z) in voxels, each 16..1024 (arrays are (z, y, x)).
        channels: channel names from ``constants.CHANNEL_NAMES`` (flair, t1c, t1, t2).
        spacing: voxel spacing (x, y, z) in mm.
        tumour: False gives the same brain without a tumour (label all 0).
        vessels: also draw the vessels that enhance like a tumour rim (venous sinuses along the
            brain's edge, cortical veins, choroid plexus; :mod:`asymseg.phantom.vessels`), as
            background. Off, the arrays are those of earlier versions; on, the same brain and
            tumour with the vessels added.
        case_id: defaults to ``f"phantom_seed{seed}"``.

    Returns:
        The :class:`PhantomCase`; its tumour core (labels 1, 4) covers 0.5-10% of the brain.

    Raises:
        InputError: a bad seed, size, spacing or channel name.

    Example:
        >>> case = make_phantom(0, size=(32, 32, 24))
        >>> case.images["flair"].shape, sorted(set(case.label.ravel().tolist()))
        ((24, 32, 32), [0, 1, 2, 4])
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"phantom seed must be a non-negative integer, got {seed!r}")
    channels = tuple(channels)
    check_phantom_options(size, channels, spacing)
    shape_zyx = tuple(int(n) for n in reversed(tuple(size)))
    spacing_zyx = np.asarray(tuple(reversed(tuple(float(s) for s in spacing))), dtype=np.float64)

    streams = np.random.SeedSequence(int(seed)).spawn(4 + len(C.CHANNEL_NAMES))  # the last: vessels
    anatomy_rng, tumour_rng, texture_rng = (np.random.default_rng(s) for s in streams[:3])
    anatomy = make_anatomy(anatomy_rng, shape_zyx, spacing_zyx)
    grain = smooth_noise(texture_rng, shape_zyx, tuple(max(0.8 * spacing_zyx.mean() / s, 0.4) for s in spacing_zyx))
    tumour_obj = make_tumour(tumour_rng, anatomy, spacing_zyx) if tumour else None
    vessel_obj, vessel_values = None, {}
    if vessels:
        vessel_rng = np.random.default_rng(streams[-1])
        vessel_values = {n: float(vessel_rng.uniform(*VESSEL_CONTRAST[n])) for n in C.CHANNEL_NAMES}
        vessel_obj = make_vessels(vessel_rng, anatomy, spacing_zyx)

    images: dict[str, np.ndarray] = {}
    contrasts: dict[str, Any] = {}
    for name in channels:
        healthy_stream, tumour_stream = streams[3 + C.CHANNEL_NAMES.index(name)].spawn(2)
        images[name], contrasts[name] = _paint_channel(
            np.random.default_rng(healthy_stream), np.random.default_rng(tumour_stream), name, anatomy, tumour_obj,
            grain, spacing_zyx, vessel_obj, vessel_values.get(name, 0.0))

    label = tumour_obj.label if tumour_obj is not None else np.zeros(shape_zyx, dtype=np.uint8)
    brain_voxels = int(anatomy.mask.sum())
    params: dict[str, Any] = {
        "seed": int(seed),
        "generator_version": GENERATOR_VERSION,
        "size_xyz": [int(n) for n in size],
        "spacing_xyz": [float(s) for s in spacing],
        "channels": list(channels),
        "brain_voxels": brain_voxels,
        "anatomy": anatomy.params,
        "tumour": tumour_obj.params if tumour_obj is not None else None,
        "core_voxels": tumour_obj.params["core_voxels"] if tumour_obj is not None else 0,
        "core_fraction": tumour_obj.params["core_fraction"] if tumour_obj is not None else 0.0,
        "contrasts": contrasts,
    }
    if vessel_obj is not None:
        params["vessels"] = vessel_obj.params
    return PhantomCase(case_id=case_id or f"phantom_seed{seed}", images=images, label=label,
                       spacing=tuple(float(s) for s in spacing), mask=anatomy.mask, params=params)
