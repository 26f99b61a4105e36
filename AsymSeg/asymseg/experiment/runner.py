"""Run an experiment grid: data, per-cell training, evaluation and analysis, resumable; then the report.

Layout of the output folder::

    experiment.json                 the resolved config
    data/train, data/test           generated phantom cases (phantom configs only)
    cells/<cell id>/result.json     written last: a cell is finished when it exists with the cell's hash
    cells/<cell id>/model           the trained model
    cells/<cell id>/analysis        analysis.json of the logit diagnostic
    results.csv, results.md         one row per finished cell; mean ± sd over seeds
    figures/metrics.png             DSC / sensitivity / precision vs data fraction (the paper's Fig. 1)
    figures/logit_shift.png         rare / non-rare logit shifts vs data fraction
    figures/logits_n<k>.png         dz densities per technique at the smallest and largest training set
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from asymseg import constants as C
from asymseg.diagnostics.collect import case_samples
from asymseg.diagnostics.result import analyze_classes, atomic_write_bytes
from asymseg.diagnostics.stats import CaseSample
from asymseg.errors import InputError
from asymseg.events import CancelToken, Event, EventCallback, emit, json_safe
from asymseg.experiment.config import ExperimentConfig, training_fields
from asymseg.experiment.grid import (
    Cell,
    CostModel,
    build_cells,
    cell_spec,
    cell_subset,
    cost_model,
    select_cells,
    spec_hash,
    updates_per_iteration,
    work_per_iteration,
)
from asymseg.experiment.report import (
    cell_row,
    figure_png,
    metrics_figure,
    results_csv,
    results_markdown,
    shift_figure,
)

log = logging.getLogger(__name__)

CELL_RESULT_FORMAT = "asymseg-experiment-cell"
CELL_RESULT_VERSION = 1
RESULT_FILE = "result.json"
#: Metrics averaged over test cases for the table.
HEADLINE_METRICS = ("dsc", "sensitivity", "precision", "specificity", "hd95")


@dataclass
class ExperimentResult:
    """What a run did and where its outputs are.

    Attributes:
        out_dir: the experiment folder.
        cells: every cell of the grid.
        ran: ids of cells computed in this run.
        skipped: ids of selected cells that were already finished.
        rows: one results.csv row per finished cell of the grid (this run or earlier).
        files: written report files by role.
        seconds: wall time of this run.
    """

    out_dir: Path
    cells: list[Cell]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def missing(self) -> list[str]:
        """Cells of the grid without a finished result."""
        done = {r["cell"] for r in self.rows}
        return [c.id for c in self.cells if c.id not in done]


@dataclass(frozen=True)
class PlannedCell:
    """A cell with its training cases, hash and estimated cost (what --dry-run prints)."""

    cell: Cell
    train_cases: tuple[str, ...]
    hash: str
    finished: bool
    estimated_seconds: float


def _write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(json_safe(data), indent=1, allow_nan=False) + "\n").encode("utf-8"))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# -- data ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExperimentData:
    """The training pool and the fixed test set (case folders), and what identifies them."""

    pool: tuple[str, ...]
    test: tuple[str, ...]
    fingerprint: dict[str, Any]

    @staticmethod
    def case_id(folder: str) -> str:
        return Path(folder).name


def _phantom_folder(folder: Path, count: int, first_index: int, config: ExperimentConfig,
                    on_event: EventCallback | None, cancel: CancelToken | None) -> list[str]:
    from asymseg.phantom import read_phantom_manifest, write_phantom_cases
    from asymseg.phantom.writer import case_id_for

    p = config.phantom
    ids = [case_id_for(first_index + i) for i in range(count)]
    settings = {"seed": p.seed, "size_xyz": list(p.size), "spacing_xyz": list(p.spacing), "channels": list(p.channels)}
    if (folder / "phantom.json").is_file():
        manifest = read_phantom_manifest(folder)
        listed = {c["case_id"] for c in manifest["cases"]}
        same = all(manifest.get(k) == v for k, v in settings.items())
        if same and all(i in listed and (folder / i).is_dir() for i in ids):
            return [str(folder / i) for i in ids]
    paths = write_phantom_cases(folder, count, size=p.size, seed=p.seed, channels=p.channels, spacing=p.spacing,
                                first_index=first_index, overwrite=True, on_event=on_event, cancel=cancel)
    return [str(path) for path in paths]


def prepare_data(config: ExperimentConfig, out_dir: Path, *, on_event: EventCallback | None = None,
                 cancel: CancelToken | None = None) -> ExperimentData:
    """Generate (or reuse) the phantom cases, or take the config's case lists.

    Phantom training cases are indices 0..train-1 of the phantom seed, test cases the next ``test``
    indices, so the two sets never share a case.
    """
    if config.phantom is None:
        for folder in (*config.train_cases, *config.test_cases):
            if not Path(folder).is_dir():
                raise InputError(f"{config.source}: {folder}: case folder does not exist")
        fingerprint = {"kind": "cases", "train_cases": list(config.train_cases), "test_cases": list(config.test_cases)}
        return ExperimentData(tuple(config.train_cases), tuple(config.test_cases), fingerprint)
    from asymseg.phantom.generate import GENERATOR_VERSION

    p = config.phantom
    pool = _phantom_folder(out_dir / "data" / "train", p.train, 0, config, on_event, cancel)
    test = _phantom_folder(out_dir / "data" / "test", p.test, p.train, config, on_event, cancel)
    fingerprint = {"kind": "phantom", "generator_version": GENERATOR_VERSION, **p.to_dict()}
    return ExperimentData(tuple(pool), tuple(test), fingerprint)


# -- planning -------------------------------------------------------------------------------------
def load_cell_result(out_dir: Path, cell: Cell) -> dict[str, Any] | None:
    """The cell's result.json content when it is a finished result, else None."""
    data = _read_json(out_dir / "cells" / cell.id / RESULT_FILE)
    if not isinstance(data, dict) or data.get("format") != CELL_RESULT_FORMAT or data.get("status") != "done":
        return None
    return data


