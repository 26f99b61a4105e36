"""Inference with an operating point: mirror test-time augmentation, threshold, post-processing.

:func:`predict_with_operating_point` runs :func:`~asymseg.infer.engine.predict_volume` once, or
over the 8 mirrorings of the volume when the operating point asks for TTA (every subset of the
three axes flipped; the logits of each pass are flipped back and averaged, as nnU-Net does), and
turns the (averaged) logits into labels with :func:`asymseg.operating.decide`. The probability
and dz maps it returns are those of the (averaged) logits, before any threshold, so a user can
choose another threshold without running the network again.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from asymseg import constants as C
from asymseg.events import CancelToken, EventCallback, emit
from asymseg.infer.engine import Prediction, _finish, predict_volume
from asymseg.operating import OperatingPoint, decide

#: The 8 mirrorings: each a tuple of flipped spatial axes (0 = D, 1 = H, 2 = W).
MIRRORS: tuple[tuple[int, ...], ...] = tuple(
    axes for n in range(4) for axes in itertools.combinations(range(3), n))


def _flip(array: np.ndarray, axes: tuple[int, ...], offset: int) -> np.ndarray:
    return np.flip(array, axis=tuple(a + offset for a in axes)) if axes else array


def predict_with_operating_point(net: Any, image: np.ndarray, mask: np.ndarray, point: OperatingPoint, *,
                                 spacing: Sequence[float], rare: Sequence[bool],
                                 on_event: EventCallback | None = None, cancel: CancelToken | None = None,
                                 return_logits: bool = False, return_decision: bool = True,
                                 **predict_kwargs: Any) -> Prediction:
    """Labels of ``point`` (threshold, post-processing, TTA) with the maps before the threshold.

    Args:
        net, image, mask: as for :func:`~asymseg.infer.engine.predict_volume`.
        point: the operating point.
        spacing: voxel size (x, y, z) mm (for volume-based post-processing).
        rare: one flag per class.
        on_event: progress events; with TTA, a "tta" progress event per mirroring.
        cancel: checked between tiles and mirrorings.
        return_logits: keep the (averaged) logits in the result.
        return_decision: keep dz in the result (a single pass at the plain argmax can then skip
            the extra volume).
        predict_kwargs: device, tile, batch_size, amp, memory_format.

    Returns:
        A :class:`~asymseg.infer.engine.Prediction` whose ``labels`` follow the operating point
        and whose ``probabilities`` and ``decision`` are those of the (averaged) logits; its
        ``info`` adds ``operating_point`` (the point's dict without the validation record)
        and ``passes``.
    """
    mask = np.asarray(mask, dtype=bool)
    binary = int(net.num_classes) == 2
    if not point.tta:
        # One pass: the engine's own maps (made slab by slab), the logits only where they are needed.
        prediction = predict_volume(net, image, mask, rare=rare, on_event=on_event, cancel=cancel,
                                    return_logits=return_logits or not binary,
                                    return_decision=return_decision or not point.is_default,
                                    **predict_kwargs)
        if not point.is_default:
            prediction.labels = decide(prediction.decision, mask, spacing, point,
                                       logits=None if binary else prediction.logits, rare=rare)
        summary = point.to_dict()
        summary.pop("validation", None)
        prediction.info.update(operating_point=summary, passes=1)
        if not return_logits:
            prediction.logits = None
        return prediction
    mirrors = MIRRORS
    total = None
    info: dict[str, Any] = {}
    for index, axes in enumerate(mirrors):
        if cancel is not None:
            cancel.check()
        prediction = predict_volume(net, np.ascontiguousarray(_flip(image, axes, 1)),
                                    np.ascontiguousarray(_flip(mask, axes, 0)), rare=rare, on_event=on_event,
                                    cancel=cancel, return_logits=True, **predict_kwargs)
        logits = _flip(prediction.logits, axes, 1)
        total = logits.copy() if total is None else total + logits
        seconds = info.get("seconds", 0.0) + float(prediction.info.get("seconds") or 0.0)
        info = {**prediction.info, "seconds": seconds}
        emit(on_event, C.EVENT_PROGRESS, stage="tta", done=index + 1, total=len(mirrors))
    logits = total / len(mirrors)
    # The engine's own conversion of logits to the maps, over the whole grid.
    averaged = _finish(logits, (0, 0, 0), mask, np.asarray(rare, dtype=bool), True)
    probabilities, decision = averaged.probabilities, averaged.decision
    labels = decide(decision, mask, spacing, point, logits=None if binary else logits, rare=rare)
    summary = point.to_dict()
    summary.pop("validation", None)
    info.update(operating_point=summary, passes=len(mirrors))
    return Prediction(labels, probabilities, logits if return_logits else None, decision, info)
