"""The operating point: decision threshold, connected-component cleaning and mirror TTA.

A network gives, per voxel, the decision variable ``dz = max(z over rare classes) - max(z over
the others)`` (for a binary model ``z_fg - z_bg``; argmax means dz > 0). The operating point
turns dz into the mask a user sees:

1. **threshold** t: a voxel is rare where ``dz > t`` (t = 0 is the argmax). For a binary model,
   t is the logit of the probability threshold: p > sigmoid(t). A model that over-segments gets
   t > 0. Among the rare classes the largest logit wins; elsewhere the largest non-rare one.
2. **post-processing** of the rare mask, on 26-connected components: "none", "largest" (keep the
   largest component) or "min-ml:V" (drop components under V millilitres).
3. **tta**: average the logits over the 8 mirrorings of the volume (every subset of the three
   axes flipped, as nnU-Net does) before 1 and 2.

:func:`choose_operating_point` picks each part on validation cases with nnU-Net's rule for its
post-processing: a candidate is adopted only if no validation case gets a lower DSC than with
the current choice, and the mean DSC rises; among such candidates the highest mean wins. The
threshold comes first, then the post-processing at that threshold, then TTA at both. The choice
is recorded on the model card (``operating_point``) and applied by ``asymseg segment``, the API and
the Slicer panel; ``--threshold``, ``--postprocess`` and ``--tta`` override it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from asymseg.errors import InputError

#: Post-processing names (besides "min-ml:<V>").
POSTPROCESS = ("none", "largest")
#: Thresholds on dz tried by :func:`choose_operating_point`.
THRESHOLD_GRID: tuple[float, ...] = tuple(float(t) for t in np.round(np.arange(-4.0, 8.0001, 0.25), 2))
#: Minimum component volumes (ml) tried by :func:`choose_operating_point`.
MIN_VOLUME_GRID_ML: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)
#: DSC gains below this count as no change (rounding of voxel counts).
TOLERANCE = 1e-9


def parse_postprocess(value: Any) -> str:
    """Canonical post-processing name: "none", "largest" or "min-ml:<V>" with V > 0.

    Raises:
        InputError: anything else (the message lists the choices).
    """
    text = str(value).strip().lower() if value is not None else "none"
    if text in POSTPROCESS:
        return text
    if text.startswith("min-ml:"):
        try:
            volume = float(text.split(":", 1)[1])
        except ValueError:
            volume = float("nan")
        if math.isfinite(volume) and volume > 0:
            return f"min-ml:{volume:g}"
    raise InputError(f"post-processing {value!r}: expected none, largest or min-ml:<millilitres > 0>")


@dataclass(frozen=True)
class OperatingPoint:
    """How dz becomes the mask (see the module docstring).

    Attributes:
        threshold: rare where dz > threshold (finite).
        postprocess: "none", "largest" or "min-ml:<V>".
        tta: average the logits over the 8 mirrorings.
        chosen_on: where the values come from: "default", "validation" or "user", with the
            validation cases in ``validation`` (case ids and the DSC of each choice).
        validation: the record of :func:`choose_operating_point` (free-form JSON).
    """

    threshold: float = 0.0
    postprocess: str = "none"
    tta: bool = False
    chosen_on: str = "default"
    validation: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise InputError(f"operating point threshold must be a finite number, got {threshold!r}")
        object.__setattr__(self, "threshold", float(threshold))
        object.__setattr__(self, "postprocess", parse_postprocess(self.postprocess))
        if not isinstance(self.tta, bool):
            raise InputError(f"operating point tta must be true or false, got {self.tta!r}")
        if self.chosen_on not in ("default", "validation", "user"):
            raise InputError(f"operating point chosen_on must be default, validation or user, got {self.chosen_on!r}")
        if not isinstance(self.validation, Mapping):
            raise InputError("operating point validation must be an object")

    @property
    def is_default(self) -> bool:
        """Plain argmax: threshold 0, no post-processing, no TTA."""
        return self.threshold == 0.0 and self.postprocess == "none" and not self.tta

    def describe(self) -> str:
        """One line for logs and panels."""
        return (f"threshold dz > {self.threshold:g}, post-processing {self.postprocess}, "
                f"TTA {'on' if self.tta else 'off'} ({self.chosen_on})")

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "postprocess": self.postprocess, "tta": self.tta,
                "chosen_on": self.chosen_on, "validation": dict(self.validation)}

    @classmethod
    def from_dict(cls, data: Any) -> OperatingPoint:
        """Build from :meth:`to_dict` output.

        Raises:
            InputError: not an object, unknown keys (listed), or invalid values.
        """
        if not isinstance(data, Mapping):
            raise InputError(f"an operating point must be an object, got {type(data).__name__}")
        known = {"threshold", "postprocess", "tta", "chosen_on", "validation"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown operating point key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**dict(data))

    def override(self, *, threshold: float | None = None, postprocess: str | None = None,
                 tta: bool | None = None) -> OperatingPoint:
        """A copy with the given parts replaced (``chosen_on`` becomes "user" if any is)."""
        changes: dict[str, Any] = {}
        if threshold is not None:
            changes["threshold"] = threshold
        if postprocess is not None:
            changes["postprocess"] = postprocess
        if tta is not None:
            changes["tta"] = tta
        if not changes:
            return self
        return replace(self, chosen_on="user", **changes)


# -- applying ----------------------------------------------------------------------------------------
def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """26-connected components of a bool mask: (label image int32, voxel count per label 1..n)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    labelled = sitk.GetArrayFromImage(sitk.ConnectedComponent(image, True)).astype(np.int32, copy=False)
    counts = np.bincount(labelled.ravel())[1:]
    return labelled, counts