def plan(config: ExperimentConfig, data: ExperimentData, out_dir: Path,
         cells: Sequence[Cell] | None = None) -> list[PlannedCell]:
    """Training cases, hash, finished state and estimated seconds of each cell."""
    cells = list(cells if cells is not None else build_cells(config))
    test_ids = [ExperimentData.case_id(t) for t in data.test]
    finished_results = []
    planned = []
    for cell in cells:
        subset = cell_subset(data.pool, cell)
        digest = spec_hash(cell_spec(config, cell, [ExperimentData.case_id(s) for s in subset], test_ids,
                                     data.fingerprint))
        result = load_cell_result(out_dir, cell)
        finished = result is not None and result.get("hash") == digest
        if finished:
            finished_results.append(result)
        planned.append((cell, tuple(subset), digest, finished))
    costs = cost_model(config, finished_results)
    return [PlannedCell(cell, subset, digest, finished, costs.cell_seconds(config, cell, len(data.test)))
            for cell, subset, digest, finished in planned]


# -- one cell -------------------------------------------------------------------------------------
class _CaseCache:
    """Loaded cases (image, label, mask) by folder, shared by every cell of a run."""

    def __init__(self, channels: Sequence[str]) -> None:
        self.channels = tuple(channels)
        self._cases: dict[str, Any] = {}

    def get(self, folder: str):
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
    out = {}
    for key in HEADLINE_METRICS:
        values = [float(c[key]) for c in per_case if c.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def _evaluate(net, case, target, rare_indices: Sequence[int], *, device: str, tile, cancel) -> tuple[dict, np.ndarray]:
    """Metrics of the rare-class mask and the logits of one case."""
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


def run_cell(config: ExperimentConfig, planned: PlannedCell, data: ExperimentData, out_dir: Path, cache: _CaseCache,
             *, logit_figure: bool, on_event: EventCallback | None, cancel: CancelToken | None) -> dict[str, Any]:
    """Train, evaluate and analyse one cell; write its result.json last. Returns the result."""
    from asymseg.modelfile import load_model
    from asymseg.target import TargetSpec
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
    card = loaded.card
    target_data = card["target"] if isinstance(card, Mapping) else card.target
    target = target_data if isinstance(target_data, TargetSpec) else TargetSpec.from_dict(target_data)
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
        _write_json(analysis_dir / "analysis.json", analysis.to_dict())
    first = analysis.classes[rare_names[0]]
    iterations = int(getattr(train_result, "iterations", None) or train_config.iterations)
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
        "metrics": {"mean": _mean_metrics(per_case_metrics), "per_case": per_case_metrics},
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
    _write_json(cell_dir / RESULT_FILE, result)
    return result


def _train_summary(train_result: Any) -> dict[str, Any]:
    """JSON-safe fields of a TrainResult (whatever it carries)."""
    if train_result is None:
        return {}
    if hasattr(train_result, "to_dict"):
        data = train_result.to_dict()
    elif hasattr(train_result, "__dataclass_fields__"):
        data = {k: getattr(train_result, k) for k in train_result.__dataclass_fields__}
    else:
        return {}
    keep = {}
    for key, value in data.items():
        if key == "iterations":
            continue
        value = json_safe(value)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            value = str(value)
        keep[key] = value
    return keep


# -- the whole grid --------------------------------------------------------------------------------
def _logit_figure_cells(config: ExperimentConfig, cells: Sequence[Cell]) -> set[str]:
    import fnmatch

    patterns = config.figures.get("logit_cells", [])
    return {c.id for c in cells if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)}


