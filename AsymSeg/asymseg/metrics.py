"""Segmentation metrics for binary masks: overlap, surface distances, volumes. Numpy in, floats out.

All functions take boolean (D, H, W) arrays (anything nonzero counts as foreground) and a voxel
``spacing`` in mm given as (x, y, z), the order of :attr:`asymseg.io.Geometry.spacing`.

Definitions (TP, FP, FN, TN are voxel counts):

- DSC = 2 TP / (2 TP + FP + FN); sensitivity = TP / (TP + FN); precision = TP / (TP + FP);
  specificity = TN / (TN + FP); volumes in ml = voxels x voxel volume.
- Surfaces are the foreground voxels with at least one face neighbour in the background (voxels
  outside the volume count as background), as in medpy and the BraTS evaluation. Distances run
  between voxel centres in mm.
- HD95 pools the distances from every prediction-surface voxel to the reference surface and from
  every reference-surface voxel to the prediction surface and takes their 95th percentile (linear
  interpolation, ``numpy.percentile``), as medpy's ``hd95`` does. :func:`hausdorff` is the maximum
  of the same distances.

Empty masks follow the BraTS rules, so no value is ever NaN:

================================  ======  =================================  ===========  =========  ===========
case                              DSC     HD95 / Hausdorff                   sensitivity  precision  specificity
================================  ======  =================================  ===========  =========  ===========
both empty                        1       0                                  None         None       computed
prediction empty, reference not   0       ``constants.BRATS_HD95_CAP`` (mm)  0            None       computed
reference empty, prediction not   0       ``constants.BRATS_HD95_CAP`` (mm)  None         0          computed
================================  ======  =================================  ===========  =========  ===========

Specificity is None only when there are no negative voxels (the reference fills the volume).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from asymseg import constants as C
from asymseg.errors import InputError

METRIC_KEYS: tuple[str, ...] = (
    "dsc", "sensitivity", "precision", "specificity", "hd95", "volume_prediction_ml", "volume_reference_ml",
    "tp", "fp", "fn", "tn",
)


def _check(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    prediction = np.asarray(prediction) != 0
    reference = np.asarray(reference) != 0
    if prediction.shape != reference.shape or prediction.ndim != 3:
        raise ValueError(f"prediction and reference must be (D, H, W) arrays of one shape; got "
                         f"{prediction.shape} and {reference.shape}")
    spacing_t = tuple(float(s) for s in spacing)
    if len(spacing_t) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing_t):
        raise ValueError(f"spacing must be three positive numbers (x, y, z) in mm, got {tuple(spacing)}")
    return prediction, reference, spacing_t  # type: ignore[return-value]


def surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a face neighbour in the background (outside the volume counts as background).

    Shape:
        mask (D, H, W) -> bool (D, H, W).
    """
    mask = np.asarray(mask) != 0
    padded = np.pad(mask, 1, constant_values=False)
    interior = mask.copy()
    core = (slice(1, -1),) * 3
    for axis in range(3):
        for start, stop in ((0, -2), (2, None)):
            index = list(core)
            index[axis] = slice(start, stop)
            interior &= padded[tuple(index)]
    return mask & ~interior