def postprocess(mask: np.ndarray, method: str, spacing: Sequence[float]) -> np.ndarray:
    """Apply a post-processing (``parse_postprocess`` names) to a bool rare mask.

    Args:
        mask: bool (D, H, W).
        method: "none", "largest" or "min-ml:<V>".
        spacing: voxel size (x, y, z) in mm, for "min-ml".

    Returns:
        A new bool mask (the input is not modified); an empty mask stays empty.
    """
    method = parse_postprocess(method)
    mask = np.asarray(mask, dtype=bool)
    if method == "none" or not mask.any():
        return mask.copy()
    labelled, counts = components(mask)
    if method == "largest":
        keep = np.zeros(counts.size + 1, dtype=bool)
        keep[1 + int(np.argmax(counts))] = True
    else:
        voxel_ml = float(np.prod(spacing)) / 1000.0
        minimum = float(method.split(":", 1)[1])
        keep = np.concatenate([[False], counts * voxel_ml >= minimum])
    return keep[labelled]


def rare_mask(decision: np.ndarray, mask: np.ndarray | None, threshold: float) -> np.ndarray:
    """``dz > threshold`` inside the brain mask (outside: never rare)."""
    out = np.asarray(decision) > float(threshold)
    if mask is not None:
        out &= np.asarray(mask, dtype=bool)
    return out


def decide(decision: np.ndarray, mask: np.ndarray | None, spacing: Sequence[float], point: OperatingPoint,
           *, logits: np.ndarray | None = None, rare: Sequence[bool] | None = None) -> np.ndarray:
    """The label map (uint8 class indices) of an operating point.

    Args:
        decision: dz (D, H, W), 0 outside the mask.
        mask: bool brain mask (D, H, W), or None (every voxel).
        spacing: voxel size (x, y, z) mm.
        point: the operating point (its ``tta`` is the caller's business: give the averaged dz).
        logits: ``(K, D, H, W)``, needed when there are more than two classes (which rare
            class, which other class); None for a binary model.
        rare: K flags (default: every class but 0).

    Returns:
        uint8 ``(D, H, W)``: for a binary model 1 where rare (after post-processing), else 0;
        for more classes the largest rare logit's class where rare, else the largest other one.
    """
    is_rare = postprocess(rare_mask(decision, mask, point.threshold), point.postprocess, spacing)
    if logits is None:
        return is_rare.astype(np.uint8)
    k = logits.shape[0]
    flags = np.asarray(rare if rare is not None else [i > 0 for i in range(k)], dtype=bool)
    if flags.size != k:
        raise InputError(f"rare has {flags.size} flags for {k} classes")
    rare_idx, other_idx = np.flatnonzero(flags), np.flatnonzero(~flags)
    labels = other_idx[np.argmax(logits[other_idx], axis=0)].astype(np.uint8)
    labels[is_rare] = rare_idx[np.argmax(logits[rare_idx][:, is_rare], axis=0)]
    if mask is not None:
        labels[~np.asarray(mask, dtype=bool)] = 0
    return labels


# -- choosing ------------------------------------------------------------------------------------------
@dataclass
class ValidationMaps:
    """What one validation case contributes to the choice.

    Attributes:
        case_id: the case's id.
        decision: dz (D, H, W) of the model that did not train on this case.
        reference: bool reference rare mask.
        mask: bool brain mask.
        spacing: (x, y, z) mm.
        decision_tta: dz averaged over the 8 mirrorings, or None (TTA is then not considered).
    """

    case_id: str
    decision: np.ndarray
    reference: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    decision_tta: np.ndarray | None = None


