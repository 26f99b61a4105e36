"""The operating point of a model without validation cases: leave-one-out over its training cases.

``finetune --operating-point cross-validation``: after the model itself is trained, one fold model
per training case is trained with the same settings on the other cases (no validation cases, so
each fold ends like the main run: its last iteration), and scores the case it did not see. The
operating point (threshold, post-processing) is then chosen on those held-out predictions by the
rule used for validation cases (:func:`asymseg.calibrate.calibrate` with one fold model per case:
adopted only when no case loses DSC and the mean rises) and written on the main model's card.
It costs one more training run per training case, so it is opt-in.

Fold runs live under ``<run_dir>/folds/<NN>-<case id>/`` (``model`` and ``run``); a fold that
finished is kept, one that was interrupted resumes from its checkpoint, so an interrupted
cross-validation continues with ``finetune --resume RUN_DIR``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asymseg import constants as C
from asymseg.errors import InputError
from asymseg.events import CancelToken, Event, EventCallback, emit
from asymseg.train.checkpoint import find_checkpoint

#: The folder of the fold runs inside the main run folder.
FOLDS_DIR = "folds"
_DONE = "done.json"


def check_cross_validation(train_cases: Sequence[str], val_cases: Sequence[str], val_fraction: float,
                           distributed: bool) -> None:
    """Refuse settings cross-validation cannot work with, before anything is trained.

    Raises:
        InputError: fewer than 2 training cases, validation cases given (use "validation"), or
            several processes (the folds run one after the other in one process).
    """
    if len(train_cases) < 2:
        raise InputError("--operating-point cross-validation needs at least 2 training cases (one is held out "
                         "per fold)")
    if val_cases or val_fraction > 0:
        raise InputError("--operating-point cross-validation is for runs without validation cases; with "
                         "validation cases use --operating-point validation")
    if distributed:
        raise InputError("--operating-point cross-validation runs its folds in one process; start it without "
                         "torchrun")


def fold_folder(run_dir: Path, index: int, case_id: str) -> Path:
    """``<run_dir>/folds/<NN>-<case id>``."""
    return Path(run_dir) / FOLDS_DIR / f"{index:02d}-{case_id}"


def _fold_events(on_event: EventCallback | None, index: int, count: int, case_id: str, iterations: int
                 ) -> EventCallback | None:
    """A fold's events as the main run's progress: one "cross-validation" bar over all folds."""
    if on_event is None:
        return None

    def forward(event: Event) -> None:
        if event.kind == C.EVENT_ITERATION and event.done is not None:
            emit(on_event, C.EVENT_PROGRESS, stage="cross-validation", done=index * iterations + int(event.done),
                 total=count * iterations, message=f"fold {index + 1}/{count} (holding out {case_id})")
        elif event.kind == C.EVENT_LOG:
            emit(on_event, C.EVENT_LOG, stage="cross-validation", level=event.data.get("level", "info"),
                 message=f"fold {index + 1}/{count}: {event.message}")

    return forward


def train_folds(train: Callable[..., Any], config: Any, case_ids: Sequence[str], run_dir: Path, *,
                on_event: EventCallback | None, cancel: CancelToken) -> list[Path]:
    """Train (or resume, or reuse) one fold model per training case; returns their folders in case order.

    Args:
        train: :func:`asymseg.train.finetune` (passed in: this module sits below it).
        config: the main run's resolved :class:`~asymseg.train.config.TrainConfig` (absolute paths).
        case_ids: the training cases' ids, in ``config.train_cases`` order.
        run_dir: the main run folder.
    """
    models = []
    count = len(config.train_cases)
    for index, (held_out, case_id) in enumerate(zip(config.train_cases, case_ids)):
        cancel.check()
        folder = fold_folder(run_dir, index, case_id)
        model, fold_run = folder / "model", folder / "run"
        models.append(model)
        if (folder / _DONE).is_file() and (model / "model.json").is_file():
            emit(on_event, C.EVENT_LOG, stage="cross-validation", level="info",
                 message=f"fold {index + 1}/{count} (holding out {case_id}) is done already: {model}")
            continue
        fold_config = config.replace(
            train_cases=tuple(c for i, c in enumerate(config.train_cases) if i != index), val_cases=(),
            val_fraction=0.0, output_model=str(model), run_dir=str(fold_run), operating_point="none")
        resume = find_checkpoint(fold_run) is not None
        emit(on_event, C.EVENT_LOG, stage="cross-validation", level="info",
             message=f"fold {index + 1}/{count}: training on {count - 1} case(s), holding out {case_id}"
                     + (" (resumed)" if resume else ""))
        folder.mkdir(parents=True, exist_ok=True)
        result = train(fold_config, on_event=_fold_events(on_event, index, count, case_id, config.iterations),
                          cancel=cancel, resume=resume, overwrite=not resume, env={})
        if result.status == "stopped":
            raise InputError(f"{fold_run}: the fold stopped before its last iteration; resume the run")
        (folder / _DONE).write_text(json.dumps({"held_out": case_id, "status": result.status,
                                                "iterations": result.iterations}) + "\n")
    return models


def choose_by_cross_validation(train: Callable[..., Any], config: Any, output: Path, run_dir: Path,
                               case_ids: Sequence[str], *, device: str, on_event: EventCallback | None,
                               cancel: CancelToken) -> dict[str, Any]:
    """Train the folds and record on ``output``'s card the operating point their held-out cases support.

    Returns:
        The :func:`~asymseg.calibrate.calibrate` result.
    """
    from asymseg.calibrate import calibrate
    from asymseg.io import discover_case

    models = train_folds(train, config, case_ids, run_dir, on_event=on_event, cancel=cancel)
    cases = [discover_case(Path(path)) for path in config.train_cases]
    emit(on_event, C.EVENT_LOG, stage="calibrate", level="info",
         message=f"choosing the operating point on {len(cases)} held-out training case(s), each scored by the "
                 "fold model that did not train on it")
    return calibrate(output, cases, fold_models=models, write=True, device=device, cancel=cancel)


__all__ = ["FOLDS_DIR", "check_cross_validation", "choose_by_cross_validation", "fold_folder", "train_folds"]
