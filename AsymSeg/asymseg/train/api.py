"""``finetune(config)``: the fine-tuning routine behind ``asymseg finetune`` and the training panel.

Steps: join the torchrun process group if launched by torchrun; load the base model (or build
the architecture from scratch); load and crop the cases once; build the patch sampler and
optimiser (:func:`asymseg.train.session.build_session`) and the generators; run
:class:`~asymseg.train.loop.Trainer`; write the final model (:class:`asymseg.train.writer.ModelWriter`).

Outputs (rank 0):

- the output model folder (card + safetensors weights, usable by ``asymseg segment``), always the
  best model so far, replaced atomically whenever it improves; at the end it also holds the
  training log (``train_log.jsonl``, ``train_log.csv``) and the resolved ``train_config.json``;
- the run folder (default ``<output>.run`` beside it): ``checkpoint/`` (resume state),
  ``train_config.json`` and the growing training log.

Randomness: patches come from a numpy generator seeded with ``seed`` (the same on every process);
the adversarial start and mixup draws from a torch generator seeded per process; dropout from
torch's global generator, seeded per process inside ``torch.random.fork_rng`` so the caller's
global random state is left as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asymseg import constants as C
from asymseg.errors import AsymSegError, Cancelled, InputError, ModelError
from asymseg.modelfile import CARD_FILE
from asymseg.events import CancelToken, EventCallback, emit
from asymseg.target import TargetSpec, resolve_target
from asymseg.techniques import Technique
from asymseg.train import distributed as D
from asymseg.train.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    remove_stale_temporaries,
)
from asymseg.train.config import TrainConfig, load_config
from asymseg.train.crossval import check_cross_validation, choose_by_cross_validation
from asymseg.train.data import TrainingCase, hold_out, prepare_case
from asymseg.train.lock import output_lock
from asymseg.train.loop import Trainer, TrainState
from asymseg.train.runlog import CSV_NAME, JSONL_NAME, RunLog
from asymseg.train.session import Session, build_session, patch_shapes
from asymseg.train.writer import ModelWriter
from asymseg.train.validate import ValidationCase, prepare_validation_case

log = logging.getLogger(__name__)

CONFIG_NAME = "train_config.json"
#: The axis orientation a model trained from scratch is trained in and records on its card.
SCRATCH_ORIENTATION = "LPS"
#: Seed offset between processes for the per-process generators.
RANK_SEED_STRIDE = 1_000_003


@dataclass
class TrainResult:
    """What :func:`finetune` returns.

    Attributes:
        model_path: the output model folder (the best model).
        run_dir: checkpoints and logs.
        status: "done", "early_stopped" or "stopped" (``stop_after``).
        iterations: completed iterations; total_iterations: the configured number.
        best_iteration: iteration of the best model (None if no evaluation ran).
        best_metrics: its validation means, or ``{"training_loss": ...}`` without validation cases.
        last_losses: losses of the last iteration by step type.
        last_validation: the last validation (per case and means), if any.
        seconds: wall time of this call.
        train_seconds: time spent in training steps over all sessions of the run.
        history: one summary per evaluation.
        is_main: True on the process that wrote the outputs (rank 0).
    """

    model_path: Path
    run_dir: Path
    status: str
    iterations: int
    total_iterations: int
    best_iteration: int | None
    best_metrics: dict[str, Any] | None
    last_losses: dict[str, float] | None
    last_validation: dict[str, Any] | None
    seconds: float
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    is_main: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_path": str(self.model_path), "run_dir": str(self.run_dir), "status": self.status,
            "iterations": self.iterations, "total_iterations": self.total_iterations,
            "best_iteration": self.best_iteration, "best_metrics": self.best_metrics,
            "last_losses": self.last_losses, "last_validation": self.last_validation,
            "seconds": self.seconds, "train_seconds": self.train_seconds, "history": self.history,
        }


# -- paths -------------------------------------------------------------------------------------------
def is_bare_name(text: str) -> bool:
    """True for a model name (no path separator, not "." or ".."), which goes to the user models folder."""
    return bool(text) and "/" not in text and os.sep not in text and (os.altsep or "/") not in text \
        and text not in (".", "..") and not text.startswith("~")


def resolve_output(output_model: str) -> Path:
    """The output model folder: a path as given, or ``user_models_dir() / NAME`` for a bare name."""
    if is_bare_name(output_model):
        from asymseg.registry import user_models_dir

        return Path(user_models_dir()) / output_model
    return Path(output_model).expanduser().absolute()


def default_run_dir(output_model: str) -> Path:
    """``<output>.run`` beside a model folder; ``$ASYMSEG_HOME/runs/NAME`` for a model name."""
    if is_bare_name(output_model):
        from asymseg.registry import user_models_dir

        return Path(user_models_dir()).parent / "runs" / output_model
    output = resolve_output(output_model)
    return output.parent / f"{output.name}.run"


def load_run_config(run_dir: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The saved config of a run folder, with a few settings changed (for ``--resume``).

    Raises:
        InputError: the folder holds no config or no checkpoint.
    """
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        raise InputError(f"{run_dir}: not a training run folder (no {CONFIG_NAME})")
    if find_checkpoint(run_dir) is None:
        raise InputError(f"{run_dir}: the run has no checkpoint yet; start it again instead of resuming")
    config = load_config(path, overrides)
    if config.run_dir is None or Path(config.run_dir).absolute() != run_dir.absolute():
        config = config.replace(run_dir=str(run_dir.absolute()))
    return config


