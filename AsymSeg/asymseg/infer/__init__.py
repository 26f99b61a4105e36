"""Fast whole-volume inference: tiling (:mod:`.tiling`), the engine (:mod:`.engine`) and cases (:mod:`.cases`)."""

from __future__ import annotations

from asymseg.infer.engine import Prediction, predict_volume, resolve_device

__all__ = ["Prediction", "predict_volume", "resolve_device"]
