"""One grid cell: train, evaluate on the fixed test set, analyse the logits, write result.json last."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from asymseg import constants as C
from asymseg.diagnostics.collect import case_samples
from asymseg.diagnostics.result import analyze_classes, atomic_write_bytes
from asymseg.diagnostics.stats import CaseSample
from asymseg.events import CancelToken, Event, EventCallback, emit, json_safe
from asymseg.experiment.config import ExperimentConfig, training_fields
from asymseg.experiment.data import ExperimentData
from asymseg.experiment.grid import Cell, updates_per_iteration, work_per_iteration
from asymseg.target import TargetSpec

log = logging.getLogger(__name__)

CELL_RESULT_FORMAT = "asymseg-experiment-cell"
CELL_RESULT_VERSION = 1
RESULT_FILE = "result.json"
#: Metrics averaged over test cases for the table.
HEADLINE_METRICS = ("dsc", "sensitivity", "precision", "specificity", "hd95")


@dataclass(frozen=True)
class PlannedCell:
    """A cell with its training cases, hash and estimated cost (what --dry-run prints)."""

    cell: Cell
    train_cases: tuple[str, ...]
    hash: str
    finished: bool
    estimated_seconds: float


def write_json(path: Path, data: Any) -> None:
    """Strict JSON, written atomically."""
    atomic_write_bytes(path, (json.dumps(json_safe(data), indent=1, allow_nan=False) + "\n").encode("utf-8"))


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or not JSON (e.g. cut short by a crash)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_cell_result(out_dir: Path, cell: Cell) -> dict[str, Any] | None:
    """The cell's result.json content when it is a finished result, else None."""
    data = read_json(out_dir / "cells" / cell.id / RESULT_FILE)
    if not isinstance(data, dict) or data.get("format") != CELL_RESULT_FORMAT or data.get("status") != "done":
        return None
    return data


class CaseCache:
    """Loaded cases (image, label, mask) by folder, shared by every cell of a run."""

    def __init__(self, channels: Sequence[str]) -> None:
        self.channels = tuple(channels)
        self._cases: dict[str, Any] = {}

    def get(self, folder: str) -> Any:
        """The :class:`asymseg.io.Case` of a folder, loaded with the model's channels on first use."""
        if folder not in self._cases:
            from asymseg.io import discover_case, load_case

            self._cases[folder] = load_case(discover_case(folder), channels=list(self.channels), normalize=True,
                                            require_label=True)
        return self._cases[folder]


def _tagged(on_event: EventCallback | None, cell: Cell) -> EventCallback | None:
    """Forward a job's events with the cell id added to their data."""
    if on_event is None:
        return None

    def forward(event: Event) -> None:
        on_event(Event(event.kind, event.stage, event.done, event.total, event.message,
                       {**dict(event.data), "cell": cell.id}))

    return forward