# -- devices -----------------------------------------------------------------------------------------
def _device_type(config: TrainConfig) -> str:
    if config.device == "cpu":
        return "cpu"
    if config.device == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available (use --device cpu or auto)")
        return "cuda"
    return "cuda" if torch.cuda.is_available() else "cpu"


# -- model ---------------------------------------------------------------------------------------------
@dataclass
class _ModelSource:
    net: torch.nn.Module
    card: Any
    channels: tuple[str, ...]
    target: TargetSpec
    base: str | None
    base_card: Any | None


def _load_base(config: TrainConfig) -> tuple[Any, Any, Path]:
    from asymseg.registry import load_model

    try:
        loaded = load_model(config.base_model, device="cpu")
    except AsymSegError:
        raise
    except (OSError, ValueError) as err:
        raise ModelError(f"{config.base_model}: cannot load the base model ({err})") from err
    return loaded.net, loaded.card, Path(loaded.path)


def _label_values(case_files: Sequence[Any]) -> set[int]:
    from asymseg.io import read_label

    values: set[int] = set()
    for files in case_files:
        label, _ = read_label(files.label)
        values.update(int(v) for v in np.unique(label))
    return values


def _model_source(config: TrainConfig, train_files: Sequence[Any]) -> _ModelSource:
    """The starting network, its channels and target (base model card, or built from scratch)."""
    explicit = config.label_convention is not None or config.foreground_labels is not None
    if config.base_model is not None:
        net, card, path = _load_base(config)
        target, channels = card.target, tuple(card.channels)
        if explicit:
            wanted = resolve_target(convention=config.label_convention, foreground_labels=config.foreground_labels)
            if wanted.num_classes != target.num_classes:
                raise InputError(
                    f"{path}: the base model has {target.num_classes} classes ({', '.join(target.names)}), the "
                    f"requested target {wanted.num_classes}; a base model's target can only be replaced by one "
                    "with the same number of classes")
            target = wanted
        return _ModelSource(net.train(), card, channels, target, str(path), card)
    from asymseg.modelfile import create_model

    if config.channels:
        channels = tuple(config.channels)
    else:
        common = [c for c in C.CHANNEL_NAMES if all(c in f.channels for f in train_files)]
        extra = [c for c in train_files[0].channels if c not in common and all(c in f.channels for f in train_files)]
        channels = tuple(common + extra)
        if not channels:
            raise InputError("the training cases share no channel; pass --channels")
    if explicit:
        target = resolve_target(convention=config.label_convention, foreground_labels=config.foreground_labels)
    else:
        target = resolve_target(label_values=_label_values(train_files), source=str(train_files[0].label))
    try:
        net, card = create_model(config.architecture, channels, target, seed=config.seed, **dict(config.network))
    except (TypeError, ValueError) as err:
        raise InputError(f"network {config.architecture}: {' '.join(str(err).split())}") from err
    card = card.replace(spacing=_training_spacing(train_files, channels), orientation=SCRATCH_ORIENTATION)
    return _ModelSource(net, card, channels, target, None, None)


