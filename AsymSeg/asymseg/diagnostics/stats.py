"""Statistics of the decision variable dz on arrays: the numbers behind the paper's Fig. 2 / Fig. 4.

Everything here is numpy in, plain Python numbers out; nothing reads files or runs a network.

For a rare class c the decision variable of voxel v is::

    dz[v] = z[v, c] - max_{k != c} z[v, k]        (binary: z_fg - z_bg)

and the decision boundary is dz = 0: voxels with dz > 0 are labelled c by the argmax. A rare
voxel (ground truth c) is on the wrong side when dz < 0; a non-rare voxel when dz > 0 (METHOD.md,
"The logit diagnostic"). The shift of a side is ``mean_test(dz) - mean_train(dz)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Quantiles (in percent) reported for every distribution.
QUANTILES: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99)
#: Sides of the boundary analysed per class: ground-truth rare voxels and non-rare voxels.
SIDES: tuple[str, ...] = ("rare", "nonrare")
#: Histogram bins between the common edges.
DEFAULT_BINS = 80
#: The histogram range spans these pooled percentiles (values outside are counted as below/above).
HISTOGRAM_RANGE_PERCENTILES: tuple[float, float] = (0.5, 99.5)


def decision_variable(logits: np.ndarray, rare_class: int) -> np.ndarray:
    """dz = z_c - max over the other classes of z_k, per voxel.

    Args:
        logits: raw network outputs (not probabilities), class axis first.
        rare_class: the class index c (1..K-1 for a rare class; any index is accepted).

    Returns:
        float32 array of the spatial shape.

    Raises:
        ValueError: fewer than two classes, or ``rare_class`` out of range.

    Shape:
        logits ``(K, ...)`` -> ``(...)``.
    """
    logits = np.asarray(logits)
    if logits.ndim < 1 or logits.shape[0] < 2:
        raise ValueError(f"logits need a class axis with at least 2 classes, got shape {logits.shape}")
    classes = logits.shape[0]
    if not 0 <= rare_class < classes:
        raise ValueError(f"rare_class {rare_class} is out of range for {classes} classes")
    z = logits.astype(np.float32, copy=False)
    others = np.delete(np.arange(classes), rare_class)
    if others.size == 1:
        return (z[rare_class] - z[others[0]]).astype(np.float32)
    return (z[rare_class] - z[others].max(axis=0)).astype(np.float32)


def allocate_quota(counts: Sequence[int], cap: int | None) -> list[int]:
    """Split a cap over cases in proportion to their counts (largest remainder).

    Taking ``quota[i]`` uniformly from case i gives a uniform subsample of the pooled voxels.

    Args:
        counts: voxels available per case (>= 0).
        cap: the most voxels to keep in all; None keeps everything.

    Returns:
        One quota per case; ``quota[i] <= counts[i]`` and the sum is ``min(cap, sum(counts))``.
    """
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts):
        raise ValueError(f"counts must be >= 0, got {counts}")
    total = sum(counts)
    if cap is None or total <= cap:
        return list(counts)
    if cap < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    exact = [cap * c / total for c in counts]
    quota = [int(np.floor(e)) for e in exact]
    remainder = cap - sum(quota)
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - quota[i]), i))
    for i in order[:remainder]:
        quota[i] += 1
    return quota


def summarize_values(dz: np.ndarray, side: str) -> dict[str, Any]:
    """Count, mean, std, min, max, quantiles and the wrong-side fraction of one distribution.

    Args:
        dz: decision-variable values ``(N,)``.
        side: "rare" (wrong side: dz < 0) or "nonrare" (wrong side: dz > 0).

    Returns:
        A dict of Python numbers; statistics of an empty array are None (JSON null).
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    values = np.asarray(dz, dtype=np.float64).reshape(-1)
    count = int(values.size)
    if count == 0:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None,
                "quantiles": {f"p{q}": None for q in QUANTILES}, "wrong_side": None, "wrong_side_count": 0}
    if not np.all(np.isfinite(values)):
        raise ValueError("dz contains NaN or infinite values")
    wrong = int(np.count_nonzero(values < 0) if side == "rare" else np.count_nonzero(values > 0))
    quantiles = np.quantile(values, [q / 100 for q in QUANTILES])
    return {
        "count": count,
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {f"p{q}": float(v) for q, v in zip(QUANTILES, quantiles)},
        "wrong_side": wrong / count,
        "wrong_side_count": wrong,
    }


