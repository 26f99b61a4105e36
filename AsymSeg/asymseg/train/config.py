"""The fine-tuning configuration: one frozen dataclass, validated on construction.

A :class:`TrainConfig` comes from keyword arguments, a JSON/YAML file, or a file plus command-line
overrides (:func:`load_config`). The resolved configuration (after the technique and the model's
defaults are filled in) is saved beside the trained model as ``train_config.json``, so a run can be
repeated from that file alone.

Example file (YAML)::

    train_cases: [cases/case01, cases/case02]
    val_cases: [cases/case03]
    base_model: asymseg-starter-deepmedic
    technique: {name: a-focal, gamma: 2}
    iterations: 2000
    batch_size: 10
    output_model: my-model

Relative paths in a file are resolved against the file's folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from asymseg.errors import InputError

#: Optimiser names a configuration accepts (:mod:`asymseg.train.optim`), with a line each for help texts.
OPTIMIZERS: dict[str, str] = {
    "rmsprop": "the authors' (DeepMedic's) RMSProp: rho 0.9, eps 1e-4 inside the square root, "
               "Nesterov momentum 0.6 (default)",
    "torch-rmsprop": "torch.optim.RMSprop, rho 0.9, eps 1e-4 outside the square root, classic "
                     "momentum 0.6 (larger steps at the same lr)",
    "adam": "torch.optim.Adam",
}
SCHEDULES = ("constant", "step", "cosine", "poly")
#: Batch-norm statistics for inference (``TrainConfig.batchnorm_stats``).
BATCHNORM_STATS = ("ema", "window")
#: How a run sets its output model's operating point (``TrainConfig.operating_point``).
OPERATING_POINT_CHOICES = ("validation", "validation-tta", "cross-validation", "none")
DEVICES = ("auto", "cpu", "cuda")
ARCHITECTURES = ("deepmedic", "deepmedic-tmi", "unet")
#: Architecture trained from scratch when neither a base model nor an architecture is given.
DEFAULT_ARCHITECTURE = "deepmedic"

#: The authors' step schedule (ml-anchors.md §4.2): lr halved at epochs 17, 22, 27, 30, 33 of 35,
#: expressed as fractions of the run.
AUTHORS_LR_MILESTONES: tuple[float, ...] = tuple(e / 35 for e in (17, 22, 27, 30, 33))

#: Keys whose values are paths (resolved against a config file's folder).
_PATH_KEYS = ("train_cases", "val_cases", "output_model", "run_dir", "base_model")


def _tuple_of(value: Any, kind: type, key: str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise InputError(f"config {key}: expected a list, got {type(value).__name__}")
    try:
        return tuple(kind(v) for v in value)
    except (TypeError, ValueError) as err:
        raise InputError(f"config {key}: {err}") from err


def _int_triplet(value: Any, key: str) -> tuple[int, int, int] | None:
    if value is None:
        return None
    items = _tuple_of(value, int, key)
    if len(items) == 1:
        items = items * 3
    if len(items) != 3 or min(items) < 1:
        raise InputError(f"config {key}: expected 1 or 3 positive integers, got {list(items)}")
    return items  # type: ignore[return-value]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a fine-tuning run.

    Args:
        train_cases: training case folders (each with channel images and a label map).
        output_model: where the trained model goes: a folder path, or a bare name for the user
            models folder (``asymseg.registry.user_models_dir()``).
        val_cases: validation case folders; none -> ``val_fraction`` of the training cases are held out.
        val_fraction: fraction of the training cases held out for validation when ``val_cases`` is
            empty (0 = no validation; the best model is then chosen by the training loss).
        base_model: a model name or folder to fine-tune; None trains ``architecture`` from scratch.
        architecture: network for training from scratch: "deepmedic" (default without a base model),
            "deepmedic-tmi" or "unet".
        channels: input channel names for training from scratch (a base model brings its own).
        network: extra network hyper-parameters for training from scratch (e.g. feature maps).
        label_convention: BraTS convention of the label maps ("brats2015", "brats2017", "brats2023").
        foreground_labels: source label values that form the (rare) foreground, instead of a convention.
        technique: technique preset name (``asymseg.techniques.TECHNIQUES``).
        technique_overrides: explicit hyper-parameters replacing the preset's (margin, gamma, eps ...).
        iterations: number of training iterations (each runs 1-3 optimiser updates, METHOD.md).
        batch_size: GLOBAL batch size (patches per clean step); under torchrun it is split evenly
            across the processes, so a distributed run follows a single process with the same batch.
        optimizer: "rmsprop" (the authors' DeepMedic RMSProp: rho 0.9, eps 1e-4 inside the square
            root, Nesterov momentum 0.6), "torch-rmsprop" (torch's, same numbers) or "adam".
        lr: initial learning rate (authors: 1e-3).
        weight_decay: L2 weight decay of the optimiser.
        schedule: learning-rate schedule: "constant", "step" (multiply by ``lr_gamma`` at each
            milestone), "cosine" (to 0) or "poly" ((1 - t)^``poly_power``).
        lr_milestones: fractions of ``iterations`` where the step schedule decays (authors' default).
        lr_gamma: the step schedule's factor (authors: 0.5).
        poly_power: exponent of the poly schedule.
        fg_fraction: fraction of patches centred on a rare-class voxel; None = the technique's.
        augment: random flips and intensity jitter; None = the technique's (``a-aug`` augments
            background-centred patches only with its probability).
        patch_output_size: output size of a training patch (D, H, W); None = the network's default.
        val_every: validate (and checkpoint) every this many iterations.
        checkpoint_every: write the resume checkpoint every this many iterations; None = ``val_every``.
        patience: stop after this many validations without improvement; None = never stop early.
        seed: seed of every random draw (weights from scratch, patches, augmentation, AT, mixup).
        device: "auto" (CUDA when available), "cpu" or "cuda".
        run_dir: folder for checkpoints and logs; None = ``<output_model>.run`` beside the model.
        sync_batchnorm: under multi-process CUDA training, synchronise batch-norm statistics across
            processes (SyncBatchNorm needs CUDA; CPU runs keep per-process statistics).
        operating_point: after training, choose the output model's operating point (threshold,
            post-processing; :mod:`asymseg.operating`) on the validation cases and record it on
            its card: "validation" (default), "validation-tta" (TTA considered too, 8x the
            inference), "cross-validation" (no validation cases: one extra run per training case,
            each scoring the case it left out; :mod:`asymseg.train.crossval`) or "none" (argmax).
            With "validation" and no validation cases a fine-tuned model keeps its base model's
            operating point, marked ``inherited_from`` (a model from scratch: the argmax).
        reference_channel: the channel whose physical space each case is processed in (channels on
            other grids are resampled onto it; default: the model's first channel).
        strict: refuse a training or validation case when a plausibility check fails (skull left
            in, very thick slices, CT-like intensities; :mod:`asymseg.io.checks`) instead of
            training on it with a warning.
        batchnorm_stats: the batch-norm statistics inference uses: "ema" (torch's moving average,
            momentum 0.1) or "window" (the average of the last 60 clean training batches, as the
            authors' DeepMedic; :mod:`asymseg.train.bnstats`).
    """

    train_cases: tuple[str, ...]
    output_model: str
    val_cases: tuple[str, ...] = ()
    val_fraction: float = 0.0
    base_model: str | None = None
    architecture: str | None = None
    channels: tuple[str, ...] | None = None
    network: Mapping[str, Any] = field(default_factory=dict)
    label_convention: str | None = None
    foreground_labels: tuple[int, ...] | None = None
    technique: str = "ce"
    technique_overrides: Mapping[str, Any] = field(default_factory=dict)
    iterations: int = 1000
    batch_size: int = 10
    optimizer: str = "rmsprop"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "step"
    lr_milestones: tuple[float, ...] = AUTHORS_LR_MILESTONES
    lr_gamma: float = 0.5
    poly_power: float = 0.9
    fg_fraction: float | None = None
    augment: bool | None = None
    patch_output_size: tuple[int, int, int] | None = None
    val_every: int = 100
    checkpoint_every: int | None = None
    patience: int | None = None
    seed: int = 0
    device: str = "auto"
    run_dir: str | None = None
    sync_batchnorm: bool = True
    batchnorm_stats: str = "ema"
    operating_point: str = "validation"
    strict: bool = False
    reference_channel: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "train_cases", _tuple_of(self.train_cases, str, "train_cases"))
        set_(self, "val_cases", _tuple_of(self.val_cases, str, "val_cases"))
        if self.channels is not None:
            if isinstance(self.channels, str):
                set_(self, "channels", tuple(c.strip().lower() for c in self.channels.split(",") if c.strip()))
            else:
                set_(self, "channels", tuple(str(c).lower() for c in self.channels))
        if self.foreground_labels is not None:
            set_(self, "foreground_labels", _tuple_of(self.foreground_labels, int, "foreground_labels"))
        set_(self, "lr_milestones", _tuple_of(self.lr_milestones, float, "lr_milestones"))
        set_(self, "patch_output_size", _int_triplet(self.patch_output_size, "patch_output_size"))
        set_(self, "network", dict(self.network or {}))
        set_(self, "technique_overrides", dict(self.technique_overrides or {}))
        if self.reference_channel is not None:
            from asymseg.io import canonical_channel

            set_(self, "reference_channel", canonical_channel(str(self.reference_channel)))
        for key in ("output_model", "base_model", "run_dir", "architecture", "label_convention"):
            value = getattr(self, key)
            if value is not None:
                set_(self, key, str(value))
        if self.base_model is None and self.architecture is None:
            set_(self, "architecture", DEFAULT_ARCHITECTURE)
        self._validate()

    def _validate(self) -> None:
        if not self.train_cases:
            raise InputError("config train_cases: at least one training case is required")
        if not self.output_model:
            raise InputError("config output_model: an output model folder or name is required")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"config val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.base_model is not None and self.architecture is not None:
            raise InputError("config: give either base_model or architecture, not both")
        if self.architecture is not None and self.architecture not in ARCHITECTURES:
            raise InputError(f"config architecture: {self.architecture!r}; expected one of {list(ARCHITECTURES)}")
        if self.base_model is not None and (self.channels is not None or self.network):
            raise InputError("config: channels and network come from the base model's card; "
                             "give them only when training from scratch")
        if self.channels is not None and not self.channels:
            raise InputError("config channels: no channel names given")
        if self.label_convention and self.foreground_labels:
            raise InputError("config: give either label_convention or foreground_labels, not both")
        _check_int(self.iterations, "iterations", 1)
        _check_int(self.batch_size, "batch_size", 1)
        _check_int(self.val_every, "val_every", 1)
        if self.operating_point not in OPERATING_POINT_CHOICES:
            raise InputError(f"config operating_point: {self.operating_point!r}; expected one of "
                             f"{list(OPERATING_POINT_CHOICES)}")
        if self.batchnorm_stats not in BATCHNORM_STATS:
            raise InputError(f"config batchnorm_stats: {self.batchnorm_stats!r}; expected one of {list(BATCHNORM_STATS)}")
        if self.checkpoint_every is not None:
            _check_int(self.checkpoint_every, "checkpoint_every", 1)
        if self.patience is not None:
            _check_int(self.patience, "patience", 1)
        _check_int(self.seed, "seed", 0)
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"config optimizer: {self.optimizer!r}; expected one of {list(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"config schedule: {self.schedule!r}; expected one of {list(SCHEDULES)}")
        if self.device not in DEVICES:
            raise InputError(f"config device: {self.device!r}; expected one of {list(DEVICES)}")
        _check_float(self.lr, "lr", low=0.0, low_open=True)
        _check_float(self.weight_decay, "weight_decay", low=0.0)
        _check_float(self.lr_gamma, "lr_gamma", low=0.0, low_open=True, high=1.0)
        _check_float(self.poly_power, "poly_power", low=0.0, low_open=True)
        if any(not 0.0 < m < 1.0 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(self.lr_milestones):
            raise InputError(f"config lr_milestones: expected increasing fractions in (0, 1), got {list(self.lr_milestones)}")
        if self.fg_fraction is not None:
            _check_float(self.fg_fraction, "fg_fraction", low=0.0, high=1.0)
        if self.augment is not None and not isinstance(self.augment, bool):
            raise InputError(f"config augment: expected true or false, got {self.augment!r}")
        from asymseg.techniques import TECHNIQUES

        if self.technique not in TECHNIQUES:
            raise InputError(f"config technique: unknown technique {self.technique!r}; "
                             f"expected one of {sorted(TECHNIQUES)}")

    # -- resolved values ------------------------------------------------------------------------
    @property
    def effective_checkpoint_every(self) -> int:
        return self.checkpoint_every or self.val_every

    def technique_spec(self):
        """The resolved :class:`asymseg.techniques.Technique` (preset + overrides + config fields).

        Raises:
            InputError: an override names no technique field or has an invalid value.
        """
        from asymseg.techniques import get_technique

        overrides = dict(self.technique_overrides)
        if self.fg_fraction is not None:
            overrides["fg_fraction"] = self.fg_fraction
        if self.augment is not None:
            overrides["augment"] = self.augment
            if not self.augment:
                overrides["asym_aug_p"] = None  # no augmentation at all, not even asymmetric
        try:
            return get_technique(self.technique, **overrides)
        except InputError:
            raise
        except (TypeError, ValueError) as err:
            raise InputError(f"config technique {self.technique!r}: {err}") from err

    def lr_at(self, iteration: int) -> float:
        """Learning rate of iteration ``iteration`` (0-based) under the configured schedule."""
        t = iteration / self.iterations
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "step":
            passed = sum(1 for m in self.lr_milestones if iteration >= round(m * self.iterations))
            return self.lr * self.lr_gamma ** passed
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * t))
        return self.lr * (1.0 - t) ** self.poly_power

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a dict; ``technique`` may be a name or ``{"name": ..., <overrides>}``.

        Raises:
            InputError: unknown keys or invalid values (the message names ``source``).
        """
        data = _split_technique(dict(data), source)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        try:
            return cls(**data)
        except InputError as err:
            raise InputError(f"{source}: {err}") from err
        except TypeError as err:
            raise InputError(f"{source}: {err}") from err

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON, atomically."""
        from asymseg.train.checkpoint import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def _split_technique(data: dict[str, Any], source: str) -> dict[str, Any]:
    """``technique: {name: X, k: v}`` -> ``technique: X`` + ``technique_overrides: {k: v}``."""
    technique = data.get("technique")
    if isinstance(technique, Mapping):
        technique = dict(technique)
        if "name" not in technique:
            raise InputError(f"{source}: technique: a technique mapping needs a 'name'")
        data["technique"] = str(technique.pop("name"))
        data["technique_overrides"] = {**technique, **dict(data.get("technique_overrides") or {})}
    return data