def _training_spacing(train_files: Sequence[Any], channels: Sequence[str]) -> tuple[float, float, float] | None:
    """The spacing a model trained from scratch works at: per axis, the median spacing of the training
    cases' reference channels in the :data:`SCRATCH_ORIENTATION` axis order (nnU-Net's target
    spacing). Cases at another spacing are resampled to it, and the card records it, so the model
    resamples every case it segments the same way."""
    from asymseg.io import canonical_channel, read_geometry
    from asymseg.io.resample import reoriented

    spacings = []
    for files in train_files:
        reference = canonical_channel(files.reference_channel) if files.reference_channel else channels[0]
        path = files.channels.get(reference)
        if path is not None:  # a case without it is refused, by name, when it loads
            spacings.append(reoriented(read_geometry(path), SCRATCH_ORIENTATION).spacing)
    if not spacings:
        return None
    median = np.median(np.asarray(spacings, dtype=np.float64), axis=0)
    return tuple(float(v) for v in median)  # type: ignore[return-value]


# -- cases ---------------------------------------------------------------------------------------------
def _discover(folders: Sequence[str], role: str, reference_channel: str | None = None) -> list[Any]:
    from asymseg.io import discover_case

    out = []
    for folder in folders:
        files = discover_case(Path(folder))
        if files.label is None:
            raise InputError(f"{folder}: {role} case has no label file (looked for seg/label/OTMultiClass)")
        files.use_reference_channel(reference_channel, f"{role} case")
        out.append(files)
    return out


def _unique_ids(files: Sequence[Any]) -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for f in files:
        n = seen.get(f.case_id, 0)
        seen[f.case_id] = n + 1
        ids.append(f.case_id if n == 0 else f"{f.case_id}#{n + 1}")
    return ids


def _load(files: Any, channels: Sequence[str], target: TargetSpec, spacing: Sequence[float] | None,
          orientation: str | None, strict: bool = False) -> Any:
    """A training or validation case on the model's working grid (the card's spacing and orientation)."""
    from asymseg.io import load_case

    case = load_case(files, channels=list(channels), normalize=True, require_label=True, spacing=spacing,
                     orientation=orientation, strict=strict)
    target.check_label_values(np.unique(case.label), source=str(files.label))
    return case


def _perturbed_inputs(technique: Technique, net: torch.nn.Module, in_size: tuple[int, ...]) -> list[dict[str, Any]]:
    """What the adversarial step perturbs at this patch size: name, shape and RMS per value of
    a perturbation of norm eps (empty without the adversarial step)."""
    from asymseg.regularizers import perturbation_rms

    if not technique.adversarial:
        return []
    probe = torch.zeros((1, net.in_channels, *in_size))
    if technique.adversarial_inputs == "pathways":
        shapes = [tuple(t.shape[1:]) for t in net.pathway_inputs(probe)]
        factors = list(getattr(net, "hparams", {}).get("lowres_factors", []))[:len(shapes) - 1]
        names = ["normal"] + [f"x{f}" for f in factors]
    else:
        shapes, names = [tuple(probe.shape[1:])], ["image"]
    return [{"name": name, "shape": list(shape), "rms": perturbation_rms(technique.eps, shape)}
            for name, shape in zip(names, shapes)]


