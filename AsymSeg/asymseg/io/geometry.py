"""Image geometry: size, spacing, origin and direction in SimpleITK's (x, y, z) order.

Arrays in AsymSeg are indexed (D, H, W) = (z, y, x), as ``SimpleITK.GetArrayFromImage`` returns
them, while spacing, origin and size are (x, y, z). :class:`Geometry` is the one place that knows
both orders (:attr:`Geometry.shape_zyx`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import SimpleITK as sitk

from asymseg import constants as C
from asymseg.errors import InputError

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _fmt(values: Sequence[float]) -> str:
    """``(1, 1, 2.5)``: compact, exact enough to show where two geometries differ."""
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def all_close(a: Sequence[float], b: Sequence[float], tol: float = C.GEOMETRY_TOLERANCE) -> bool:
    """Pairwise relative comparison with a floor of 1: ``|x - y| <= tol * max(1, |x|, |y|)`` for all pairs."""
    return all(abs(x - y) <= tol * max(1.0, abs(x), abs(y)) for x, y in zip(a, b))


@dataclass(frozen=True)
class Geometry:
    """Where a 3-D image lies in physical space (LPS millimetres, as ITK stores it).

    Args:
        size: voxels along (x, y, z).
        spacing: voxel size in mm along (x, y, z); every axis > 0.
        origin: physical position of voxel (0, 0, 0) in mm, (x, y, z).
        direction: the 3x3 direction cosine matrix, row-major (9 floats).
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = _IDENTITY

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.size)
        spacing = tuple(float(v) for v in self.spacing)
        origin = tuple(float(v) for v in self.origin)
        direction = tuple(float(v) for v in self.direction)
        if len(size) != 3 or len(spacing) != 3 or len(origin) != 3 or len(direction) != 9:
            raise ValueError(
                f"a 3-D geometry needs 3 sizes, 3 spacings, 3 origin values and 9 direction values; got "
                f"{len(size)}, {len(spacing)}, {len(origin)}, {len(direction)}"
            )
        if any(v < 1 for v in size):
            raise ValueError(f"size must be >= 1 along every axis, got {size}")
        if not all(math.isfinite(v) and v > 0 for v in spacing):
            raise ValueError(f"spacing must be finite and > 0 along every axis, got {_fmt(spacing)}")
        if not all(math.isfinite(v) for v in origin + direction):
            raise ValueError("origin and direction must be finite")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_image(cls, image: sitk.Image) -> Geometry:
        """The geometry of a 3-D SimpleITK image.

        Raises:
            ValueError: the image is not 3-D or its spacing is not positive.
        """
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3-D image, got {image.GetDimension()}-D")
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    @classmethod
    def default(cls, shape_zyx: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Geometry:
        """Identity direction and zero origin for an array of shape (D, H, W); spacing is (x, y, z)."""
        if len(shape_zyx) != 3:
            raise ValueError(f"expected a (D, H, W) shape, got {tuple(shape_zyx)}")
        d, h, w = (int(v) for v in shape_zyx)
        return cls((w, h, d), tuple(spacing), (0.0, 0.0, 0.0), _IDENTITY)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`.

        Raises:
            InputError: a key is missing or a value is invalid.
        """
        try:
            return cls(tuple(data["size"]), tuple(data["spacing"]), tuple(data["origin"]),
                       tuple(data["direction"]))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"invalid geometry {dict(data)!r}: {err}") from err

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        """JSON-friendly form: lists for size, spacing, origin and direction."""
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    # -- use ----------------------------------------------------------------------------------
    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """The numpy array shape (D, H, W) of an image with this geometry."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (spacing in mm; 1 ml = 1000 mm^3)."""
        return self.spacing[0] * self.spacing[1] * self.spacing[2] / 1000.0

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Set spacing, origin and direction on ``image`` (in place) and return it.

        Raises:
            ValueError: the image's size differs from :attr:`size`.
        """
        if tuple(image.GetSize()) != self.size:
            raise ValueError(f"image size {image.GetSize()} differs from the geometry's size {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def differences(self, other: Geometry, tol: float = C.GEOMETRY_TOLERANCE) -> list[str]:
        """How ``other`` differs from this geometry, one human-readable item per property.

        Sizes must match exactly; spacing, origin and direction values match when
        ``|a - b| <= tol * max(1, |a|, |b|)`` (relative, with absolute ``tol`` for values below 1).

        Returns:
            e.g. ``["spacing (1, 1, 1) vs (1, 1, 2)"]``; empty when the geometries match.
        """
        out: list[str] = []
        if self.size != other.size:
            out.append(f"size {self.size} vs {other.size}")
        for name in ("spacing", "origin", "direction"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if not all_close(mine, theirs, tol):
                out.append(f"{name} {_fmt(mine)} vs {_fmt(theirs)}")
        return out

    def describe(self) -> str:
        """One line: ``size 240x240x155, spacing (1, 1, 1) mm, origin (...), direction (...)``."""
        size = "x".join(str(v) for v in self.size)
        return (f"size {size}, spacing {_fmt(self.spacing)} mm, origin {_fmt(self.origin)} mm, "
                f"direction {_fmt(self.direction)}")
