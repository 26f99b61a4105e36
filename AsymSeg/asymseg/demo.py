"""The demo behind ``make demo`` / ``asymseg demo``: the whole idea on phantom cases, in minutes.

Steps (all on the CPU unless a GPU is available; nothing is downloaded):

1. write phantom cases (FLAIR + T1c): ``train_cases`` for fine-tuning, ``test_cases`` held out;
2. segment the held-out cases with the starter model and score them (DSC, sensitivity,
   precision; the first case is reported on its own, the mean is the baseline column);
3. fine-tune the starter model on the training phantoms twice, with ``ce`` and with ``combo``
   (the asymmetric combination), in short runs with the same seed;
4. evaluate both fine-tuned models on the held-out phantoms and run the logit diagnostic
   (training vs held-out phantoms), which gives the rare-class logit shift and the figure.

Output folder layout::

    OUT/demo.json                     the results (also returned as :class:`DemoResult`)
    OUT/cases/phantom_000 ...         the phantom cases and phantom.json
    OUT/starter/<case>_seg.nii.gz     the starter model's segmentations of the held-out cases
    OUT/models/ce, OUT/models/combo   the fine-tuned models (model.json + model.safetensors)
    OUT/runs/ce, OUT/runs/combo       their training logs and checkpoints
    OUT/eval/ce, OUT/eval/combo       their segmentations of the held-out cases
    OUT/analysis/ce, .../combo        analysis.json and logits.png (the logit diagnostic)

Short runs on two toy cases illustrate the workflow; they do not measure the techniques (see
``asymseg experiment`` for that).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asymseg import constants as C
from asymseg.errors import InputError, ModelError
from asymseg.events import CancelToken, EventCallback, emit, json_safe

log = logging.getLogger(__name__)

#: The bundled model the demo starts from.
STARTER_MODEL = "asymseg-starter-deepmedic"
#: The two techniques the demo compares: the baseline and the asymmetric combination.
DEMO_TECHNIQUES: tuple[str, ...] = ("ce", "combo")
#: Written at the end of a run; marks a folder as the demo's, so a new run may replace it.
RESULT_FILE = "demo.json"
#: Metrics printed per model.
METRICS: tuple[str, ...] = ("dsc", "sensitivity", "precision")
#: Smallest phantom edge on which the bundled starter model finds the tumour core: measured on the
#: held-out phantoms of seed 0, it finds none at 24^3 (DSC 0, 0, 0) and most from 32^3 on (mean DSC
#: 0.21 at 32, 0.43 at 40, 0.60 at 48, 0.46 at 64), so smaller demos would only show zeros.
STARTER_MIN_SIZE = 32
#: Sub-folders the demo writes (removed before a new run in the same folder).
_PARTS = ("cases", "starter", "models", "runs", "eval", "analysis", RESULT_FILE)


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs.

    Args:
        model: the model to start from: a registry name or a model folder (default: the
            bundled starter model). It must take FLAIR and T1c (any subset of flair, t1c, t1, t2).
        size: phantom edge length in voxels (cubes).
        train_cases: phantoms the models are fine-tuned on.
        test_cases: held-out phantoms they are evaluated on.
        iterations: fine-tuning iterations per technique.
        batch_size: patches per step.
        lr: fine-tuning learning rate. A tenth of the from-scratch default: at 1e-3, 3 iterations
            of batch 2 (the quick demo) turned the starter model's held-out DSC of 0.46 into 0.09
            (ce) and 0.06 (combo), marking most of the brain; at 1e-4, 0.42 and 0.20.
        seed: seed of the phantoms and of the fine-tuning runs.
        device: "auto" (CUDA when available), "cpu" or "cuda".
    """

    model: str = STARTER_MODEL
    size: int = 64
    train_cases: int = 2
    test_cases: int = 3
    iterations: int = 20
    batch_size: int = 4
    lr: float = 1e-4
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name, low in (("size", 16), ("train_cases", 1), ("test_cases", 1), ("iterations", 1),
                          ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"demo {name}: expected an integer >= {low}, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr <= 1:
            raise InputError(f"demo lr: expected a learning rate in (0, 1], got {self.lr!r}")
        if self.size > 256:
            raise InputError(f"demo size: at most 256 voxels per axis, got {self.size}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"demo device: {self.device!r}; expected auto, cpu or cuda")

    @classmethod
    def quick(cls, **changes: Any) -> DemoSettings:
        """A smaller run (48^3, 1 held-out case, 3 iterations of batch 2) for checks and tests."""
        base = {"size": 48, "train_cases": 2, "test_cases": 1, "iterations": 3, "batch_size": 2}
        return cls(**{**base, **changes})


@dataclass
class DemoResult:
    """What :func:`run_demo` returns (and writes to ``OUT/demo.json``).

    Attributes:
        out_dir: the output folder (absolute).
        model: the starting model's name and folder.
        cases: ``{"train": [...], "test": [...]}`` phantom case ids.
        starter: the starting model on the first held-out case (``case_id``, its metrics and
            ``segmentation``), and on all of them (``mean``, ``per_case``).
        techniques: technique -> ``{"dsc", "sensitivity", "precision"}`` (means over the held-out
            cases), ``"per_case"``, ``"rare_shift"`` and ``"nonrare_shift"`` (mean dz held-out minus
            training), ``"model"``, ``"figure"``, ``"train_seconds"``.
        settings: the :class:`DemoSettings` used.
        seconds: wall time.
    """

    out_dir: Path
    model: dict[str, str]
    cases: dict[str, list[str]]
    starter: dict[str, Any]
    techniques: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"out_dir": str(self.out_dir), "model": self.model, "cases": self.cases,
                          "starter": self.starter, "techniques": self.techniques, "settings": self.settings,
                          "seconds": self.seconds})

    def table(self) -> list[str]:
        """The starting model and the fine-tuned models side by side, one line per metric."""
        names = ["starter", *self.techniques]
        columns = {"starter": dict(self.starter.get("mean") or {}), **self.techniques}
        rows = [f"{'':<22}" + "".join(f"{n:>10}" for n in names)]
        labels = {"dsc": "DSC", "sensitivity": "sensitivity", "precision": "precision",
                  "rare_shift": "tumour logit shift", "nonrare_shift": "background shift"}
        for key, label in labels.items():
            cells = "".join(f"{_fmt(columns[n].get(key), signed=key.endswith('shift')):>10}" for n in names)
            rows.append(f"{label:<22}{cells}")
        return rows