def _mean_metrics(per_case: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Mean of each headline metric over the test cases where it is defined."""
    out = {}
    for key in HEADLINE_METRICS:
        values = [float(c[key]) for c in per_case if c.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def _undefined(per_case: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Test cases where a headline metric is undefined (e.g. precision of an empty prediction)."""
    return {key: sum(1 for c in per_case if c.get(key) is None) for key in HEADLINE_METRICS}


def _evaluate(net: Any, case: Any, target: TargetSpec, rare_indices: Sequence[int], *, device: str,
              tile: tuple[int, int, int] | None, cancel: CancelToken | None) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of the rare-class mask and the logits of one case.

    Args:
        net: the trained network (``LoadedModel.net``).
        case: a loaded :class:`asymseg.io.Case` with its label.
        target: the model's target.
        rare_indices: indices of the rare classes; their union is the evaluated mask.
        device, tile, cancel: passed to :func:`asymseg.infer.predict_volume`.

    Returns:
        (per-case metrics with ``case_id`` and, for several rare classes, ``per_class``;
        logits ``(K, D, H, W)`` float32).
    """
    from asymseg.infer import predict_volume
    from asymseg.metrics import case_metrics

    kwargs: dict[str, Any] = {"return_logits": True, "cancel": cancel, "device": device}
    if tile is not None:
        kwargs["tile"] = tile
    prediction = predict_volume(net, case.image, case.mask, **kwargs)
    classes = target.class_map(np.asarray(case.label))
    predicted = np.isin(prediction.labels, rare_indices)
    reference = np.isin(classes, rare_indices)
    metrics = case_metrics(predicted, reference, case.geometry.spacing)
    per_class = {}
    if len(rare_indices) > 1:
        for index in rare_indices:
            per_class[target.names[index]] = case_metrics(prediction.labels == index, classes == index,
                                                          case.geometry.spacing)
    return {"case_id": case.case_id, **metrics, **({"per_class": per_class} if per_class else {})}, prediction.logits


def run_cell(config: ExperimentConfig, planned: PlannedCell, data: ExperimentData, out_dir: Path, cache: CaseCache,
             *, logit_figure: bool, on_event: EventCallback | None, cancel: CancelToken | None) -> dict[str, Any]:
    """Train, evaluate and analyse one cell; write its result.json last. Returns the result."""
    from asymseg.registry import load_model
    from asymseg.train import finetune
    from asymseg.train.config import TrainConfig

    cell = planned.cell
    cell_dir = out_dir / "cells" / cell.id
    if cell_dir.exists():
        shutil.rmtree(cell_dir)  # a crashed or outdated cell is redone from scratch
    cell_dir.mkdir(parents=True)
    started = time.perf_counter()
    device = config.device
    fields = training_fields(config, cell.technique, seed=cell.seed, train_cases=list(planned.train_cases),
                             output_model=str(cell_dir / "model"), device=device, run_dir=str(cell_dir / "run"))
    train_config = TrainConfig.from_dict(fields, source=f"{config.source} cell {cell.id}")
    tagged = _tagged(on_event, cell)
    train_result = finetune(train_config, on_event=tagged, cancel=cancel)
    train_seconds = time.perf_counter() - started

    loaded = load_model(cell_dir / "model")
    target = loaded.card.target
    rare_indices = [i for i, r in enumerate(target.rare) if r]
    rare_names = [target.names[i] for i in rare_indices]
    tile = tuple(config.evaluate["tile"]) if config.evaluate.get("tile") else None
    infer_started = time.perf_counter()
    per_class: dict[str, dict[str, list[CaseSample]]] = {n: {"train": [], "test": []} for n in rare_names}
    per_case_metrics = []
    groups = (("test", data.test), ("train", planned.train_cases))
    inferred = 0
    for g_index, (group, folders) in enumerate(groups):
        for c_index, folder in enumerate(folders):
            if cancel is not None:
                cancel.check()
            case = cache.get(folder)
            metrics, logits = _evaluate(loaded.net, case, target, rare_indices, device=device,
                                        tile=tile, cancel=cancel)
            if group == "test":
                per_case_metrics.append(metrics)
            samples = case_samples(np.asarray(logits), target.class_map(np.asarray(case.label)),
                                   np.asarray(case.mask, bool), target.rare, target.names, case_id=case.case_id,
                                   max_nonrare=config.max_nonrare,
                                   rng=np.random.default_rng([cell.seed, g_index, c_index]))
            for name, sample in samples.items():
                per_class[name][group].append(sample)
            inferred += 1
            emit(tagged, C.EVENT_PROGRESS, stage="evaluate", done=inferred,
                 total=len(data.test) + len(planned.train_cases), message=None)
    infer_seconds = time.perf_counter() - infer_started
    analysis = analyze_classes(per_class, max_nonrare=config.max_nonrare, seed=cell.seed, bins=config.bins,
                               class_indices=dict(zip(rare_names, rare_indices)),
                               meta={"cell": cell.id, "model": str(cell_dir / "model"),
                                     "cases": {"train": [Path(f).name for f in planned.train_cases],
                                               "test": [Path(f).name for f in data.test]}})
    analysis_dir = cell_dir / "analysis"
    if logit_figure:
        analysis.save(analysis_dir, title=f"{config.name}: {cell.id}")
    else:
        write_json(analysis_dir / "analysis.json", analysis.to_dict())
    first = analysis.classes[rare_names[0]]
    iterations = int(train_result.iterations)
    overrides = config.technique_overrides.get(cell.technique)
    updates = iterations * updates_per_iteration(cell.technique, overrides)
    work = iterations * work_per_iteration(cell.technique, overrides)
    result = {
        "format": CELL_RESULT_FORMAT, "version": CELL_RESULT_VERSION, "status": "done",
        "cell": {"id": cell.id, "index": cell.index, "fraction": cell.fraction, "n_train": cell.n_train,
                 "technique": cell.technique, "seed": cell.seed},
        "hash": planned.hash,
        "train_cases": [Path(f).name for f in planned.train_cases],
        "test_cases": [Path(f).name for f in data.test],
        "metrics": {"mean": _mean_metrics(per_case_metrics), "undefined": _undefined(per_case_metrics),
                    "per_case": per_case_metrics},
        "analysis": {
            "class": rare_names[0],
            "shift_rare": first["shift"]["rare"], "shift_nonrare": first["shift"]["nonrare"],
            "train_rare_mean": first["groups"]["train"]["rare"]["mean"],
            "test_rare_mean": first["groups"]["test"]["rare"]["mean"],
            "train_rare_wrong_side": first["groups"]["train"]["rare"]["wrong_side"],
            "test_rare_wrong_side": first["groups"]["test"]["rare"]["wrong_side"],
            "test_nonrare_wrong_side": first["groups"]["test"]["nonrare"]["wrong_side"],
            "per_class": {n: analysis.classes[n]["shift"] for n in rare_names},
            "file": "analysis/analysis.json",
        },
        "training": {"iterations": iterations, **_train_summary(train_result)},
        "timing": {"train_seconds": train_seconds, "updates": updates, "work": work, "infer_seconds": infer_seconds,
                   "cases_inferred": inferred, "total_seconds": time.perf_counter() - started},
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(cell_dir / RESULT_FILE, result)
    return result


#: TrainResult fields kept in a cell's result.json (the full history stays in the run folder).
TRAIN_SUMMARY_KEYS = ("status", "total_iterations", "best_iteration", "best_metrics", "last_losses", "seconds",
                      "train_seconds")


def _train_summary(train_result: Any) -> dict[str, Any]:
    """The JSON-safe summary of an ``asymseg.train.TrainResult``."""
    data = train_result.to_dict()
    return {key: json_safe(data.get(key)) for key in TRAIN_SUMMARY_KEYS}