def histogram_edges(arrays: Sequence[np.ndarray], bins: int = DEFAULT_BINS) -> np.ndarray:
    """Common bin edges for several distributions: the pooled 0.5-99.5 percentile range, with 0 inside.

    Returns:
        ``(bins + 1,)`` float64 edges; a degenerate range is widened to +-1 around its value.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    pooled = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays] or [np.zeros(0)])
    if pooled.size == 0:
        lo, hi = -1.0, 1.0
    else:
        lo, hi = (float(v) for v in np.percentile(pooled, HISTOGRAM_RANGE_PERCENTILES))
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if hi - lo <= 0:
            lo, hi = lo - 1.0, hi + 1.0
    return np.linspace(lo, hi, bins + 1)


def histogram(dz: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    """Counts and density of ``dz`` on fixed edges; values outside are counted as below/above.

    The density is ``counts / (N * bin_width)`` with N all values (inside or not), so it integrates
    to the fraction of values inside the range.
    """
    values = np.asarray(dz, dtype=np.float64).reshape(-1)
    edges = np.asarray(edges, dtype=np.float64)
    inside = (values >= edges[0]) & (values <= edges[-1])
    counts, _ = np.histogram(values[inside], bins=edges)
    widths = np.diff(edges)
    density = counts / (values.size * widths) if values.size else np.zeros_like(widths)
    return {
        "counts": counts.astype(np.int64).tolist(),
        "density": density.tolist(),
        "below": int(np.count_nonzero(values < edges[0])),
        "above": int(np.count_nonzero(values > edges[-1])),
    }


@dataclass(frozen=True)
class CaseSample:
    """The dz values of one case for one rare class.

    Args:
        dz: decision variable per voxel ``(N,)`` (float).
        is_rare: ground truth ``(N,)`` bool: True for voxels of the rare class, False for non-rare ones.
            Voxels of other rare classes are left out by the caller.
        case_id: a name for per-case numbers (default: "case<i>").
        nonrare_total: non-rare voxels of the case before any earlier subsampling (default: the count
            in ``is_rare``); used to split the cap in proportion to each case's true size.
    """

    dz: np.ndarray
    is_rare: np.ndarray
    case_id: str = ""
    nonrare_total: int | None = None

    def __post_init__(self) -> None:
        dz = np.asarray(self.dz, dtype=np.float32).reshape(-1)
        is_rare = np.asarray(self.is_rare).reshape(-1)
        if is_rare.dtype != bool:
            raise ValueError(f"is_rare must be boolean, got dtype {is_rare.dtype}")
        if dz.shape != is_rare.shape:
            raise ValueError(f"dz {dz.shape} and is_rare {is_rare.shape} differ in shape")
        object.__setattr__(self, "dz", dz)
        object.__setattr__(self, "is_rare", is_rare)
        kept = int(is_rare.size - np.count_nonzero(is_rare))
        total = kept if self.nonrare_total is None else int(self.nonrare_total)
        if total < kept:
            raise ValueError(f"nonrare_total {total} is below the {kept} non-rare voxels given")
        object.__setattr__(self, "nonrare_total", total)

    @property
    def rare_dz(self) -> np.ndarray:
        return self.dz[self.is_rare]

    @property
    def nonrare_dz(self) -> np.ndarray:
        return self.dz[~self.is_rare]


SampleLike = CaseSample | tuple[np.ndarray, np.ndarray]


def as_samples(items: Sequence[SampleLike], group: str) -> list[CaseSample]:
    """CaseSample objects from CaseSample or ``(dz, is_rare)`` tuples, naming unnamed cases."""
    out = []
    for i, item in enumerate(items):
        sample = item if isinstance(item, CaseSample) else CaseSample(*item)
        if not sample.case_id:
            sample = CaseSample(sample.dz, sample.is_rare, f"{group}{i}", sample.nonrare_total)
        out.append(sample)
    return out


def subsample_nonrare(samples: Sequence[CaseSample], cap: int | None,
                      rng: np.random.Generator) -> tuple[list[np.ndarray], list[int]]:
    """Non-rare dz per case, subsampled so the pooled group keeps at most ``cap`` voxels.

    The cap is split over the cases in proportion to ``nonrare_total`` (a case's voxels before
    any earlier per-case subsampling), so the pooled result is a uniform sample of the group.

    Returns:
        (kept dz per case, kept count per case).
    """
    quota = allocate_quota([s.nonrare_total for s in samples], cap)
    kept = []
    for sample, q in zip(samples, quota):
        values = sample.nonrare_dz
        q = min(q, values.size)
        if q < values.size:
            values = values[np.sort(rng.choice(values.size, size=q, replace=False))]
        kept.append(values)
    return kept, [int(v.size) for v in kept]


def _shift(stats: Mapping[str, Mapping[str, Any]], reference: str, compare: str, side: str) -> float | None:
    if reference not in stats or compare not in stats:
        return None
    a, b = stats[reference][side]["mean"], stats[compare][side]["mean"]
    if a is None or b is None:
        return None
    return float(b - a)


def class_statistics(groups: Mapping[str, Sequence[SampleLike]], *, max_nonrare: int | None = None,
                     rng: np.random.Generator, bins: int = DEFAULT_BINS, reference: str = "train",
                     compare: str = "test") -> dict[str, Any]:
    """All numbers of one rare class: per group and side, shifts, common-edge histograms, per case.

    Args:
        groups: group name (e.g. "train", "test") -> one sample per case.
        max_nonrare: cap on pooled non-rare voxels per group (None: keep all). Rare voxels are never
            subsampled.
        rng: the generator that picks the non-rare subsample.
        bins: histogram bins.
        reference, compare: the shift is ``mean_compare - mean_reference`` per side.

    Returns:
        A JSON-ready dict (see :meth:`AnalysisResult.to_dict`).
    """
    pooled: dict[str, dict[str, np.ndarray]] = {}
    summary: dict[str, dict[str, Any]] = {}
    per_case: dict[str, list[dict[str, Any]]] = {}
    for group, items in groups.items():
        samples = as_samples(items, group)
        kept, kept_counts = subsample_nonrare(samples, max_nonrare, rng)
        rare = np.concatenate([s.rare_dz for s in samples] or [np.zeros(0, np.float32)])
        nonrare = np.concatenate(kept or [np.zeros(0, np.float32)])
        pooled[group] = {"rare": rare, "nonrare": nonrare}
        summary[group] = {
            "cases": len(samples),
            "rare": summarize_values(rare, "rare"),
            "nonrare": summarize_values(nonrare, "nonrare"),
            "nonrare_total": int(sum(s.nonrare_total for s in samples)),
            "nonrare_kept": int(sum(kept_counts)),
        }
        per_case[group] = [
            {"case_id": s.case_id,
             "rare": summarize_values(s.rare_dz, "rare"),
             "nonrare": summarize_values(s.nonrare_dz, "nonrare"),
             "nonrare_total": int(s.nonrare_total),
             "nonrare_kept_in_group": k}
            for s, k in zip(samples, kept_counts)
        ]
    edges = histogram_edges([a for sides in pooled.values() for a in sides.values()], bins)
    hist = {"edges": edges.tolist()}
    for group, sides in pooled.items():
        hist[group] = {side: histogram(values, edges) for side, values in sides.items()}
    return {
        "groups": summary,
        "shift": {side: _shift(summary, reference, compare, side) for side in SIDES},
        "shift_definition": f"mean_{compare}(dz) - mean_{reference}(dz) per side",
        "histogram": hist,
        "cases": per_case,
    }