def _dsc(predicted: np.ndarray, reference: np.ndarray) -> tuple[float, float | None, float | None]:
    from asymseg.metrics import confusion

    tp, fp, fn, _ = confusion(predicted, reference)
    dsc = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return dsc, (tp / (tp + fn) if tp + fn else None), (tp / (tp + fp) if tp + fp else None)


def threshold_curve(decision: np.ndarray, reference: np.ndarray, mask: np.ndarray,
                    thresholds: Sequence[float] = THRESHOLD_GRID) -> list[dict[str, float | None]]:
    """DSC, sensitivity and precision of ``dz > t`` inside the mask for each t (no post-processing).

    Computed from sorted dz values of the reference and non-reference voxels (one pass each).
    """
    inside = np.asarray(mask, dtype=bool)
    ref = np.asarray(reference, dtype=bool)
    fg = np.sort(np.asarray(decision)[inside & ref].ravel())
    bg = np.sort(np.asarray(decision)[inside & ~ref].ravel())
    outside_ref = int(np.count_nonzero(ref & ~inside))          # reference voxels never predicted
    rows = []
    for t in thresholds:
        tp = fg.size - int(np.searchsorted(fg, t, side="right"))
        fp = bg.size - int(np.searchsorted(bg, t, side="right"))
        fn = fg.size - tp + outside_ref
        dsc = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        rows.append({"threshold": float(t), "dsc": dsc, "sensitivity": tp / (tp + fn) if tp + fn else None,
                     "precision": tp / (tp + fp) if tp + fp else None})
    return rows


def _adopt(current: list[float], candidates: Mapping[Any, list[float]]) -> tuple[Any, list[float]] | None:
    """The candidate with the highest mean among those that lower no case and raise the mean."""
    best = None
    for key, scores in candidates.items():
        if any(s < c - TOLERANCE for s, c in zip(scores, current)):
            continue
        if np.mean(scores) <= np.mean(current) + TOLERANCE:
            continue
        if best is None or np.mean(scores) > np.mean(best[1]) + TOLERANCE:
            best = (key, scores)
    return best


def choose_operating_point(cases: Sequence[ValidationMaps], *, thresholds: Sequence[float] = THRESHOLD_GRID,
                           volumes_ml: Sequence[float] = MIN_VOLUME_GRID_ML) -> OperatingPoint:
    """Choose threshold, post-processing and TTA on validation cases (module docstring's rule).

    Returns:
        The operating point, ``chosen_on="validation"``, with ``validation`` holding the case
        ids, the DSC of each case at every step (argmax, chosen threshold, chosen
        post-processing, TTA), and sensitivity and precision at the final choice.

    Raises:
        InputError: no cases.
    """
    if not cases:
        raise InputError("choosing an operating point needs at least one validation case")
    curves = [threshold_curve(c.decision, c.reference, c.mask, sorted(set(thresholds) | {0.0})) for c in cases]
    by_t = {row["threshold"]: [curve[i]["dsc"] for curve in curves] for i, row in enumerate(curves[0])}
    steps: list[dict[str, Any]] = [{"step": "argmax", "dsc": by_t[0.0]}]
    threshold, current = 0.0, by_t[0.0]
    adopted = _adopt(current, {t: s for t, s in by_t.items() if t != 0.0})
    if adopted is not None:
        threshold, current = adopted
    steps.append({"step": "threshold", "threshold": threshold, "dsc": current})

    def scores(method: str, use_tta: bool) -> list[float]:
        out = []
        for c in cases:
            dz = c.decision_tta if use_tta else c.decision
            out.append(_dsc(postprocess(rare_mask(dz, c.mask, threshold), method, c.spacing), c.reference)[0])
        return out

    methods = ["largest"] + [f"min-ml:{v:g}" for v in volumes_ml]
    method = "none"
    adopted = _adopt(current, {m: scores(m, False) for m in methods})
    if adopted is not None:
        method, current = adopted
    steps.append({"step": "postprocess", "postprocess": method, "dsc": current})
    tta = False
    if all(c.decision_tta is not None for c in cases):
        adopted = _adopt(current, {True: scores(method, True)})
        if adopted is not None:
            tta, current = True, adopted[1]
        steps.append({"step": "tta", "tta": tta, "dsc": current})
    final = []
    for c in cases:
        dz = c.decision_tta if tta else c.decision
        dsc, sens, prec = _dsc(postprocess(rare_mask(dz, c.mask, threshold), method, c.spacing), c.reference)
        final.append({"case_id": c.case_id, "dsc": dsc, "sensitivity": sens, "precision": prec})
    record = {"cases": [c.case_id for c in cases], "steps": steps, "final": final,
              "rule": "adopted only if no validation case loses DSC and the mean rises"}
    return OperatingPoint(threshold=threshold, postprocess=method, tta=tta, chosen_on="validation",
                          validation=record)