def _check_fresh_start(output: Path, run_dir: Path, overwrite: bool) -> None:
    """Refuse to start over an earlier run unless ``overwrite``, and with it, refuse to replace
    anything that is not a model or a run folder of ours. Nothing is deleted here: the old
    checkpoint goes only once every input has been checked (:func:`_clear_checkpoints`), and the
    old model stays until the new one replaces it atomically."""
    if overwrite:
        if output.exists() and not (output.is_dir() and (output / CARD_FILE).is_file()):
            raise InputError(f"{output}: --overwrite replaces only a model folder (with {CARD_FILE}); this is not "
                             "one, so it is left alone: choose another --output-model")
        for name in ("checkpoint", "checkpoint.old"):
            folder = run_dir / name
            if folder.exists() and not (folder / "state.json").is_file():
                raise InputError(f"{folder}: --overwrite replaces only the checkpoint of an asymseg run; this "
                                 "folder is not one, so it is left alone: choose another --run-dir")
        return
    if output.exists():
        raise InputError(f"{output}: the output model already exists; choose another name or pass --overwrite")
    if find_checkpoint(run_dir) is not None:
        raise InputError(f"{run_dir}: holds the checkpoint of an earlier run; continue it with --resume {run_dir} "
                         "or pass --overwrite to start anew")


def _clear_checkpoints(run_dir: Path) -> None:
    """Remove an earlier run's checkpoint (``--overwrite``, after the inputs were checked)."""
    for name in ("checkpoint", "checkpoint.old"):
        if (run_dir / name).exists():
            shutil.rmtree(run_dir / name)


def finetune(config: TrainConfig, *, on_event: EventCallback | None = None, cancel: CancelToken | None = None,
             resume: bool = False, overwrite: bool = False, stop_after: int | None = None,
             env: Mapping[str, str] | None = None) -> TrainResult:
    """Train the configured model (see the module docstring).

    Args:
        config: what to train (:class:`~asymseg.train.config.TrainConfig`).
        on_event: progress events (rank 0): start, iteration, validation, checkpoint, then done /
            cancelled / failed.
        cancel: checked after every iteration (and during validation).
        resume: continue from the checkpoint in the run folder (see :func:`load_run_config`).
        overwrite: replace an existing output model and checkpoint instead of refusing.
        stop_after: pause (checkpoint written, status "stopped") once this many iterations are done.
        env: environment to read torchrun's variables from (default ``os.environ``).

    Returns:
        The :class:`TrainResult`.

    Raises:
        InputError: bad cases, options or targets (one line naming the file or option).
        ModelError: the base model cannot be used.
        Cancelled: ``cancel`` was set; a checkpoint was written and the best model kept.
    """
    started = time.perf_counter()
    cancel = cancel or CancelToken()
    device_type = _device_type(config)
    dist = D.setup(device_type, env)
    try:
        main = on_event if dist.is_main else None
        try:
            lock = output_lock(resolve_output(config.output_model)) if dist.is_main else contextlib.nullcontext()
            with lock:
                return _finetune(config, dist, device_type, main, cancel, resume, overwrite, stop_after, started)
        except Cancelled as err:
            emit(main, C.EVENT_CANCELLED, stage="train", message=" ".join(str(err).split()),
                 model_path=str(resolve_output(config.output_model)), run_dir=str(_run_dir(config)))
            raise
        except BaseException as err:
            emit(main, C.EVENT_FAILED, stage="train", message=" ".join(str(err).split()) or type(err).__name__,
                 error=type(err).__name__)
            raise
    finally:
        D.teardown(dist)


def _run_dir(config: TrainConfig) -> Path:
    if config.run_dir:
        return Path(config.run_dir).expanduser().absolute()
    return default_run_dir(config.output_model)


@dataclass
class _Run:
    """Everything one fine-tuning run works with, ready before the first iteration."""

    config: TrainConfig  # resolved: absolute paths, so the run resumes from anywhere
    technique: Technique
    output: Path
    run_dir: Path
    device: torch.device
    checkpoint: Any | None
    source: _ModelSource
    val_files: list[Any]
    train_ids: list[str]
    val_ids: list[str]
    val_cases: list[ValidationCase]
    session: Session

    @property
    def in_size(self) -> tuple[int, ...]:
        return self.session.input_size

    @property
    def out_size(self) -> tuple[int, ...]:
        return self.session.output_size


