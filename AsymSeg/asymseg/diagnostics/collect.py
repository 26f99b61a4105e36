"""Collect per-voxel logits of a model on case folders and analyse them (the diagnostic end to end)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asymseg import constants as C
from asymseg.diagnostics.result import AnalysisResult, analyze_classes
from asymseg.diagnostics.stats import DEFAULT_BINS, CaseSample, decision_variable
from asymseg.errors import InputError
from asymseg.events import CancelToken, EventCallback, emit

log = logging.getLogger(__name__)

#: Default cap on pooled non-rare voxels per group (train/test) and rare class.
DEFAULT_MAX_NONRARE = 200_000


def case_samples(
    logits: np.ndarray,
    classes: np.ndarray,
    mask: np.ndarray,
    rare: Sequence[bool],
    names: Sequence[str],
    *,
    case_id: str,
    max_nonrare: int | None,
    rng: np.random.Generator,
) -> dict[str, CaseSample]:
    """dz samples of one case for every rare class, inside the mask.

    For rare class c, the sample holds all voxels of class c (``is_rare`` True) and the voxels of
    non-rare classes (False); voxels of other rare classes are left out. Non-rare voxels beyond
    ``max_nonrare`` are subsampled uniformly (the same voxels for every class); the count before
    subsampling is kept as ``nonrare_total`` so a group can later be pooled in proportion.

    Args:
        logits: network logits (not probabilities) ``(K, D, H, W)``.
        classes: ground-truth class index per voxel ``(D, H, W)`` int.
        mask: brain mask ``(D, H, W)`` bool; only voxels inside count.
        rare: r[c] per class (``TargetSpec.rare``).
        names: class names (``TargetSpec.names``).
        case_id: recorded with the sample.
        max_nonrare: per-case cap on non-rare voxels (None: keep all).
        rng: picks the subsample.

    Returns:
        Rare-class name -> :class:`CaseSample`.

    Raises:
        ValueError: shapes disagree or class indices are out of range.
    """
    if logits.ndim != 4 or logits.shape[1:] != classes.shape or classes.shape != mask.shape:
        raise ValueError(f"logits {logits.shape}, classes {classes.shape} and mask {mask.shape} "
                         "must be (K, D, H, W), (D, H, W), (D, H, W)")
    if logits.shape[0] != len(rare):
        raise ValueError(f"logits have {logits.shape[0]} classes but the target has {len(rare)}")
    inside = mask.astype(bool)
    z = logits[:, inside]                       # (K, M)
    gt = classes[inside].astype(np.int64)       # (M,)
    if gt.size and (gt.min() < 0 or gt.max() >= len(rare)):
        raise ValueError(f"class indices {int(gt.min())}..{int(gt.max())} outside 0..{len(rare) - 1}")
    rare_arr = np.asarray(rare, dtype=bool)
    is_nonrare = ~rare_arr[gt]
    nonrare_index = np.flatnonzero(is_nonrare)
    nonrare_total = int(nonrare_index.size)
    if max_nonrare is not None and nonrare_total > max_nonrare:
        nonrare_index = np.sort(rng.choice(nonrare_index, size=max_nonrare, replace=False))
    samples = {}
    for c in np.flatnonzero(rare_arr):
        rare_index = np.flatnonzero(gt == c)
        keep = np.concatenate([rare_index, nonrare_index])
        dz = decision_variable(z[:, keep], int(c))
        is_rare = np.zeros(keep.size, dtype=bool)
        is_rare[: rare_index.size] = True
        samples[names[c]] = CaseSample(dz, is_rare, case_id, nonrare_total)
    return samples


def _resolve_model(model: Any) -> Any:
    """A loaded model (``asymseg.modelfile.LoadedModel``) from itself, a model folder or a registry name."""
    if hasattr(model, "net") and hasattr(model, "card"):
        return model
    from asymseg.registry import load_model

    return load_model(model)


def _load(case: Any, channels: Sequence[str], spacing: Sequence[float] | None = None,
          orientation: str | None = None, strict: bool = False, reference_channel: str | None = None):
    """A loaded case (with label and mask) from a Case object or a case folder, on the model's
    working grid (the card's training spacing and orientation)."""
    if hasattr(case, "image") and hasattr(case, "label"):
        return case
    from asymseg.io import discover_case, load_case

    folder = Path(case)
    files = discover_case(folder)
    files.use_reference_channel(reference_channel)
    return load_case(files, channels=list(channels), normalize=True, require_label=True, spacing=spacing,
                     orientation=orientation, strict=strict)


def analyze_model(
    model: Any,
    train_cases: Sequence[str | os.PathLike[str] | Any],
    test_cases: Sequence[str | os.PathLike[str] | Any],
    *,
    max_nonrare: int | None = DEFAULT_MAX_NONRARE,
    seed: int = 0,
    bins: int = DEFAULT_BINS,
    device: str | None = None,
    tile: Sequence[int] | None = None,
    on_event: EventCallback | None = None,
    cancel: CancelToken | None = None,
    strict: bool = False,
    reference_channel: str | None = None,
) -> AnalysisResult:
    """Run a model on training and unseen cases and analyse its logits per rare class.

    Each case is loaded with the model's channels, inferred with the real inference engine
    (``asymseg.infer.predict_volume``, logits kept), and reduced to dz samples inside the brain
    mask (:func:`case_samples`). Non-rare voxels are capped at ``max_nonrare`` per group and class,
    split over the cases in proportion to their size; the counts before and after are recorded.

    Args:
        model: a loaded model (``asymseg.modelfile.LoadedModel``), a model folder or a registry name.
        train_cases: cases the model was trained on (folders or loaded ``asymseg.io.Case`` objects).
        test_cases: unseen cases.
        max_nonrare: cap on pooled non-rare voxels per group (None: all).
        seed: seeds the subsample.
        bins: histogram bins.
        strict: refuse a case folder whose plausibility checks fail (:mod:`asymseg.io.checks`).
        reference_channel: the channel whose physical space each case folder is processed in
            (default: the model's first channel).
        device: torch device for inference (default: the engine's choice).
        tile: inference tile size (default: the engine's choice).
        on_event: progress callback (stage "analyze", one step per case).
        cancel: checked between cases.

    Returns:
        An :class:`AnalysisResult` with groups "train" and "test".

    Raises:
        InputError: no cases, a case without a label or brain mask.
        ModelError: the model cannot be loaded.
        Cancelled: the token was cancelled.
    """
    from asymseg.infer import predict_volume

    if not train_cases or not test_cases:
        raise InputError("analyze needs at least one training case and one test case")
    if max_nonrare is not None and max_nonrare < 1:
        raise InputError(f"--max-nonrare must be >= 1, got {max_nonrare}")
    loaded = _resolve_model(model)
    card = loaded.card
    target = card.target
    channels = tuple(card.channels)
    rare_names = [n for n, r in zip(target.names, target.rare) if r]
    groups = {"train": list(train_cases), "test": list(test_cases)}
    total = sum(len(v) for v in groups.values())
    per_class: dict[str, dict[str, list[CaseSample]]] = {n: {"train": [], "test": []} for n in rare_names}
    case_ids: dict[str, list[str]] = {"train": [], "test": []}
    emit(on_event, C.EVENT_START, stage="analyze", total=total,
         message=f"analysing logits of {total} case(s)")
    done = 0
    predict_kwargs: dict[str, Any] = {"return_logits": True, "cancel": cancel}
    if device is not None:
        predict_kwargs["device"] = device
    if tile is not None:
        predict_kwargs["tile"] = tuple(tile)
    for g_index, (group, cases) in enumerate(groups.items()):
        for c_index, item in enumerate(cases):
            if cancel is not None:
                cancel.check()
            case = _load(item, channels, loaded.card.spacing, loaded.card.orientation, strict, reference_channel)
            if case.label is None:
                raise InputError(f"{getattr(case, 'case_id', item)}: analyze needs a ground-truth label")
            prediction = predict_volume(loaded.net, case.image, case.mask, **predict_kwargs)
            if prediction.logits is None:
                raise InputError(f"{case.case_id}: the inference engine returned no logits")
            label_file = getattr(getattr(case, "files", None), "label", None)
            target.check_label_values(np.unique(case.label), source=str(label_file or case.case_id))
            classes = target.class_map(np.asarray(case.label))
            rng = np.random.default_rng([int(seed), g_index, c_index])
            samples = case_samples(np.asarray(prediction.logits), classes, np.asarray(case.mask, bool),
                                   target.rare, target.names, case_id=case.case_id,
                                   max_nonrare=max_nonrare, rng=rng)
            for name, sample in samples.items():
                per_class[name][group].append(sample)
            case_ids[group].append(case.case_id)
            done += 1
            rare_count = sum(int(s.is_rare.sum()) for s in samples.values())
            emit(on_event, C.EVENT_PROGRESS, stage="analyze", done=done, total=total,
                 message=f"{group} case {case.case_id}: {rare_count} rare voxel(s)", case_id=case.case_id)
    meta = {
        "model": str(getattr(loaded, "path", "") or ""),
        "architecture": card.architecture,
        "target": target.to_dict(),
        "channels": list(channels),
        "cases": case_ids,
        "case_paths": {g: [_describe(c) for c in cases] for g, cases in groups.items()},
    }
    result = analyze_classes(per_class, max_nonrare=max_nonrare, seed=seed, bins=bins,
                             class_indices={n: target.names.index(n) for n in rare_names}, meta=meta)
    emit(on_event, C.EVENT_DONE, stage="analyze", done=total, total=total,
         message="; ".join(result.summary_lines()[-len(rare_names):]),
         shift={n: result.classes[n]["shift"] for n in rare_names})
    return result


def _describe(case: Any) -> str:
    """A case folder as a string, or the id of an already loaded case."""
    return str(case.case_id) if hasattr(case, "case_id") else str(Path(case))