def _check_int(value: Any, key: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"config {key}: expected an integer >= {low}, got {value!r}")


def _check_float(value: Any, key: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"config {key}: expected a number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise InputError(f"config {key}: expected a number {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise InputError(f"config {key}: expected a number <= {high}, got {value}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict, resolving relative paths against its folder.

    Raises:
        InputError: the file is missing, unreadable, not a mapping, or YAML support is missing.
    """
    from asymseg.io.mapping_file import parse_mapping, read_config_text

    path = Path(path)
    data = parse_mapping(read_config_text(path), path.suffix.lower(), str(path))
    if not isinstance(data, dict):
        raise InputError(f"{path}: the config must be a mapping of keys to values")
    return _resolve_paths(data, path.parent)


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(data)

    def resolve(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        p = Path(value).expanduser()
        if p.is_absolute():
            return str(p)
        candidate = base / p
        # Bare names (no separator) for base_model/output_model may be registry names: keep them
        # when nothing of that name exists beside the config file.
        if len(p.parts) == 1 and not candidate.exists():
            return value
        return str(candidate)

    for key in _PATH_KEYS:
        if key not in out or out[key] is None:
            continue
        if isinstance(out[key], (list, tuple)):
            out[key] = [str(base / Path(v).expanduser()) if not Path(v).expanduser().is_absolute() else v
                        for v in out[key]]
        else:
            out[key] = resolve(out[key])
    return out


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """A config from an optional file, with ``overrides`` (e.g. command-line options) on top.

    Overrides whose value is None are ignored, so a command line passes every option and only the
    given ones win. ``technique_overrides`` are merged key by key.

    Raises:
        InputError: see :func:`read_config_file` and :meth:`TrainConfig.from_dict`.
    """
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    source = str(path) if path is not None else "options"
    data = _split_technique(data, source)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    # A model source on the command line replaces the file's (base model vs from scratch).
    if "base_model" in overrides:
        for key in ("architecture", "channels", "network"):
            data.pop(key, None)
    elif "architecture" in overrides:
        data.pop("base_model", None)
    if "technique" in overrides and overrides["technique"] != data.get("technique"):
        data.pop("technique_overrides", None)  # the file's overrides belonged to its technique
    for key, value in overrides.items():
        if key == "technique_overrides":
            data[key] = {**dict(data.get(key) or {}), **{k: v for k, v in dict(value).items() if v is not None}}
        elif key == "network":
            data[key] = {**dict(data.get(key) or {}), **dict(value)}
        else:
            data[key] = value
    if "train_cases" not in data:
        raise InputError(f"{source}: no training cases given (--train-case or train_cases in the config)")
    if "output_model" not in data:
        raise InputError(f"{source}: no output model given (--output-model or output_model in the config)")
    return TrainConfig.from_dict(data, source=source)


def as_sequence(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"a,b"`` or ``["a", "b"]`` -> ("a", "b")."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)