def _finetune(config: TrainConfig, dist: D.DistContext, device_type: str, on_event: EventCallback | None,
              cancel: CancelToken, resume: bool, overwrite: bool, stop_after: int | None,
              started: float) -> TrainResult:
    run = _prepare_run(config, dist, device_type, on_event, cancel, resume, overwrite)
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        writer = ModelWriter(run.output, run.source, run.config, run.technique, run.train_ids, run.val_ids,
                             run.run_dir)  # copies the net before it moves or trains
        trainer = _make_trainer(run, writer, dist, on_event, cancel, stop_after)
        _emit_start(run, trainer, dist, on_event)
        outcome = trainer.run()
        if dist.is_main:
            _finish_model(run, writer, trainer, outcome, on_event, cancel)
        D.barrier(dist)
    state = outcome.state
    result = TrainResult(
        model_path=run.output, run_dir=run.run_dir, status=outcome.status, iterations=state.iteration,
        total_iterations=run.config.iterations, best_iteration=state.best_iteration,
        best_metrics=state.best_metrics, last_losses=state.last_losses, last_validation=state.last_validation,
        seconds=time.perf_counter() - started, train_seconds=state.train_seconds, history=list(state.history),
        is_main=dist.is_main)
    kept = (f"best model (iteration {state.best_iteration})" if state.best_iteration is not None
            else f"model of iteration {state.iteration} (not evaluated yet)")
    emit(on_event, C.EVENT_DONE, stage="train", done=state.iteration, total=run.config.iterations,
         message=f"{outcome.status}: {kept} in {run.output}",
         **{k: v for k, v in result.to_dict().items() if k not in ("history", "last_validation")})
    return result


