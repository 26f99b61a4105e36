"""Collect fine-tuning progress events into curves for live plots.

``iteration`` events carry the losses of each step type (clean, adversarial, mixup), the
learning rate and an ETA; ``validation`` events carry per-case metrics and their mean
(DSC, sensitivity, precision). :class:`TrainingProgress` keeps them as columns that
:func:`AsymSegLib.plots.updateLinePlot` can show.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from AsymSegLib.progress import (EVENT_CHECKPOINT, EVENT_DONE, EVENT_ITERATION, EVENT_START, EVENT_VALIDATION,
                                 ProgressEvent, asCount, formatDuration)

#: Validation metrics plotted, with their curve titles.
VALIDATION_CURVES: dict[str, str] = {"dsc": "DSC", "sensitivity": "Sensitivity", "precision": "Precision"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _losses(data: Mapping[str, Any]) -> dict[str, float]:
    """Loss values of an iteration event: ``{"losses": {...}}`` or ``loss``/``loss_<step>`` fields."""
    found: dict[str, float] = {}
    nested = data.get("losses")
    if isinstance(nested, Mapping):
        for name, value in nested.items():
            number = _number(value)
            if number is not None:
                found[str(name)] = number
    for key, value in data.items():
        if key == "loss" or key.startswith("loss_"):
            number = _number(value)
            if number is not None:
                found[key[len("loss_"):] if key.startswith("loss_") else "loss"] = number
    return found


def _meanMetrics(data: Mapping[str, Any]) -> dict[str, float]:
    """Mean validation metrics: ``{"mean": {...}}``, ``{"metrics": {"mean": {...}}}`` or top-level keys."""
    for candidate in (data.get("mean"), (data.get("metrics") or {}).get("mean")
                      if isinstance(data.get("metrics"), Mapping) else None, data.get("metrics"), data):
        if isinstance(candidate, Mapping):
            values = {k: _number(candidate.get(k)) for k in VALIDATION_CURVES}
            if any(v is not None for v in values.values()):
                return {k: v for k, v in values.items() if v is not None}
    return {}


class TrainingProgress:
    """Curves and status of one fine-tuning run, fed event by event (GUI thread)."""

    def __init__(self) -> None:
        self.iterations: list[int] = []
        self.losses: dict[str, list[float | None]] = {}
        self.learningRates: list[float | None] = []
        self.validationIterations: list[int] = []
        self.validation: dict[str, list[float | None]] = {k: [] for k in VALIDATION_CURVES}
        self.done: int = 0
        self.total: int | None = None
        self.etaSeconds: float | None = None
        self.lastCheckpoint: str | None = None
        self.bestDsc: float | None = None
        self.startedAt = time.monotonic()

    # ------------------------------------------------------------------ feeding
    def update(self, event: ProgressEvent) -> set[str]:
        """Take one event; returns what changed: a subset of {"progress", "losses", "validation"}."""
        changed: set[str] = set()
        data = event.data
        if event.kind == EVENT_START:
            total = asCount(data.get("iterations")) or event.total
            if total:
                self.total = total
                changed.add("progress")
        elif event.kind == EVENT_ITERATION:
            iteration = event.done if event.done is not None else asCount(data.get("iteration"))
            if iteration is None:
                return changed
            if event.total:
                self.total = event.total
            self.done = max(self.done, iteration)
            self.etaSeconds = _number(data.get("eta", data.get("eta_seconds")))
            losses = _losses(data)
            if losses:
                self._appendLosses(iteration, losses, _number(data.get("lr")))
                changed.add("losses")
            changed.add("progress")
        elif event.kind == EVENT_VALIDATION:
            means = _meanMetrics(data)
            iteration = asCount(data.get("iteration"))
            if iteration is None:
                iteration = event.done if event.done is not None else self.done
            if means:
                self.validationIterations.append(iteration)
                for key in VALIDATION_CURVES:
                    self.validation[key].append(means.get(key))
                dsc = means.get("dsc")
                if dsc is not None and (self.bestDsc is None or dsc > self.bestDsc):
                    self.bestDsc = dsc
                changed.add("validation")
        elif event.kind == EVENT_CHECKPOINT:
            path = data.get("path") or data.get("checkpoint")
            self.lastCheckpoint = str(path) if path else self.lastCheckpoint
        elif event.kind == EVENT_DONE:
            if self.total:
                self.done = self.total
            self.etaSeconds = 0.0
            changed.add("progress")
        return changed

    def _appendLosses(self, iteration: int, losses: Mapping[str, float], lr: float | None) -> None:
        count = len(self.iterations)
        for name in losses:
            if name not in self.losses:
                self.losses[name] = [None] * count  # a step type that starts later
        self.iterations.append(iteration)
        self.learningRates.append(lr)
        for name, column in self.losses.items():
            column.append(losses.get(name))

    # ------------------------------------------------------------------ reading
    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(self.done / self.total, 1.0)

    def statusText(self) -> str:
        """``"Iteration 120/1000, about 3 min 05 s left"``."""
        if not self.total:
            return f"Iteration {self.done}" if self.done else "Starting..."
        text = f"Iteration {self.done}/{self.total}"
        if self.etaSeconds is not None and self.done < self.total:
            text += f", about {formatDuration(self.etaSeconds)} left"
        if self.bestDsc is not None:
            text += f", best validation DSC {self.bestDsc:.3f}"
        return text

    def lossCurves(self) -> tuple[list[float], dict[str, list[float | None]]]:
        """(iterations, {step type: losses}) for the loss plot."""
        return [float(i) for i in self.iterations], {f"loss {name}": list(v) for name, v in self.losses.items()}

    def validationCurves(self) -> tuple[list[float], dict[str, list[float | None]]]:
        """(iterations, {"DSC"|"Sensitivity"|"Precision": means}) for the validation plot."""
        return ([float(i) for i in self.validationIterations],
                {title: list(self.validation[key]) for key, title in VALIDATION_CURVES.items()})

