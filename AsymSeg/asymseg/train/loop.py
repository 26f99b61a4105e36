"""The training loop: iterations, validation, best-model tracking, checkpoints, cancellation.

Per iteration (all processes): set the learning rate of the schedule, draw the GLOBAL batch
from the shared sampler generator, cut out this process's slice, run the technique's steps
(:class:`~asymseg.train.steps.IterationRunner`), average the losses over the processes.

Every ``val_every`` iterations and at the end, rank 0 evaluates: with validation cases, the
mean validation DSC (real inference engine, :mod:`asymseg.train.validate`); without, the mean
clean training loss since the previous evaluation (lower is better). An improvement makes the
current weights the best model, which is written to the output folder at once (atomically), so
the output always holds the best model so far. ``patience`` evaluations without improvement
stop the run early.

Every ``checkpoint_every`` iterations, at the end and when cancelled, the resume checkpoint is
written (:mod:`asymseg.train.checkpoint`): weights, optimiser, the sampler's numpy generator,
every process's torch generators, best-model tracking and log positions. Resuming restores all
of it, so N iterations in one go equal N/2 + N/2 (same seed, deterministic kernels).

Cancellation (the CLI's SIGINT/SIGTERM handler sets the :class:`~asymseg.events.CancelToken`)
is checked after each iteration; the processes agree on it through one small all-reduce, finish
the iteration, write a checkpoint (and the current weights as the model when no best model has
been written yet) and raise :class:`~asymseg.errors.Cancelled`. A cancel during validation
abandons the validation; the checkpoint remembers it, so a resumed run validates first.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from asymseg import constants as C
from asymseg.errors import AsymSegError, Cancelled
from asymseg.events import CancelToken, EventCallback, emit, format_duration
from asymseg.techniques import Technique
from asymseg.train import distributed as D
from asymseg.train.bnstats import BatchNormWindow
from asymseg.train.checkpoint import Checkpoint, save_checkpoint
from asymseg.train.config import TrainConfig
from asymseg.train.data import PatchSampler
from asymseg.train.runlog import RunLog
from asymseg.train.steps import IterationRunner, StepLosses
from asymseg.train.validate import ValidationCase, validate

log = logging.getLogger(__name__)

#: Minimum seconds between two "iteration" progress events (the first, the last of the run or of a
#: ``stop_after`` session, and those with a validation always go out).
EVENT_INTERVAL = 0.2
#: The time estimate of a run is written after this many iterations of the session: the first one
#: (one-off costs: allocation, first-touch of the weights) and the timed ones after it.
ESTIMATE_AFTER = 4


class TrainingDiverged(AsymSegError):
    """A loss became NaN or infinite (exit code 2: lower the learning rate or check the data)."""


@dataclass
class TrainState:
    """What the loop tracks besides weights and optimiser (saved in checkpoints as JSON).

    Attributes:
        iteration: completed iterations.
        best_score: score of the best model (validation mean DSC, or minus the mean training loss).
        best_iteration: the iteration the best model comes from.
        best_metrics: validation means (or the training loss) of the best model.
        best_kind: "validation_dsc" or "training_loss".
        best_written: the best model has been written to the output folder at least once.
        stale_evaluations: evaluations since the last improvement (early stopping).
        window_loss: sum of clean losses since the last evaluation.
        window_count: iterations in that sum.
        train_seconds: time spent in training steps (all sessions).
        validation_pending: the evaluation of ``iteration`` was cancelled and must run first.
        last_validation: the latest validation result (per case and means).
        last_losses: the latest iteration's losses.
        history: one summary per evaluation (iteration, score, means).
    """

    iteration: int = 0
    best_score: float | None = None
    best_iteration: int | None = None
    best_metrics: dict[str, Any] | None = None
    best_kind: str = "validation_dsc"
    best_written: bool = False
    stale_evaluations: int = 0
    window_loss: float = 0.0
    window_count: int = 0
    train_seconds: float = 0.0
    validation_pending: bool = False
    last_validation: dict[str, Any] | None = None
    last_losses: dict[str, float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainState:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class LoopOutcome:
    """How :meth:`Trainer.run` ended: "done", "early_stopped" or "stopped" (``stop_after``)."""

    status: str
    state: TrainState
    checkpoint: Path | None


SaveModel = Callable[[Mapping[str, torch.Tensor], TrainState, str], Path]


def generator_state_names(rank: int) -> tuple[str, str, str]:
    """Checkpoint keys of one process's generators: (step generator, torch CPU RNG, CUDA RNG)."""
    return f"generator.rank{rank}", f"torch_rng.rank{rank}", f"cuda_rng.rank{rank}"