def _prepare_run(config: TrainConfig, dist: D.DistContext, device_type: str, on_event: EventCallback | None,
                 cancel: CancelToken, resume: bool, overwrite: bool) -> _Run:
    """Check the outputs, find and load the cases, build the model source and the patch sampler,
    and save the resolved configuration in the run folder."""
    technique = config.technique_spec()
    if config.batch_size % dist.world_size:
        raise InputError(f"--batch-size {config.batch_size} is the global batch and must be a multiple of the "
                         f"{dist.world_size} processes")
    output = resolve_output(config.output_model)
    run_dir = _run_dir(config)
    device = torch.device("cuda", dist.local_rank) if device_type == "cuda" and dist.is_distributed \
        else torch.device(device_type)
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(run_dir)
    elif dist.is_main:
        _check_fresh_start(output, run_dir, overwrite)
    D.barrier(dist)

    train_files, val_files = _case_files(config, dist)
    source = _model_source(config, train_files)
    net = source.net
    train_ids = _unique_ids(train_files)
    val_ids = _unique_ids(val_files)
    patch_shapes(config, net)  # a patch size the network cannot take is refused before the cases load
    cases, val_cases = _load_cases(source, train_files, train_ids, val_files if dist.is_main else [], val_ids,
                                   on_event, cancel, config.strict)
    net.to(device)
    session = build_session(config, net, cases, device, technique)

    resolved = config.replace(
        train_cases=tuple(str(Path(p).absolute()) for p in config.train_cases),
        val_cases=tuple(str(Path(p).absolute()) for p in config.val_cases),
        base_model=source.base if source.base is not None else None,
        output_model=config.output_model if is_bare_name(config.output_model) else str(output),
        run_dir=str(run_dir))
    if dist.is_main:
        if overwrite and not resume:
            _clear_checkpoints(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved.save(run_dir / CONFIG_NAME)
    return _Run(resolved, technique, output, run_dir, device, checkpoint, source, val_files, train_ids, val_ids,
                val_cases, session)


def _case_files(config: TrainConfig, dist: D.DistContext) -> tuple[list[Any], list[Any]]:
    """The training and validation cases' files (validation held out of the training cases when asked)."""
    train_files = _discover(config.train_cases, "training", config.reference_channel)
    val_files = _discover(config.val_cases, "validation", config.reference_channel)
    if not val_files and config.val_fraction > 0:
        keep, held = hold_out([f.case_id for f in train_files], config.val_fraction, config.seed)
        val_files = [train_files[i] for i in held]
        train_files = [train_files[i] for i in keep]
    if config.operating_point == "cross-validation":
        check_cross_validation(config.train_cases, config.val_cases, config.val_fraction, dist.is_distributed)
    return train_files, val_files


def _load_cases(source: _ModelSource, train_files: Sequence[Any], train_ids: Sequence[str],
                val_files: Sequence[Any], val_ids: Sequence[str], on_event: EventCallback | None,
                cancel: CancelToken, strict: bool = False) -> tuple[list[TrainingCase], list[ValidationCase]]:
    """Read, resample and normalise the cases (validation cases: only on the process that validates)."""
    net, card = source.net, source.card
    total = len(train_files) + len(val_files)
    emit(on_event, C.EVENT_PROGRESS, stage="load", done=0, total=total,
         message=f"loading {len(train_files)} training and {len(val_files)} validation case(s)")
    cases: list[TrainingCase] = []
    prepared: dict[tuple, TrainingCase] = {}
    for index, (files, case_id) in enumerate(zip(train_files, train_ids)):
        cancel.check()
        # A case listed again is drawn again (a weight), on the arrays read the first time.
        key = (files.folder, tuple(files.channels.items()), files.label, files.mask)
        if key in prepared:
            cases.append(dataclasses.replace(prepared[key], case_id=case_id))
        else:
            case = _load(files, source.channels, source.target, card.spacing, card.orientation, strict)
            # Voxels outside the brain are 0 after normalisation, the same as the patch padding, so
            # cropping to the box of brain and labelled voxels loses nothing.
            prepared[key] = prepare_case(case_id, case.image, case.label, case.mask, source.target, margin=0)
            cases.append(prepared[key])
            del case
        emit(on_event, C.EVENT_PROGRESS, stage="load", done=index + 1, total=total)
    val_cases: list[ValidationCase] = []
    for index, (files, case_id) in enumerate(zip(val_files, val_ids)):
        cancel.check()
        case = _load(files, source.channels, source.target, card.spacing, card.orientation, strict)
        val_cases.append(prepare_validation_case(case_id, case.image, case.label, case.mask, case.geometry.spacing,
                                                 source.target, context=net.context,
                                                 output_multiple=net.output_multiple))
        del case
        emit(on_event, C.EVENT_PROGRESS, stage="load", done=len(train_files) + index + 1, total=total)
    return cases, val_cases


def _make_trainer(run: _Run, writer: ModelWriter, dist: D.DistContext, on_event: EventCallback | None,
                  cancel: CancelToken, stop_after: int | None) -> Trainer:
    """The seeded trainer on the run's device, restored from the checkpoint when resuming."""
    config, device, net = run.config, run.device, run.source.net
    sampler_rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed + RANK_SEED_STRIDE * (dist.rank + 1))
    # Dropout draws from the global generators: seed the ones fork_rng restores afterwards.
    torch.default_generator.manual_seed(config.seed + RANK_SEED_STRIDE * dist.rank)
    if device.type == "cuda":
        torch.cuda.manual_seed(config.seed + RANK_SEED_STRIDE * dist.rank)
    model = D.wrap_model(net, dist, device, sync_batchnorm=config.sync_batchnorm)
    runlog = None
    if dist.is_main:
        counts = None
        if run.checkpoint is not None:
            saved = run.checkpoint.state["loop"].get("log_lines")
            counts = (int(saved[0]), int(saved[1])) if saved else (0, 0)
        runlog = RunLog(run.run_dir, counts)
        writer.recover()
        remove_stale_temporaries(run.output.parent, f".{run.output.name}.")
    trainer = Trainer(config=config, technique=run.technique, rare=list(run.source.target.rare), net=net,
                      model=model, optimizer=run.session.optimizer, sampler=run.session.sampler,
                      sampler_rng=sampler_rng,
                      generator=generator, val_cases=run.val_cases, dist=dist, device=device, run_dir=run.run_dir,
                      runlog=runlog, save_model=lambda w, s, r: writer.write(w, s, r), state=TrainState(),
                      amp_dtype=run.session.amp, on_event=on_event, cancel=cancel, stop_after=stop_after)
    if run.checkpoint is not None:
        _check_compatible(run.checkpoint.state, config)
        trainer.restore(run.checkpoint)
    return trainer


