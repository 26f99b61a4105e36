"""Smooth random fields and Gaussian smoothing in plain numpy (separable, no scipy).

Every array here is ``(D, H, W)`` float32 and every width is in voxels per axis ``(z, y, x)``.
Wide fields are drawn on a coarse grid and upsampled linearly, so their cost does not grow
with the width: a 240x240x155 field takes about as long as one pass over the volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Kernel half-width in standard deviations.
KERNEL_RADIUS_SIGMAS = 3.0
#: Smoothing widths (voxels) below this are treated as no smoothing along that axis.
MIN_SIGMA = 0.1
#: Noise fields are drawn on a grid coarser by ``floor(sigma / COARSE_SIGMA)``, so the smoothing
#: on that grid is 1.25-2.5 cells wide whatever the field's width.
COARSE_SIGMA = 1.25


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1D Gaussian weights (float32) of half-width ``ceil(3 sigma)``."""
    radius = max(1, int(np.ceil(KERNEL_RADIUS_SIGMAS * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def smooth(volume: np.ndarray, sigma: Sequence[float]) -> np.ndarray:
    """Gaussian smoothing by separable convolution with mirrored borders.

    Args:
        volume: a 3D float array.
        sigma: standard deviation in voxels per axis (z, y, x); axes below ``MIN_SIGMA`` are skipped.

    Returns:
        The smoothed volume, float32, same shape.
    """
    out = np.asarray(volume, dtype=np.float32)
    for axis, s in enumerate(sigma):
        if s < MIN_SIGMA or out.shape[axis] < 2:
            continue
        weights = gaussian_kernel(float(s))
        radius = len(weights) // 2
        n = out.shape[axis]
        if radius >= n:  # a very short axis: clamp the kernel to what mirroring allows
            weights = gaussian_kernel(float(s))[radius - (n - 1): radius + n]
            weights = weights / weights.sum()
            radius = n - 1
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.moveaxis(np.pad(out, pad, mode="reflect"), axis, 0)
        acc = weights[radius] * padded[radius: radius + n]
        tmp = np.empty_like(acc)
        for j in range(radius):  # symmetric kernel: pair the taps
            np.add(padded[j: j + n], padded[2 * radius - j: 2 * radius - j + n], out=tmp)
            tmp *= weights[j]
            acc += tmp
        out = np.moveaxis(acc, 0, axis)
    return np.ascontiguousarray(out)


def _upsample_linear(coarse: np.ndarray, shape: Sequence[int], factor: Sequence[int]) -> np.ndarray:
    """Linear interpolation of a coarse grid (one margin cell each side) onto ``shape``."""
    out = coarse
    for axis, (n, f) in enumerate(zip(shape, factor)):
        if f == 1 and out.shape[axis] == n + 2:
            out = np.take(out, np.arange(1, n + 1), axis=axis)
            continue
        pos = (np.arange(n, dtype=np.float64) + 0.5) / f - 0.5 + 1.0
        i0 = np.clip(np.floor(pos).astype(np.int64), 0, out.shape[axis] - 2)
        w = (pos - i0).astype(np.float32)
        bshape = [1] * out.ndim
        bshape[axis] = n
        w = w.reshape(bshape)
        out = np.take(out, i0, axis=axis) * (1.0 - w) + np.take(out, i0 + 1, axis=axis) * w
    return out.astype(np.float32, copy=False)


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: Sequence[float]) -> np.ndarray:
    """Gaussian-smoothed white noise, standardised to mean 0 and standard deviation 1.

    Args:
        rng: the random generator (consumed deterministically).
        shape: output shape (D, H, W).
        sigma: correlation width in voxels per axis (z, y, x).

    Returns:
        float32 array of ``shape``.
    """
    shape = tuple(int(n) for n in shape)
    factor = tuple(max(1, int(s // COARSE_SIGMA)) for s in sigma)
    coarse_shape = tuple(-(-n // f) + 2 for n, f in zip(shape, factor))
    coarse_sigma = tuple(s / f for s, f in zip(sigma, factor))
    white = rng.standard_normal(coarse_shape, dtype=np.float32)
    field = smooth(white, coarse_sigma)
    field -= field.mean()
    field /= max(float(field.std()), 1e-12)
    return _upsample_linear(field, shape, factor)


def logistic(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in float32 without overflow warnings."""
    return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float32)))).astype(np.float32, copy=False)
