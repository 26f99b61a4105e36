"""Fast whole-volume inference.

Modules:
    tiling: tile plans (exact, aligned tiles for valid-convolution nets; overlapping blended tiles).
    engine: :func:`predict_volume`, one normalised volume in memory -> labels, probabilities, logits.
    cases: :func:`segment_case` / :func:`segment_cases`, files in -> output files (and metrics) out.
"""

from __future__ import annotations

from asymseg.infer.cases import OutputPaths, segment_case, segment_cases
from asymseg.infer.engine import Prediction, predict_volume, resolve_device

__all__ = ["OutputPaths", "Prediction", "predict_volume", "resolve_device", "segment_case", "segment_cases"]
