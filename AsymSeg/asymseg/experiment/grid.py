"""The experiment grid: cells, nested training subsets, cell hashes, cell filters and cost estimates."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from asymseg.errors import InputError
from asymseg.experiment.config import DEFAULT_SECONDS_PER_CASE, DEFAULT_SECONDS_PER_UPDATE, ExperimentConfig

#: Bumped when a cell's result would differ for the same spec (invalidates finished cells).
CELL_FORMAT_VERSION = 1
#: Stream id that seeds the subset permutation (kept apart from the training seed's streams).
SUBSET_STREAM = 7


@dataclass(frozen=True)
class Cell:
    """One grid cell: train ``technique`` on ``n_train`` cases chosen with ``seed``.

    Attributes:
        index: position in the grid (rows: size, then technique, then seed).
        fraction: n_train / pool size.
        n_train: number of training cases.
        technique: technique preset name.
        seed: seeds the subset and the training.
    """

    index: int
    fraction: float
    n_train: int
    technique: str
    seed: int
    width: int = 2

    @property
    def id(self) -> str:
        """e.g. ``n04_a-focal_s0`` (sortable; technique names never contain ``_``)."""
        return f"n{self.n_train:0{self.width}d}_{self.technique}_s{self.seed}"


def build_cells(config: ExperimentConfig) -> list[Cell]:
    """All cells of the grid, smallest training set first, then techniques and seeds in config order."""
    sizes = config.sizes()
    width = max(2, len(str(max(n for _, n in sizes))))
    cells = []
    for fraction, n_train in sizes:
        for technique in config.techniques:
            for seed in config.seeds:
                cells.append(Cell(len(cells), fraction, n_train, technique, seed, width))
    return cells


def subset_order(pool_size: int, seed: int) -> list[int]:
    """A seeded permutation of the pool; a cell trains on its first ``n_train`` entries.

    Smaller subsets of the same seed are prefixes of larger ones (nested across fractions).
    """
    rng = np.random.default_rng([SUBSET_STREAM, int(seed)])
    return [int(i) for i in rng.permutation(pool_size)]


def cell_subset(pool: Sequence[str], cell: Cell) -> list[str]:
    """The training cases of a cell (first ``n_train`` of the seed's permutation)."""
    order = subset_order(len(pool), cell.seed)
    return [pool[i] for i in order[: cell.n_train]]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def cell_spec(config: ExperimentConfig, cell: Cell, train_ids: Sequence[str], test_ids: Sequence[str],
              data_fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that determines a cell's result (hashed to decide whether it must be recomputed)."""
    return {
        "format": CELL_FORMAT_VERSION,
        "data": dict(data_fingerprint),
        "train_cases": list(train_ids),
        "test_cases": list(test_ids),
        "technique": cell.technique,
        "technique_overrides": dict(config.technique_overrides.get(cell.technique, {})),
        "seed": cell.seed,
        "model": dict(config.model),
        "target": dict(config.target),
        "train": dict(config.train),
        "evaluate": dict(config.evaluate),
        "analyze": {"max_nonrare": config.max_nonrare, "bins": config.bins},
    }


def spec_hash(spec: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a cell spec (first 16 hex digits)."""
    return hashlib.sha256(canonical_json(spec).encode("utf-8")).hexdigest()[:16]


_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def select_cells(cells: Sequence[Cell], patterns: Sequence[str] | None) -> list[Cell]:
    """Cells matching any pattern: an index (``3``), an index range (``0-5``, inclusive) or a glob on
    the cell id (``n04_*``, ``*_a-focal_*``); several patterns may be comma-separated.

    Raises:
        InputError: a pattern matches no cell.
    """
    if not patterns:
        return list(cells)
    chosen: set[int] = set()
    for raw in patterns:
        for pattern in (p.strip() for p in raw.split(",")):
            if not pattern:
                continue
            match = _RANGE.match(pattern)
            if match:
                low = int(match.group(1))
                high = int(match.group(2)) if match.group(2) is not None else low
                hits = {c.index for c in cells if low <= c.index <= high}
            else:
                hits = {c.index for c in cells if fnmatch.fnmatchcase(c.id, pattern)}
            if not hits:
                raise InputError(f"--cells {pattern!r} matches no cell (ids look like {cells[0].id}; "
                                 f"indices 0-{len(cells) - 1})")
            chosen |= hits
    return [c for c in cells if c.index in chosen]


#: Relative cost of each step of an iteration, in forward+backward passes of one batch: the
#: adversarial step also computes the gradient that gives its direction.
STEP_WORK: dict[str, int] = {"clean": 1, "adversarial": 2, "mixup": 1}


def updates_per_iteration(technique: str, overrides: Mapping[str, Any] | None = None) -> int:
    """Optimiser updates per iteration: the clean step, plus the AT step, plus the mixup step."""
    from asymseg.techniques import get_technique

    return len(get_technique(technique, **dict(overrides or {})).steps)


def work_per_iteration(technique: str, overrides: Mapping[str, Any] | None = None) -> int:
    """Forward+backward passes per iteration (:data:`STEP_WORK` summed over the technique's steps)."""
    from asymseg.techniques import get_technique

    return sum(STEP_WORK.get(step, 1) for step in get_technique(technique, **dict(overrides or {})).steps)


@dataclass(frozen=True)
class CostModel:
    """Seconds per unit of training work (one forward+backward pass of a batch, see
    :func:`work_per_iteration`) and per inferred case, measured or configured."""

    seconds_per_update: float
    seconds_per_case: float
    measured: bool

    def cell_seconds(self, config: ExperimentConfig, cell: Cell, n_test: int) -> float:
        iterations = int(config.train.get("iterations", 1000))
        work = iterations * work_per_iteration(cell.technique, config.technique_overrides.get(cell.technique))
        return work * self.seconds_per_update + (cell.n_train + n_test) * self.seconds_per_case


def cost_model(config: ExperimentConfig, finished: Sequence[Mapping[str, Any]] = ()) -> CostModel:
    """Median measured costs of finished cells when there are any, else the config's ``estimate``."""
    per_update = [r["timing"]["train_seconds"] / r["timing"]["work"] for r in finished
                  if r.get("timing", {}).get("work")]
    per_case = [r["timing"]["infer_seconds"] / r["timing"]["cases_inferred"] for r in finished
                if r.get("timing", {}).get("cases_inferred")]
    if per_update and per_case:
        return CostModel(float(np.median(per_update)), float(np.median(per_case)), True)
    return CostModel(float(config.estimate.get("seconds_per_update", DEFAULT_SECONDS_PER_UPDATE)),
                     float(config.estimate.get("seconds_per_case", DEFAULT_SECONDS_PER_CASE)), False)