class Trainer:
    """Runs the loop of the module docstring.

    Args:
        config: the run's configuration.
        technique: the resolved technique.
        rare: one flag per class.
        net: the bare network (on ``device``).
        model: what the updates go through (``net`` or DDP(net)).
        optimizer: the optimiser of ``net``.
        sampler: the patch sampler (shared draws, sliced per process).
        sampler_rng: the numpy generator of the draws (same state on every process).
        generator: this process's CPU torch generator (adversarial start, mixup).
        val_cases: validation cases (rank 0 only; empty = select by training loss).
        dist: the process's place in the run.
        device: training device.
        run_dir: checkpoints and logs.
        runlog: the training log (rank 0; None on other ranks).
        save_model: rank 0's writer of the output model: ``(weights, state, reason) -> path``.
        state: the loop state (fresh or from a checkpoint).
        amp_dtype: autocast dtype (None = float32).
        on_event: progress events (rank 0).
        cancel: the cancel token.
        stop_after: stop (with a checkpoint) once this many iterations are complete.
    """

    def __init__(self, *, config: TrainConfig, technique: Technique, rare: Sequence[bool], net: nn.Module,
                 model: nn.Module, optimizer: torch.optim.Optimizer, sampler: PatchSampler,
                 sampler_rng: np.random.Generator, generator: torch.Generator,
                 val_cases: Sequence[ValidationCase], dist: D.DistContext, device: torch.device,
                 run_dir: Path, runlog: RunLog | None, save_model: SaveModel, state: TrainState,
                 amp_dtype: torch.dtype | None = None, on_event: EventCallback | None = None,
                 cancel: CancelToken | None = None, stop_after: int | None = None) -> None:
        self.config = config
        self.technique = technique
        self.rare = list(rare)
        self.net = net
        self.model = model
        self.optimizer = optimizer
        self.sampler = sampler
        self.sampler_rng = sampler_rng
        self.generator = generator
        self.val_cases = list(val_cases)
        self.dist = dist
        self.device = device
        self.run_dir = Path(run_dir)
        self.runlog = runlog
        self.save_model = save_model
        self.state = state
        self.on_event = on_event if dist.is_main else None
        self.cancel = cancel or CancelToken()
        self.stop_after = stop_after
        self.bn_window = BatchNormWindow(net) if config.batchnorm_stats == "window" else None
        self.runner = IterationRunner(model, net, optimizer, technique, self.rare, generator, amp_dtype,
                                      bn_window=self.bn_window)
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.local_batch = config.batch_size // dist.world_size
        self._last_event = -math.inf
        self._session_iterations = 0
        self._session_seconds = 0.0
        self._first_seconds = 0.0
        self._resumed = False
        self.state.best_kind = "validation_dsc" if self.val_cases or not dist.is_main else "training_loss"

    # -- one iteration --------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        draw = self.sampler.draw(self.config.batch_size, self.sampler_rng)
        start = self.dist.rank * self.local_batch
        x, y = self.sampler.extract(draw.subset(slice(start, start + self.local_batch)))
        return (torch.from_numpy(x).to(self.device, non_blocking=True),
                torch.from_numpy(y).to(self.device, non_blocking=True))

    def _iterate(self) -> StepLosses:
        iteration = self.state.iteration
        lr = self.config.lr_at(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self._batch()
        started = time.perf_counter()
        losses = self.runner(x, y)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        values = D.all_mean(self.dist, losses.as_list(), self.device)
        losses = StepLosses.from_list(values, self.technique.steps)
        for name, value in losses.to_dict().items():
            if not math.isfinite(value):
                raise TrainingDiverged(f"iteration {iteration + 1}: the {name} loss is {value}; lower the learning "
                                       f"rate (--lr, now {lr:g}) or check the training cases")
        self.state.iteration = iteration + 1
        self.state.window_loss += losses.clean
        self.state.window_count += 1
        self.state.train_seconds += seconds
        self.state.last_losses = losses.to_dict()
        self._session_iterations += 1
        self._session_seconds += seconds
        if self._session_iterations == 1:
            self._first_seconds = seconds
        if self.runlog is not None:
            self.runlog.record("iteration", iteration=self.state.iteration, lr=lr, losses=losses.to_dict(),
                               seconds=seconds)
        return losses

    # -- evaluation ------------------------------------------------------------------------------
    def _evaluate(self) -> tuple[bool, bool]:
        """Rank 0 scores the current weights; returns (improved, cancelled during validation)."""
        state = self.state
        result: dict[str, Any] | None = None
        if self.val_cases:
            try:
                result = validate(self.net, self.val_cases, rare=self.rare, device=self.device, cancel=self.cancel)
            except Cancelled:
                state.validation_pending = True
                return False, True
            score = result["mean"]["dsc"]
            score = -math.inf if score is None else float(score)
            metrics = dict(result["mean"])
        else:
            mean_loss = state.window_loss / max(state.window_count, 1)
            score = -mean_loss
            metrics = {"training_loss": mean_loss}
        state.validation_pending = False
        state.window_loss, state.window_count = 0.0, 0
        improved = state.best_score is None or score > state.best_score
        if improved:
            state.best_score, state.best_iteration, state.best_metrics = score, state.iteration, metrics
            state.stale_evaluations = 0
        else:
            state.stale_evaluations += 1
        summary = {"iteration": state.iteration, "score": score if math.isfinite(score) else None,
                   "best": improved, **metrics}
        state.history.append(summary)
        if result is not None:
            state.last_validation = {"iteration": state.iteration, **result}
            if self.runlog is not None:
                self.runlog.record("validation", iteration=state.iteration, cases=result["cases"],
                                   mean=result["mean"], best=improved)
            emit(self.on_event, C.EVENT_VALIDATION, stage="validate", done=state.iteration,
                 total=self.config.iterations, cases=result["cases"], mean=result["mean"], best=improved,
                 best_iteration=state.best_iteration, best_dsc=state.best_metrics.get("dsc") if state.best_metrics else None,
                 message=f"validation at iteration {state.iteration}: mean DSC "
                         f"{_fmt(result['mean']['dsc'])}{' (best)' if improved else ''}")
        elif self.runlog is not None:
            self.runlog.record("selection", iteration=state.iteration, training_loss=metrics["training_loss"],
                               best=improved)
        if improved:
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}
            self.save_model(self.best_weights, state, "best")
            state.best_written = True
        return improved, False

    # -- checkpoints -------------------------------------------------------------------------------
    def _rng_states(self) -> dict[str, torch.Tensor]:
        """Every process's generator states, gathered to all (collective)."""
        mine = [self.generator.get_state(), torch.get_rng_state()]
        gathered = [D.gather_tensors(self.dist, t, self.device) for t in mine]
        out: dict[str, torch.Tensor] = {}
        for rank in range(self.dist.world_size):
            names = generator_state_names(rank)
            out[names[0]] = gathered[0][rank]
            out[names[1]] = gathered[1][rank]
        if self.device.type == "cuda":
            cuda_states = D.gather_tensors(self.dist, torch.cuda.get_rng_state(self.device), self.device)
            for rank in range(self.dist.world_size):
                out[generator_state_names(rank)[2]] = cuda_states[rank]
        return out

    def checkpoint(self) -> Path | None:
        """Write the resume checkpoint (collective; rank 0 writes). Returns its path on rank 0."""
        rng = self._rng_states()
        if not self.dist.is_main:
            return None
        state = self.state.to_dict()
        if self.runlog is not None:
            state["log_lines"] = list(self.runlog.counts)
        payload = {
            "iteration": self.state.iteration,
            "loop": state,
            "sampler_rng": self.sampler_rng.bit_generator.state,
            "world_size": self.dist.world_size,
            "config": self.config.to_dict(),
            "technique": self.technique.to_dict(),
        }
        if self.bn_window is not None:   # this process's window (each process loads it on resume)
            rng.update(self.bn_window.state_tensors())
        path = save_checkpoint(self.run_dir, weights=self.net.state_dict(), optimizer=self.optimizer.state_dict(),
                               rng=rng, state=payload, best=self.best_weights)
        emit(self.on_event, C.EVENT_CHECKPOINT, stage="train", done=self.state.iteration,
             total=self.config.iterations, path=str(path), iteration=self.state.iteration)
        return path

    def restore(self, checkpoint: Checkpoint) -> None:
        """Load weights, optimiser, generators and loop state from a checkpoint."""
        self.net.load_state_dict(checkpoint.weights)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.sampler_rng.bit_generator.state = checkpoint.state["sampler_rng"]
        self.state = TrainState.from_dict(checkpoint.state["loop"])
        self.state.best_kind = "validation_dsc" if self.val_cases or not self.dist.is_main else "training_loss"
        self.best_weights = checkpoint.best
        if self.bn_window is not None:
            self.bn_window.load_state_tensors(checkpoint.rng)
        self._resumed = True
        names = generator_state_names(self.dist.rank)
        saved_world = int(checkpoint.state.get("world_size", 1))
        if saved_world == self.dist.world_size and names[0] in checkpoint.rng:
            self.generator.set_state(checkpoint.rng[names[0]])
            torch.set_rng_state(checkpoint.rng[names[1]])
            if self.device.type == "cuda" and names[2] in checkpoint.rng:
                torch.cuda.set_rng_state(checkpoint.rng[names[2]], self.device)
        else:
            seed = self.config.seed + 1_000_003 * (self.dist.rank + 1) + self.state.iteration
            self.generator.manual_seed(seed)
            log.warning("the checkpoint was written by %d process(es), this run has %d: the per-process "
                        "adversarial/mixup/dropout generators restart from a new seed (patches are unaffected)",
                        saved_world, self.dist.world_size)

    # -- events --------------------------------------------------------------------------------------
    def _emit_iteration(self, losses: StepLosses, force: bool) -> None:
        if self.on_event is None:
            return
        now = time.perf_counter()
        if not force and now - self._last_event < EVENT_INTERVAL:
            return
        self._last_event = now
        rate = self._session_iterations / self._session_seconds if self._session_seconds > 0 else None
        remaining = self.config.iterations - self.state.iteration
        lr = self.config.lr_at(max(self.state.iteration - 1, 0))
        fields: dict[str, Any] = {"loss_clean": losses.clean}
        if losses.adversarial is not None:
            fields["loss_adversarial"] = losses.adversarial
        if losses.mixup is not None:
            fields["loss_mixup"] = losses.mixup
        emit(self.on_event, C.EVENT_ITERATION, stage="train", done=self.state.iteration,
             total=self.config.iterations, **fields, lr=lr, losses=losses.to_dict(),
             iterations_per_second=rate, eta_seconds=remaining / rate if rate else None)

    def _emit_estimate(self) -> None:
        """After the warm-up: how long the rest of the run will take on this device, from the
        iterations timed after the first one (validation passes not included)."""
        timed = self._session_iterations - 1
        remaining = self.config.iterations - self.state.iteration
        if timed < 1 or remaining < 1:
            return
        per = (self._session_seconds - self._first_seconds) / timed
        device = "CPU" if self.device.type == "cpu" else f"{self.device.type.upper()} device"
        threads = f", {torch.get_num_threads()} thread(s)" if self.device.type == "cpu" else ""
        extra = (f"; validation every {self.config.val_every} iterations comes on top"
                 if self.val_cases and self.config.val_every < self.config.iterations else "")
        emit(self.on_event, C.EVENT_LOG, stage="train",
             message=f"estimate: about {format_duration(per * remaining)} for the remaining {remaining} "
                     f"iteration(s) on this {device}{threads} ({per:.2f} s per iteration, measured on iterations "
                     f"{self.state.iteration - timed + 1}-{self.state.iteration}{extra})",
             estimated_seconds=per * remaining, seconds_per_iteration=per, measured_iterations=timed)

    # -- the loop ------------------------------------------------------------------------------------
    def _agree(self, *flags: bool) -> list[bool]:
        """Element-wise OR of flags over the processes (one collective)."""
        return D.any_flags(self.dist, flags, self.device)

    def _cancelled(self) -> None:
        path = self.checkpoint()
        if self.dist.is_main and not self.state.best_written:
            self.save_model(self.net.state_dict(), self.state, "cancelled")
        raise Cancelled(f"{self.cancel.reason or 'cancelled'} after iteration {self.state.iteration}; "
                        f"resume with --resume {self.run_dir}" + (f" (checkpoint {path})" if path else ""))

    def run(self) -> LoopOutcome:
        """Train until ``config.iterations`` (or early stop, ``stop_after``, cancel). See the module docstring."""
        cfg = self.config
        checkpoint_every = cfg.effective_checkpoint_every
        path: Path | None = None
        if self.state.validation_pending:
            _, cancelled = self._evaluate() if self.dist.is_main else (False, False)
            if self._agree(cancelled or self.cancel.cancelled)[0]:
                self._cancelled()
        status = "done"
        checkpointed = self.state.iteration if self._resumed else -1
        while self.state.iteration < cfg.iterations:
            if self.stop_after is not None and self.state.iteration >= self.stop_after:
                status = "stopped"
                break
            losses = self._iterate()
            it = self.state.iteration
            evaluated = validation_cancelled = early = False
            if it % cfg.val_every == 0 or it == cfg.iterations:
                evaluated = True
                if self.dist.is_main:
                    _, validation_cancelled = self._evaluate()
                    early = cfg.patience is not None and self.state.stale_evaluations >= cfg.patience
            if self.runlog is not None:
                validated = evaluated and self.val_cases and not validation_cancelled
                mean = (self.state.last_validation or {}).get("mean", {}) if validated else {}
                self.runlog.row(iteration=it, lr=cfg.lr_at(it - 1), loss_clean=losses.clean,
                                loss_adversarial=losses.adversarial, loss_mixup=losses.mixup,
                                val_dsc=mean.get("dsc"), val_sensitivity=mean.get("sensitivity"),
                                val_precision=mean.get("precision"), seconds=self.state.train_seconds)
            last_of_session = it == cfg.iterations or (self.stop_after is not None and it >= self.stop_after)
            self._emit_iteration(losses, force=it == 1 or last_of_session or evaluated)
            if self._session_iterations == ESTIMATE_AFTER and self.on_event is not None:
                self._emit_estimate()
            cancelled, early = self._agree(self.cancel.cancelled or validation_cancelled, early)
            if cancelled:
                self._cancelled()
            if early:
                status = "early_stopped"
                log.info("no improvement in %d evaluations: stopping early at iteration %d", cfg.patience, it)
                break
            if it % checkpoint_every == 0 or it == cfg.iterations:
                path = self.checkpoint()
                checkpointed = it
        if checkpointed != self.state.iteration:
            path = self.checkpoint()
        if self.dist.is_main and not self.state.best_written:
            self.save_model(self.net.state_dict(), self.state, status)
        return LoopOutcome(status=status, state=self.state, checkpoint=path)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