def write_report(config: ExperimentConfig, out_dir: Path, cells: Sequence[Cell],
                 hashes: Mapping[str, str]) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """results.csv, results.md and figures from every finished, up-to-date cell of the grid."""
    from asymseg.diagnostics.plots import logit_figure

    results = {}
    for cell in cells:
        result = load_cell_result(out_dir, cell)
        if result is not None and result.get("hash") == hashes.get(cell.id):
            results[cell.id] = result
    rows = [cell_row(results[c.id]) for c in cells if c.id in results]
    files: dict[str, Path] = {}
    atomic_write_bytes(out_dir / "results.csv", results_csv(rows).encode("utf-8"))
    files["csv"] = out_dir / "results.csv"
    missing = [c.id for c in cells if c.id not in results]
    pool = config.pool_size
    notes = [f"Config `{config.name}` from {config.source}; training pool {pool} case(s); "
             f"{len(rows)} of {len(cells)} cell(s) finished.",
             f"Techniques: {', '.join(config.techniques)}; seeds: {', '.join(map(str, config.seeds))}; "
             f"training sets: {', '.join(str(n) for _, n in config.sizes())} case(s)."]
    if missing:
        notes.append(f"Not finished: {', '.join(missing)}.")
    figures_dir = out_dir / "figures"
    if rows:
        title = f"{config.name}: test metrics vs training-set fraction"
        atomic_write_bytes(figures_dir / "metrics.png", figure_png(metrics_figure(rows, config.techniques, title=title)))
        files["metrics_figure"] = figures_dir / "metrics.png"
        title = f"{config.name}: logit shift (test - train) vs training-set fraction"
        atomic_write_bytes(figures_dir / "logit_shift.png",
                           figure_png(shift_figure(rows, config.techniques, title=title)))
        files["shift_figure"] = figures_dir / "logit_shift.png"
        sizes = sorted({c.n_train for c in cells})
        for n_train in sorted({sizes[0], sizes[-1]}):
            columns, names = {}, {}
            for cell in cells:
                if cell.n_train != n_train or cell.seed != config.seeds[0] or cell.id not in results:
                    continue
                analysis = _read_json(out_dir / "cells" / cell.id / "analysis" / "analysis.json")
                if not analysis:
                    continue
                class_name = results[cell.id]["analysis"]["class"]
                columns[cell.technique] = analysis["classes"][class_name]
                names[cell.technique] = class_name
            if columns:
                fig = logit_figure(columns, class_names=names,
                                   title=f"{config.name}: dz of train vs test voxels, {n_train} training case(s), "
                                         f"seed {config.seeds[0]}")
                path = figures_dir / f"logits_n{n_train}.png"
                atomic_write_bytes(path, figure_png(fig, dpi=80))
                files[f"logits_n{n_train}"] = path
    markdown = results_markdown(rows, config.techniques, title=f"Results: {config.name}", notes=notes)
    if rows:
        markdown += "\n" + "\n".join(f"![{role}]({path.relative_to(out_dir).as_posix()})"
                                     for role, path in files.items() if path.suffix == ".png") + "\n"
    atomic_write_bytes(out_dir / "results.md", markdown.encode("utf-8"))
    files["markdown"] = out_dir / "results.md"
    return rows, files


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | os.PathLike[str],
    *,
    cells: Sequence[str] | None = None,
    on_event: EventCallback | None = None,
    cancel: CancelToken | None = None,
) -> ExperimentResult:
    """Run the grid (or the cells matching ``cells``), skipping finished cells, then write the report.

    Args:
        config: the validated experiment config.
        out_dir: the experiment folder (created if missing; reused to resume).
        cells: cell filters (indices, ranges or globs on cell ids; see :func:`select_cells`).
        on_event: progress callback: stage "experiment" per cell, the training and evaluation events
            of each cell (with ``cell`` in their data), and a "log" event with ``skipped: true`` for each
            finished cell that is not recomputed.
        cancel: checked between and inside cells; a cancelled cell leaves no result and is redone.

    Returns:
        An :class:`ExperimentResult`.

    Raises:
        InputError: bad cell filters or case folders.
        Cancelled: the token was cancelled (finished cells are kept).
    """
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "experiment.json", {"config": config.to_dict(), "source": config.source})
    all_cells = build_cells(config)
    selected = select_cells(all_cells, cells)
    data = prepare_data(config, out, on_event=on_event, cancel=cancel)
    planned = plan(config, data, out, all_cells)
    hashes = {p.cell.id: p.hash for p in planned}
    chosen = {c.id for c in selected}
    todo = [p for p in planned if p.cell.id in chosen]
    result = ExperimentResult(out, all_cells)
    figure_cells = _logit_figure_cells(config, all_cells)
    channels = _model_channels(config)
    cache = _CaseCache(channels)
    emit(on_event, C.EVENT_START, stage="experiment", total=len(todo),
         message=f"experiment {config.name}: {len(todo)} cell(s), "
                 f"{sum(p.finished for p in todo)} already finished")
    for done, item in enumerate(todo, start=1):
        if cancel is not None:
            cancel.check()
        if item.finished:
            result.skipped.append(item.cell.id)
            emit(on_event, C.EVENT_LOG, stage="experiment", message=f"{item.cell.id}: finished earlier, skipped",
                 cell=item.cell.id, skipped=True)
        else:
            emit(on_event, C.EVENT_LOG, stage="experiment",
                 message=f"{item.cell.id}: training on {item.cell.n_train} case(s)", cell=item.cell.id,
                 skipped=False)
            cell_result = run_cell(config, item, data, out, cache, logit_figure=item.cell.id in figure_cells,
                                   on_event=on_event, cancel=cancel)
            result.ran.append(item.cell.id)
            mean = cell_result["metrics"]["mean"]
            emit(on_event, C.EVENT_LOG, stage="experiment",
                 message=f"{item.cell.id}: DSC {_pct(mean['dsc'])}, sensitivity {_pct(mean['sensitivity'])}, "
                         f"precision {_pct(mean['precision'])}, rare shift "
                         f"{_num(cell_result['analysis']['shift_rare'])} "
                         f"({cell_result['timing']['total_seconds']:.0f} s)",
                 cell=item.cell.id, metrics=mean, shift_rare=cell_result["analysis"]["shift_rare"])
        emit(on_event, C.EVENT_PROGRESS, stage="experiment", done=done, total=len(todo), cell=item.cell.id)
    result.rows, result.files = write_report(config, out, all_cells, hashes)
    result.seconds = time.perf_counter() - started
    emit(on_event, C.EVENT_DONE, stage="experiment", done=len(todo), total=len(todo),
         message=f"experiment {config.name}: ran {len(result.ran)}, skipped {len(result.skipped)}, "
                 f"{len(result.rows)}/{len(all_cells)} cell(s) in the table ({result.seconds:.0f} s)",
         ran=result.ran, skipped=result.skipped, files={k: str(v) for k, v in result.files.items()})
    return result