def _emit_start(run: _Run, trainer: Trainer, dist: D.DistContext, on_event: EventCallback | None) -> None:
    config, technique = run.config, run.technique
    perturbed = _perturbed_inputs(technique, run.source.net, run.in_size)
    emit(on_event, C.EVENT_START, stage="train", done=trainer.state.iteration, total=config.iterations,
         message=f"training {len(run.train_ids)} case(s) with {technique.name} on {run.device} "
                 f"({dist.world_size} process(es)), {config.iterations} iterations"
                 + ("; adversarial eps {:g} per input = RMS {} per value".format(
                     technique.eps, ", ".join(f"{p['rms']:.3f} ({p['name']})" for p in perturbed))
                    if perturbed else ""),
         adversarial_inputs=perturbed or None,
         iterations=config.iterations, cases={"train": run.train_ids, "val": run.val_ids},
         technique=technique.to_dict(), steps=list(technique.steps), config=config.to_dict(),
         device=str(run.device), world_size=dist.world_size, batch_size=config.batch_size,
         patch={"input": list(run.in_size), "output": list(run.out_size)}, resumed=run.checkpoint is not None,
         resumed_at=trainer.state.iteration if run.checkpoint is not None else None,
         model_path=str(run.output), run_dir=str(run.run_dir))


def _finish_model(run: _Run, writer: ModelWriter, trainer: Trainer, outcome: Any, on_event: EventCallback | None,
                  cancel: CancelToken) -> None:
    """Write the final model with its logs, then choose its operating point (on the main process)."""
    config = run.config
    best = trainer.best_weights if trainer.best_weights is not None else run.source.net.state_dict()
    config.save(run.run_dir / CONFIG_NAME)
    writer.write(best, outcome.state, outcome.status,
                 extra_files={JSONL_NAME: run.run_dir / JSONL_NAME, CSV_NAME: run.run_dir / CSV_NAME,
                              CONFIG_NAME: run.run_dir / CONFIG_NAME})
    if outcome.status == "stopped":
        return
    if config.operating_point == "cross-validation":
        choose_by_cross_validation(finetune, config, run.output, run.run_dir, run.train_ids, device=str(run.device),
                                   on_event=on_event, cancel=cancel)
    elif run.val_files and config.operating_point != "none":
        _choose_operating_point(run.output, run.val_files, config, run.device, on_event, cancel)


def _choose_operating_point(output: Path, val_files: Sequence[Any], config: TrainConfig, device: torch.device,
                            on_event: EventCallback | None, cancel: CancelToken | None) -> None:
    """Calibrate the output model on the validation cases and record the result on its card."""
    from asymseg.calibrate import calibrate

    emit(on_event, C.EVENT_LOG, stage="calibrate", level="info",
         message=f"choosing the operating point on {len(val_files)} validation case(s)")
    result = calibrate(output, val_files, tta=config.operating_point == "validation-tta", write=True,
                       device=str(device), cancel=cancel)
    point = result["operating_point"]
    emit(on_event, C.EVENT_LOG, stage="calibrate", level="info",
         message=f"operating point: tumour where dz > {point['threshold']:g}, post-processing "
                 f"{point['postprocess']}, TTA {'on' if point['tta'] else 'off'} (on the card)",
         operating_point=point)


def _check_compatible(saved: Mapping[str, Any], config: TrainConfig) -> None:
    """Refuse to resume a checkpoint written for another network, target or batch, or a damaged one."""
    for key in ("loop", "config", "sampler_rng"):
        if not isinstance(saved.get(key), dict):
            raise InputError(f"{config.run_dir}: damaged checkpoint state: {key!r} is missing or not an object; "
                             "start anew with --overwrite")
    old = saved.get("config") or {}
    for key in ("base_model", "architecture", "channels", "network", "batch_size", "technique",
                "technique_overrides", "label_convention", "foreground_labels", "patch_output_size"):
        a, b = old.get(key), config.to_dict().get(key)
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            raise InputError(f"cannot resume: the checkpoint was written with {key}={a!r}, this run has {b!r}")
    if int(saved["iteration"]) > config.iterations:
        raise InputError(f"cannot resume: the checkpoint is at iteration {saved['iteration']}, beyond "
                         f"--iterations {config.iterations}")
