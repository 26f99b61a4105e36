"""Experiments: a grid of training-set sizes x techniques x seeds, trained, evaluated and analysed.

- :func:`load_experiment_config`: a bundled config by name (``smoke``, ``paper-mini``) or a file.
- :func:`run_experiment`: runs the grid, resumable (finished cells are not recomputed), and writes
  results.csv, results.md and the figures (the paper's Fig. 1 and the logit diagnostic).
- :func:`dry_run`: the grid and its estimated cost, without running anything.
"""

from asymseg.experiment.config import ExperimentConfig, PhantomData
from asymseg.experiment.grid import Cell, build_cells, cell_subset, select_cells, subset_order
from asymseg.experiment.loading import bundled_configs, load_experiment_config
from asymseg.experiment.runner import (
    ExperimentResult,
    PlannedCell,
    dry_run,
    dry_run_lines,
    report_only,
    run_experiment,
)

__all__ = [
    "Cell", "ExperimentConfig", "ExperimentResult", "PhantomData", "PlannedCell", "build_cells",
    "bundled_configs", "cell_subset", "dry_run", "dry_run_lines", "load_experiment_config", "report_only", "run_experiment",
    "select_cells", "subset_order",
]