def _model_channels(config: ExperimentConfig) -> tuple[str, ...]:
    if "channels" in config.model:
        return tuple(config.model["channels"])
    if "base_model" in config.model:
        from asymseg.modelfile import load_model

        card = load_model(config.model["base_model"]).card
        return tuple(card["channels"] if isinstance(card, Mapping) else card.channels)
    raise InputError(f"{config.source}: model.channels: needed to train from scratch on case folders")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def dry_run_lines(config: ExperimentConfig, planned: Sequence[PlannedCell], costs: CostModel | None = None) -> list[str]:
    """The grid and its estimated cost as text lines (what ``--dry-run`` prints)."""
    todo = [p for p in planned if not p.finished]
    total = sum(p.estimated_seconds for p in todo)
    lines = [f"experiment {config.name} (config: {config.source}): {len(planned)} cell(s), {len(todo)} to run"]
    for p in planned:
        state = "finished" if p.finished else f"~{p.estimated_seconds / 60:.1f} min"
        lines.append(f"  [{p.cell.index:>3}] {p.cell.id:<24} n_train={p.cell.n_train:<3} "
                     f"fraction={p.cell.fraction:.2f}  {state}")
    lines.append(f"estimated time to run: {total / 60:.1f} min ({total / 3600:.2f} h)"
                 + ("" if costs is None else f" from {'measured cells' if costs.measured else 'the config estimate'}: "
                                              f"{costs.seconds_per_update:.3f} s per training pass "
                                              f"(forward+backward of a batch), {costs.seconds_per_case:.2f} s per "
                                              f"inferred case"))
    return lines


