"""Validation during training, with the real inference engine (``asymseg.infer.predict_volume``).

Each validation case is segmented whole (inside its brain mask) exactly as ``asymseg segment``
would, and the union of the rare classes is compared with the reference: DSC, sensitivity,
precision, specificity and HD95 per case (``asymseg.metrics.case_metrics``) and their means.

To save memory a validation case is kept cropped to the box of its brain mask and rare voxels,
plus the network's context. The crop starts on multiples of the network's ``output_multiple``, so
the engine's tile grid (anchored at the volume origin) is the same as on the full volume, and
every voxel outside the crop is background in the prediction and in the reference: the metrics
equal those of the full volume.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from asymseg.events import CancelToken
from asymseg.target import TargetSpec
from asymseg.train.data import brain_box

log = logging.getLogger(__name__)

#: Metrics reported per validation case (from ``case_metrics``).
VALIDATION_METRICS = ("dsc", "sensitivity", "precision", "specificity", "hd95")


@dataclass
class ValidationCase:
    """A validation case kept for repeated evaluation.

    Attributes:
        case_id: the case's id.
        image: float32 (C, d, h, w) normalised channels (cropped, see the module docstring).
        mask: bool (d, h, w) brain mask.
        reference: bool (d, h, w) union of the rare classes in the reference label.
        spacing: voxel size (x, y, z) in mm.
        outside_voxels: voxels of the full volume outside the crop (true negatives for specificity).
    """

    case_id: str
    image: np.ndarray
    mask: np.ndarray
    reference: np.ndarray
    spacing: tuple[float, float, float]
    outside_voxels: int = 0


def prepare_validation_case(case_id: str, image: np.ndarray, label: np.ndarray, mask: np.ndarray,
                            spacing: Sequence[float], target: TargetSpec, *, context: int,
                            output_multiple: int) -> ValidationCase:
    """Crop a loaded case for validation (see the module docstring).

    Args:
        case_id: the case's id.
        image: float32 (C, D, H, W), normalised.
        label: int (D, H, W) source label values.
        mask: bool (D, H, W).
        spacing: (x, y, z) mm.
        target: gives the rare classes.
        context: the network's context (voxels per side).
        output_multiple: the network's tile alignment.
    """
    reference = target.rare_mask(label)
    box = brain_box(mask | reference, context)
    m = max(int(output_multiple), 1)
    box = tuple(slice((s.start // m) * m, s.stop) for s in box)
    return ValidationCase(
        case_id=case_id,
        image=np.ascontiguousarray(image[(slice(None), *box)], dtype=np.float32),
        mask=np.ascontiguousarray(mask[box]),
        reference=np.ascontiguousarray(reference[box]),
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        outside_voxels=int(mask.size - mask[box].size),
    )


def validate(net: torch.nn.Module, cases: Sequence[ValidationCase], *, rare: Sequence[bool],
             device: torch.device, cancel: CancelToken | None = None) -> dict:
    """Segment every validation case and score the rare-class union.

    The network is put in eval mode for the pass and returned to its previous mode.

    Returns:
        ``{"cases": [{"case_id", dsc, sensitivity, precision, specificity, hd95}, ...],
        "mean": {metric: mean over cases with a value (None if none)}}``.
    """
    from asymseg.infer import predict_volume
    from asymseg.metrics import case_metrics

    rare_flags = np.asarray(rare, dtype=bool)
    was_training = net.training
    net.eval()
    per_case = []
    try:
        for case in cases:
            prediction = predict_volume(net, case.image, case.mask, device=device, rare=list(rare_flags),
                                        cancel=cancel)
            predicted = rare_flags[prediction.labels.astype(np.int64)]
            metrics = case_metrics(predicted, case.reference, case.spacing)
            tn = metrics["tn"] + case.outside_voxels  # the crop's outside is predicted and labelled background
            metrics["specificity"] = tn / (tn + metrics["fp"]) if tn + metrics["fp"] else None
            per_case.append({"case_id": case.case_id, **{k: metrics[k] for k in VALIDATION_METRICS}})
    finally:
        net.train(was_training)
    mean = {}
    for key in VALIDATION_METRICS:
        values = [c[key] for c in per_case if c[key] is not None and math.isfinite(c[key])]
        mean[key] = float(np.mean(values)) if values else None
    return {"cases": per_case, "mean": mean}