def _distance_to(target: np.ndarray, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    """Euclidean distance (mm) from every voxel centre to the nearest voxel of ``target`` (0 on it)."""
    image = sitk.GetImageFromArray(target.astype(np.uint8))
    image.SetSpacing(spacing_xyz)
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return np.maximum(sitk.GetArrayFromImage(distance), 0.0)


def surface_distances(prediction: np.ndarray, reference: np.ndarray,
                      spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each prediction-surface voxel to the reference surface, and back.

    Both masks must be non-empty. The work is cropped to the bounding box of both surfaces,
    which changes no distance.

    Returns:
        ``(prediction_to_reference, reference_to_prediction)``, 1-D float64 arrays.

    Raises:
        ValueError: shapes differ, bad spacing, or a mask is empty.
    """
    prediction, reference, spacing_t = _check(prediction, reference, spacing)
    if not prediction.any() or not reference.any():
        raise ValueError("surface distances need two non-empty masks")
    border_p, border_r = surface(prediction), surface(reference)
    union = border_p | border_r
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(union))
    border_p, border_r = border_p[box], border_r[box]
    # The surfaces are themselves thin shells whose every voxel touches the background, so the
    # Maurer map of a surface is 0 on it and the distance to its nearest voxel elsewhere.
    to_reference = _distance_to(border_r, spacing_t)[border_p].astype(np.float64)
    to_prediction = _distance_to(border_p, spacing_t)[border_r].astype(np.float64)
    return to_reference, to_prediction


def _empty_rule(prediction: np.ndarray, reference: np.ndarray) -> float | None:
    has_p, has_r = bool(prediction.any()), bool(reference.any())
    if not has_p and not has_r:
        return 0.0
    if has_p != has_r:
        return float(C.BRATS_HD95_CAP)
    return None


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm (pooled surface distances, BraTS empty rules).

    Args:
        prediction: bool (D, H, W).
        reference: bool (D, H, W).
        spacing: voxel size (x, y, z) in mm.
    """
    prediction, reference, spacing_t = _check(prediction, reference, spacing)
    special = _empty_rule(prediction, reference)
    if special is not None:
        return special
    forward, backward = surface_distances(prediction, reference, spacing_t)
    return float(np.percentile(np.concatenate([forward, backward]), 95))


def hausdorff(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Symmetric (maximum) Hausdorff distance between the two surfaces in mm; BraTS empty rules."""
    prediction, reference, spacing_t = _check(prediction, reference, spacing)
    special = _empty_rule(prediction, reference)
    if special is not None:
        return special
    forward, backward = surface_distances(prediction, reference, spacing_t)
    return float(max(forward.max(), backward.max()))


def confusion(prediction: np.ndarray, reference: np.ndarray) -> tuple[int, int, int, int]:
    """Voxel counts ``(tp, fp, fn, tn)`` of two same-shape masks."""
    prediction = np.asarray(prediction) != 0
    reference = np.asarray(reference) != 0
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction and reference shapes differ: {prediction.shape} and {reference.shape}")
    tp = int(np.count_nonzero(prediction & reference))
    fp = int(np.count_nonzero(prediction)) - tp
    fn = int(np.count_nonzero(reference)) - tp
    tn = int(prediction.size) - tp - fp - fn
    return tp, fp, fn, tn


def case_metrics(prediction: np.ndarray, reference: np.ndarray,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float | int | None]:
    """Every per-case metric of a binary prediction against a binary reference.

    Args:
        prediction: bool (D, H, W).
        reference: bool (D, H, W).
        spacing: voxel size (x, y, z) in mm.

    Returns:
        ``{dsc, sensitivity, precision, specificity, hd95, volume_prediction_ml, volume_reference_ml,
        tp, fp, fn, tn}``; None where the module docstring says so, never NaN.

    Raises:
        ValueError: shapes differ or spacing is invalid.
    """
    prediction, reference, spacing_t = _check(prediction, reference, spacing)
    tp, fp, fn, tn = confusion(prediction, reference)
    voxel_ml = spacing_t[0] * spacing_t[1] * spacing_t[2] / 1000.0
    both_empty = tp + fp + fn == 0
    return {
        "dsc": 1.0 if both_empty else 2.0 * tp / (2 * tp + fp + fn),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "hd95": hd95(prediction, reference, spacing_t),
        "volume_prediction_ml": (tp + fp) * voxel_ml,
        "volume_reference_ml": (tp + fn) * voxel_ml,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def summarize(per_case: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Mean, sample SD (ddof 1), median, min, max and counts of each numeric metric over cases.

    Values that are None (or non-finite) are left out of the statistics and counted in ``missing``;
    keys holding anything else (case ids, paths) are skipped.

    Returns:
        ``{metric: {"mean", "sd", "median", "min", "max", "n", "missing"}}``; the statistics are None
        when ``n`` is 0, and ``sd`` is None when ``n`` is 1.
    """
    cases = list(per_case)
    keys: list[str] = []
    for case in cases:
        keys.extend(k for k in case if k not in keys)
    out: dict[str, dict[str, float | int | None]] = {}
    for key in keys:
        raw = [case.get(key) for case in cases]
        if not all(v is None or _is_number(v) for v in raw):
            continue
        values = np.array([float(v) for v in raw if v is not None and math.isfinite(float(v))], dtype=np.float64)
        n = int(values.size)
        out[key] = {
            "mean": float(values.mean()) if n else None,
            "sd": float(values.std(ddof=1)) if n > 1 else None,
            "median": float(np.median(values)) if n else None,
            "min": float(values.min()) if n else None,
            "max": float(values.max()) if n else None,
            "n": n,
            "missing": len(raw) - n,
        }
    return out


def evaluate_files(prediction: str | os.PathLike[str], reference: str | os.PathLike[str], *,
                   convention: str | None = None, foreground_labels: Sequence[int] | None = None) -> dict[str, Any]:
    """Read a prediction and a reference from files and compute :func:`case_metrics`.

    A map whose values are within {0, 1} is taken as a binary mask as it is. Any other map is a
    label map turned into the foreground (the rare classes) of the target: ``convention`` or
    ``foreground_labels`` when given, else the BraTS convention guessed from the values of the
    label maps involved (see :func:`asymseg.target.resolve_target`).

    Args:
        prediction: binary mask or label map file.
        reference: binary mask or label map file (e.g. a BraTS segmentation).
        convention: BraTS label convention for label maps.
        foreground_labels: explicit foreground label values for label maps.

    Returns:
        ``{"prediction", "reference", "spacing", "binary": {"prediction", "reference"}, "target",
        "target_guessed", "metrics"}``; ``metrics`` holds :func:`case_metrics` plus ``hausdorff``
        (the maximum surface distance, mm); ``target`` is None when both maps were binary.

    Raises:
        InputError: a file cannot be read, the two are on different grids (names both files and the
            difference), or the label convention cannot be determined.
    """
    from asymseg.io import read_label
    from asymseg.target import resolve_target

    pred_map, pred_geo = read_label(prediction, role="prediction")
    ref_map, ref_geo = read_label(reference, role="reference")
    problems = ref_geo.differences(pred_geo)
    if problems:
        raise InputError(f"{reference} and {prediction} are on different grids: {'; '.join(problems)}")
    maps = {"prediction": (pred_map, prediction), "reference": (ref_map, reference)}
    binary = {name: bool(np.isin(np.unique(m), (0, 1)).all()) for name, (m, _) in maps.items()}
    target = None
    if not all(binary.values()):
        labelled = [name for name in maps if not binary[name]]
        values = sorted(set().union(*(np.unique(maps[name][0]).tolist() for name in labelled)))
        target = resolve_target(convention=convention, foreground_labels=foreground_labels, label_values=values,
                                source=" and ".join(str(maps[name][1]) for name in labelled))
        for name in labelled:
            target.check_label_values(np.unique(maps[name][0]), source=str(maps[name][1]))
    masks = {name: (m != 0) if binary[name] else target.rare_mask(m) for name, (m, _) in maps.items()}
    metrics = case_metrics(masks["prediction"], masks["reference"], ref_geo.spacing)
    metrics["hausdorff"] = hausdorff(masks["prediction"], masks["reference"], ref_geo.spacing)
    return {
        "prediction": str(prediction),
        "reference": str(reference),
        "spacing": list(ref_geo.spacing),
        "binary": binary,
        "target": target.to_dict() if target is not None else None,
        "target_guessed": target is not None and not convention and not foreground_labels,
        "metrics": metrics,
    }