def expected_data(config: ExperimentConfig, out: Path) -> ExperimentData:
    """The data :func:`prepare_data` gives, named without generating or reading any file."""
    if config.phantom is None:
        return ExperimentData(tuple(config.train_cases), tuple(config.test_cases),
                              {"kind": "cases", "train_cases": list(config.train_cases),
                               "test_cases": list(config.test_cases)})
    from asymseg.phantom.generate import GENERATOR_VERSION
    from asymseg.phantom.writer import case_id_for

    p = config.phantom
    pool = tuple(str(out / "data" / "train" / case_id_for(i)) for i in range(p.train))
    test = tuple(str(out / "data" / "test" / case_id_for(p.train + i)) for i in range(p.test))
    return ExperimentData(pool, test, {"kind": "phantom", "generator_version": GENERATOR_VERSION, **p.to_dict()})


def report_only(config: ExperimentConfig, out_dir: str | os.PathLike[str]) -> ExperimentResult:
    """Rewrite results.csv, results.md and the figures from the finished cells; train nothing.

    Useful after a grid was split over several runs (``--cells``) or machines and the cell folders
    were gathered into one experiment folder.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"{out}: no experiment folder to report on")
    cells = build_cells(config)
    hashes = {p.cell.id: p.hash for p in plan(config, expected_data(config, out), out, cells)}
    result = ExperimentResult(out, cells)
    result.rows, result.files = write_report(config, out, cells, hashes)
    result.seconds = time.perf_counter() - started
    return result


def dry_run(config: ExperimentConfig, out_dir: str | os.PathLike[str], *,
            cells: Sequence[str] | None = None) -> tuple[list[PlannedCell], CostModel]:
    """Plan without running: cells (filtered), their finished state and cost. Generates no data.

    The training pool is named by position for phantom configs, so the plan needs no files.
    """
    out = Path(out_dir)
    data = expected_data(config, out)
    all_cells = build_cells(config)
    selected = {c.id for c in select_cells(all_cells, cells)}
    planned_all = plan(config, data, out, all_cells)
    finished = [load_cell_result(out, p.cell) for p in planned_all if p.finished]
    return [p for p in planned_all if p.cell.id in selected], cost_model(config, [f for f in finished if f])


__all__ = ["ExperimentResult", "PlannedCell", "dry_run", "dry_run_lines", "expected_data", "plan", "prepare_data",
           "report_only", "run_cell", "run_experiment", "write_report"]