def _fmt(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _mean(values: list[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def resolve_demo_model(model: str) -> Path:
    """The folder of the model the demo starts from.

    Raises:
        ModelError: the bundled starter model is missing (a broken installation), or ``model``
            is not a model.
    """
    from asymseg.registry import bundled_models_dir, find_model

    if model == STARTER_MODEL and not (bundled_models_dir() / STARTER_MODEL).is_dir():
        raise ModelError(f"the bundled starter model {STARTER_MODEL} is missing from {bundled_models_dir()}; "
                         "reinstall asymseg, train it with recipes/starter/train.sh --install, or pass "
                         "--model NAME|DIR")
    return find_model(model)


def prepare_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create the output folder, or clear the demo's parts of an earlier demo folder.

    Raises:
        InputError: ``out_dir`` is a file, or a non-empty folder that is not a demo folder.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / RESULT_FILE).is_file() and not (out / "cases" / "phantom.json").is_file():
            raise InputError(f"{out}: a non-empty folder that is not a demo output folder; choose another --out")
        for part in _PARTS:
            target = out / part
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


#: Steps shown in the progress messages: phantoms, starter model, one per technique.
STEPS = 2 + len(DEMO_TECHNIQUES)


def _step(on_event: EventCallback | None, index: int, message: str) -> None:
    emit(on_event, C.EVENT_LOG, stage="demo", done=index, total=STEPS, message=f"[{index}/{STEPS}] {message}")


def run_demo(out_dir: str | os.PathLike[str], settings: DemoSettings | None = None, *,
             on_event: EventCallback | None = None, cancel: CancelToken | None = None) -> DemoResult:
    """Run the demo (see the module docstring) and write its outputs to ``out_dir``.

    Args:
        out_dir: output folder; created, or an earlier demo folder whose contents are replaced.
        settings: what to run (default :class:`DemoSettings`).
        on_event: progress: ``log`` events per step and the results as they come, plus the
            events of the phantom writer, the inference engine, fine-tuning and the diagnostic.
        cancel: checked between steps and inside them.

    Returns:
        The :class:`DemoResult` (also written to ``OUT/demo.json``).

    Raises:
        ModelError: the starting model is missing or unusable (the bundled starter model is
            missing from a broken installation).
        InputError: bad settings or output folder.
        Cancelled: ``cancel`` was set.
    """
    from asymseg.diagnostics import analyze_model
    from asymseg.infer.cases import segment_cases
    from asymseg.io import discover_case
    from asymseg.registry import load_model
    from asymseg.phantom import write_phantom_cases
    from asymseg.train import TrainConfig, finetune

    settings = settings or DemoSettings()
    cancel = cancel or CancelToken()
    started = time.perf_counter()
    model_dir = resolve_demo_model(settings.model)
    if settings.model == STARTER_MODEL and settings.size < STARTER_MIN_SIZE:
        raise InputError(f"demo size {settings.size}: the starter model finds no tumour core in phantoms under "
                         f"{STARTER_MIN_SIZE}^3 voxels, so the demo would show only zeros; use --size "
                         f"{STARTER_MIN_SIZE} or more")
    starter = load_model(model_dir)
    channels = tuple(starter.card.channels)
    out = prepare_out_dir(out_dir)

    n_train, n_test = settings.train_cases, settings.test_cases
    _step(on_event, 1, f"phantom cases ({' + '.join(channels)}): {n_train} to fine-tune on, {n_test} held out")
    paths = write_phantom_cases(out / "cases", n_train + n_test, size=(settings.size,) * 3, seed=settings.seed,
                                channels=channels, on_event=on_event, cancel=cancel)
    train_dirs, test_dirs = [str(p) for p in paths[:n_train]], [str(p) for p in paths[n_train:]]
    train_ids, test_ids = [Path(p).name for p in train_dirs], [Path(p).name for p in test_dirs]

    cancel.check()
    test_files = [discover_case(p) for p in test_dirs]
    first = test_files[0]
    _step(on_event, 2, f"segmenting {', '.join(test_ids)} with {starter.card.name}")
    starter_runs = segment_cases(starter, test_files, out / "starter", probabilities=True, evaluate=True,
                                 device=settings.device, on_event=on_event, cancel=cancel)
    starter_per_case = {r["case_id"]: {k: r["metrics"].get(k) for k in METRICS} for r in starter_runs}
    starter_metrics = starter_per_case[first.case_id]
    emit(on_event, C.EVENT_LOG, stage="demo", message=f"{starter.card.name} on {first.case_id}: " + ", ".join(
        f"{k} {_fmt(v)}" for k, v in starter_metrics.items()))
    del starter

    result = DemoResult(
        out_dir=out, model={"name": resolve_name(model_dir), "path": str(model_dir)},
        cases={"train": train_ids, "test": test_ids},
        starter={"case_id": first.case_id, **starter_metrics, "segmentation": starter_runs[0]["outputs"]["labels"],
                 "mean": {k: _mean([m[k] for m in starter_per_case.values()]) for k in METRICS},
                 "per_case": starter_per_case},
        settings=asdict(settings))
    for index, technique in enumerate(DEMO_TECHNIQUES):
        cancel.check()
        _step(on_event, 3 + index, f"{technique}: fine-tuning on {', '.join(train_ids)} ({settings.iterations} "
                                   f"iterations, learning rate {settings.lr:g}), then evaluating on {len(test_ids)} held-out case(s)")
        config = TrainConfig(
            train_cases=tuple(train_dirs), output_model=str(out / "models" / technique),
            base_model=str(model_dir), technique=technique, iterations=settings.iterations,
            batch_size=settings.batch_size, lr=settings.lr, schedule="constant", val_every=settings.iterations,
            seed=settings.seed, device=settings.device, run_dir=str(out / "runs" / technique))
        trained = finetune(config, on_event=on_event, cancel=cancel)
        model = load_model(trained.model_path)
        runs = segment_cases(model, test_files, out / "eval" / technique, evaluate=True, device=settings.device,
                             on_event=on_event, cancel=cancel)
        analysis = analyze_model(model, train_dirs, test_dirs, seed=settings.seed,
                                 device=None if settings.device == "auto" else settings.device,
                                 on_event=on_event, cancel=cancel)
        written = analysis.save(out / "analysis" / technique,
                                title=f"{technique}: fine-tuned on {n_train} phantom(s), tested on {n_test}")
        per_case = {r["case_id"]: {k: r["metrics"].get(k) for k in METRICS} for r in runs}
        entry = {k: _mean([m[k] for m in per_case.values()]) for k in METRICS}
        entry.update(rare_shift=analysis.shift("rare"), nonrare_shift=analysis.shift("nonrare"),
                     per_case=per_case, model=str(trained.model_path), figure=str(written["figure"]),
                     train_seconds=trained.train_seconds)
        result.techniques[technique] = entry
        emit(on_event, C.EVENT_LOG, stage="demo", message=f"{technique}: " + ", ".join(
            f"{k} {_fmt(entry[k])}" for k in METRICS) + f", tumour logit shift {_fmt(entry['rare_shift'], signed=True)}")
    result.seconds = time.perf_counter() - started
    _write_json(out / RESULT_FILE, result.to_dict())
    return result


def resolve_name(model_dir: Path) -> str:
    """The card name of a model folder (the folder name when the card has none)."""
    from asymseg.modelfile import read_card

    try:
        return read_card(model_dir).name
    except ModelError:
        return model_dir.name


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["DEMO_TECHNIQUES", "STARTER_MODEL", "DemoResult", "DemoSettings", "prepare_out_dir",
           "resolve_demo_model", "run_demo"]
