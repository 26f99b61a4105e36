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

import fnmatch
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asymseg import constants as C
from asymseg.diagnostics.result import atomic_write_bytes
from asymseg.errors import InputError
from asymseg.events import CancelToken, EventCallback, emit, format_duration
from asymseg.experiment.cell import CaseCache, PlannedCell, load_cell_result, read_json, run_cell, write_json
from asymseg.experiment.config import ExperimentConfig
from asymseg.experiment.data import ExperimentData, expected_data, prepare_data
from asymseg.experiment.grid import (
    Cell,
    CostModel,
    build_cells,
    cell_spec,
    cell_subset,
    cost_model,
    select_cells,
    spec_hash,
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


def _without_run_estimates(on_event: EventCallback | None) -> EventCallback | None:
    """``on_event`` without the time estimate each cell's training run writes (the experiment
    writes one for all its cells)."""
    if on_event is None:
        return None

    def forward(event):
        if not (event.kind == C.EVENT_LOG and event.stage == "train" and "estimated_seconds" in event.data):
            on_event(event)

    return forward


def _emit_estimate(config: ExperimentConfig, data: ExperimentData, out_dir: Path, cells: Sequence[Cell],
                   left: Sequence[PlannedCell], on_event: EventCallback | None) -> None:
    """After the first cell run here: the time the remaining cells will take, from the cells
    measured so far on this machine."""
    if not left:
        return
    estimates = {p.cell.id: p.estimated_seconds for p in plan(config, data, out_dir, cells)}
    seconds = sum(estimates[p.cell.id] for p in left)
    emit(on_event, C.EVENT_LOG, stage="experiment",
         message=f"estimate: about {format_duration(seconds)} for the remaining {len(left)} cell(s) on this "
                 "machine (from the cells measured so far)", estimated_seconds=seconds)


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


def _logit_figure_cells(config: ExperimentConfig, cells: Sequence[Cell]) -> set[str]:
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
    other_seeds = _other_seeds(out_dir, config)
    if other_seeds:
        listed = ",".join(map(str, (*config.seeds, *other_seeds)))
        notes.append(f"This folder also holds finished cells of seed(s) {', '.join(map(str, other_seeds))}, "
                     f"not in this report: add --seeds {listed} to include them.")
    undefined = sum(results[c]["metrics"].get("undefined", {}).get("precision", 0) for c in results)
    if undefined:
        notes.append(f"Precision is averaged over the test cases where it is defined; {undefined} case "
                     "evaluation(s) had an empty prediction (no precision; sensitivity 0, DSC 0).")
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
                analysis = read_json(out_dir / "cells" / cell.id / "analysis" / "analysis.json")
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
    write_json(out / "experiment.json", {"config": config.to_dict(), "source": config.source})
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
    cache = CaseCache(channels)
    emit(on_event, C.EVENT_START, stage="experiment", total=len(todo),
         message=f"experiment {config.name}: {len(todo)} cell(s), "
                 f"{sum(p.finished for p in todo)} already finished")
    cell_events = _without_run_estimates(on_event)
    estimated = False
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
                                   on_event=cell_events, cancel=cancel)
            result.ran.append(item.cell.id)
            mean = cell_result["metrics"]["mean"]
            emit(on_event, C.EVENT_LOG, stage="experiment",
                 message=f"{item.cell.id}: DSC {_pct(mean['dsc'])}, sensitivity {_pct(mean['sensitivity'])}, "
                         f"precision {_pct(mean['precision'])}, rare shift "
                         f"{_num(cell_result['analysis']['shift_rare'])} "
                         f"({cell_result['timing']['total_seconds']:.0f} s)",
                 cell=item.cell.id, metrics=mean, shift_rare=cell_result["analysis"]["shift_rare"])
        if not item.finished and not estimated:
            estimated = True
            _emit_estimate(config, data, out, all_cells, [p for p in todo[done:] if not p.finished], on_event)
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
        from asymseg.registry import load_model

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


def _other_seeds(out_dir: Path, config: ExperimentConfig) -> list[int]:
    """Seeds of finished cell folders (``*_s<seed>/result.json``) that the config does not list."""
    found = set()
    for result in (out_dir / "cells").glob("*_s*/result.json"):
        seed = result.parent.name.rpartition("_s")[2]
        if seed.isdigit():
            found.add(int(seed))
    return sorted(found - set(config.seeds))


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
