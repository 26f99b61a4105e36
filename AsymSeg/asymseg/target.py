"""What the network segments: classes built from source label values, and which are rare.

A :class:`TargetSpec` maps a source label map (e.g. BraTS labels 0-4) to class indices
0..C-1. Class 0 is the background: every label value not claimed by another class.
The binary tumour core is ``TargetSpec.tumour_core("brats2015")``: background + core (rare).
Multi-class targets list several classes, any subset of them rare.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from asymseg import constants as C
from asymseg.errors import InputError


@dataclass(frozen=True)
class TargetClass:
    """One output class.

    Args:
        name: e.g. "tumour_core".
        labels: the source label values mapped to this class (empty for the background).
        rare: whether the class is rare (the asymmetric techniques act on rare classes).
    """

    name: str
    labels: tuple[int, ...]
    rare: bool


@dataclass(frozen=True)
class TargetSpec:
    """Output classes; index 0 is the background (all labels not claimed by another class)."""

    classes: tuple[TargetClass, ...]
    convention: str | None = None

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ValueError("a target needs a background class and at least one more class")
        if self.classes[0].labels:
            raise ValueError("class 0 is the background and takes no explicit labels")
        seen: set[int] = set()
        for cls in self.classes[1:]:
            if not cls.labels:
                raise ValueError(f"class {cls.name!r} has no label values")
            overlap = seen.intersection(cls.labels)
            if overlap:
                raise ValueError(f"label values {sorted(overlap)} are claimed by two classes")
            seen.update(cls.labels)
        if not any(c.rare for c in self.classes):
            raise ValueError("at least one class must be rare")

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def tumour_core(cls, convention: str) -> TargetSpec:
        """Binary tumour core for a BraTS convention ("brats2015", "brats2017", "brats2023")."""
        if convention not in C.TUMOUR_CORE_LABELS:
            raise InputError(
                f"unknown label convention {convention!r}; expected one of {sorted(C.TUMOUR_CORE_LABELS)}"
            )
        return cls(
            (TargetClass(C.BACKGROUND, (), False),
             TargetClass(C.TUMOUR_CORE, C.TUMOUR_CORE_LABELS[convention], True)),
            convention=convention,
        )

    @classmethod
    def foreground(cls, labels: Iterable[int], name: str = C.TUMOUR_CORE) -> TargetSpec:
        """Binary target: the given source labels are the (rare) foreground."""
        labels = tuple(sorted({int(v) for v in labels}))
        if not labels or 0 in labels:
            raise InputError(f"foreground labels must be non-empty and exclude 0, got {list(labels)}")
        return cls((TargetClass(C.BACKGROUND, (), False), TargetClass(name, labels, True)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetSpec:
        try:
            classes = tuple(
                TargetClass(str(c["name"]), tuple(int(v) for v in c.get("labels", ())), bool(c["rare"]))
                for c in data["classes"]
            )
            return cls(classes, convention=data.get("convention"))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"invalid target definition: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        return {
            "convention": self.convention,
            "classes": [
                {"name": c.name, "value": i, "labels": list(c.labels), "rare": c.rare}
                for i, c in enumerate(self.classes)
            ],
        }

    # -- properties -----------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def rare(self) -> tuple[bool, ...]:
        """One boolean per class: r[c] in METHOD.md."""
        return tuple(c.rare for c in self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def claimed_labels(self) -> frozenset[int]:
        return frozenset(v for c in self.classes for v in c.labels)

    # -- mapping --------------------------------------------------------------------------------
    def class_map(self, label: np.ndarray) -> np.ndarray:
        """Map a source label map (any int shape) to class indices (int64, same shape)."""
        out = np.zeros(label.shape, dtype=np.int64)
        for index, cls in enumerate(self.classes[1:], start=1):
            out[np.isin(label, cls.labels)] = index
        return out

    def check_label_values(self, values: Iterable[int], source: str = "label") -> None:
        """Refuse label values that the target's BraTS convention does not define.

        A target built from a convention (brats2017: 0, 1, 2, 4) maps every value it does not
        claim to the background. A value outside the convention (3 in a BraTS 2017-2021 label
        map) means the map follows another convention; treating it as background would silently
        train on, or score against, the wrong tumour core. Targets built from explicit foreground
        labels accept any value.

        Raises:
            InputError: naming ``source``, the unexpected values and the convention's values.
        """
        if self.convention is None or self.convention not in C.CONVENTION_VALUES:
            return
        allowed = C.CONVENTION_VALUES[self.convention]
        unknown = sorted({int(v) for v in values} - allowed)
        if unknown:
            raise InputError(f"{source}: label values {unknown} are not part of the {self.convention} convention "
                             f"{sorted(allowed)}; pass the matching --label-convention or --foreground-labels")

    def rare_mask(self, label: np.ndarray) -> np.ndarray:
        """Boolean map of voxels whose source label belongs to any rare class."""
        rare_labels = [v for c in self.classes if c.rare for v in c.labels]
        return np.isin(label, rare_labels)


def guess_convention(label_values: Iterable[int], source: str = "label") -> str:
    """The BraTS convention for a label map, only where the tumour core is unambiguous.

    Every convention whose label set contains the values is a candidate; the guess succeeds
    when all candidates define the same tumour core on these values.

    Raises:
        InputError: no convention fits, or the candidates disagree (names the file).
    """
    values = frozenset(int(v) for v in label_values)
    candidates = [name for name, allowed in C.CONVENTION_VALUES.items() if values <= allowed]
    if not candidates:
        raise InputError(
            f"{source}: label values {sorted(values)} fit no BraTS convention; "
            "pass --foreground-labels (e.g. --foreground-labels 1,4)"
        )
    cores = {frozenset(values.intersection(C.TUMOUR_CORE_LABELS[n])) for n in candidates}
    if len(cores) > 1:
        raise InputError(
            f"{source}: label values {sorted(values)} are ambiguous between {', '.join(candidates)}; "
            "pass --label-convention or --foreground-labels"
        )
    # Prefer the most specific candidate (the one whose value set is smallest but still fits).
    return min(candidates, key=lambda n: (len(C.CONVENTION_VALUES[n]), n))


def resolve_target(
    *,
    convention: str | None = None,
    foreground_labels: Sequence[int] | None = None,
    label_values: Iterable[int] | None = None,
    source: str = "label",
) -> TargetSpec:
    """Build the target from explicit options, or guess the BraTS convention from label values."""
    if convention and foreground_labels:
        raise InputError("give either --label-convention or --foreground-labels, not both")
    if foreground_labels:
        return TargetSpec.foreground(foreground_labels)
    if convention:
        return TargetSpec.tumour_core(convention)
    if label_values is None:
        raise InputError(f"{source}: no label file found, so the label convention cannot be guessed; "
                         "pass --label-convention")
    return TargetSpec.tumour_core(guess_convention(label_values, source))
