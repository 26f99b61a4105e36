"""``asymseg experiment``: the data-fraction study (sizes x techniques x seeds), resumable."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from asymseg import constants as C


def register(subparsers) -> argparse.ArgumentParser:
    from asymseg.cli import HelpFormatter

    parser = subparsers.add_parser(
        "experiment",
        help="run a grid of training-set sizes x techniques x seeds: train, evaluate, analyse logits",
        description="Train every cell of an experiment grid (training-set fraction x technique x seed) on "
        "phantom cases or given case lists, evaluate on a fixed test set (DSC, sensitivity, precision), run "
        "the logit diagnostic, and write results.csv, results.md and figures to --out. Finished cells are "
        "not recomputed, so an interrupted run continues where it stopped. Bundled configs: smoke, "
        "paper-mini, brats2015-pair (give --train-case and --test-case). On a busy machine, "
        "`asymseg --threads 1 experiment ...` is often faster.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--config", required=True,
                        help="bundled config name (smoke, paper-mini, brats2015-pair) or a JSON/YAML file")
    parser.add_argument("--out", required=True, type=Path, help="experiment folder (created, or reused to resume)")
    parser.add_argument("--train-case", action="append", default=None, metavar="DIR",
                        help="training-pool case folder (repeatable); with --test-case, replaces the config's "
                             "phantoms or case lists")
    parser.add_argument("--test-case", action="append", default=None, metavar="DIR",
                        help="test case folder (repeatable)")
    parser.add_argument("--seeds", type=_seed_list, default=None, metavar="LIST",
                        help="seeds that replace the config's, e.g. 0,1,2 (finished cells of the config's own "
                             "seeds are kept, so this extends a finished run)")
    parser.add_argument("--cells", action="append", default=None, metavar="PATTERN",
                        help="run only these cells: an index (3), a range (0-5) or a glob on the cell id "
                             "(n04_*, *_a-focal_*); repeatable or comma-separated")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the grid and the estimated cost, run nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite results.csv, results.md and the figures from the finished cells; run nothing")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    parser.set_defaults(func=run)
    return parser


def _seed_list(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2] (non-negative integers, no repeats)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative integers, got {text!r}")
    return seeds


def run(args: argparse.Namespace, ctx) -> int:
    from asymseg.events import json_safe
    from asymseg.experiment import dry_run, dry_run_lines, load_experiment_config, report_only, run_experiment

    config = load_experiment_config(args.config, train_cases=args.train_case, test_cases=args.test_case,
                                    seeds=args.seeds)
    if args.dry_run:
        planned, costs = dry_run(config, args.out, cells=args.cells)
        if args.json:
            ctx.stdout.write(json.dumps(json_safe({
                "name": config.name, "source": config.source,
                "cells": [{"id": p.cell.id, "index": p.cell.index, "n_train": p.cell.n_train,
                           "fraction": p.cell.fraction, "technique": p.cell.technique, "seed": p.cell.seed,
                           "train_cases": [Path(c).name for c in p.train_cases], "finished": p.finished,
                           "estimated_seconds": p.estimated_seconds} for p in planned],
                "estimated_seconds": sum(p.estimated_seconds for p in planned if not p.finished),
                "cost_model": {"seconds_per_update": costs.seconds_per_update,
                               "seconds_per_case": costs.seconds_per_case, "measured": costs.measured},
            }), indent=2, allow_nan=False) + "\n")
        else:
            ctx.stdout.write("\n".join(dry_run_lines(config, planned, costs)) + "\n")
        return C.EXIT_OK
    if args.report_only:
        result = report_only(config, args.out)
    else:
        renderer = ctx.renderer()
        try:
            result = run_experiment(config, args.out, cells=args.cells, on_event=renderer, cancel=ctx.cancel)
        finally:
            renderer.close()
    summary = {"out_dir": str(result.out_dir), "ran": result.ran, "skipped": result.skipped,
               "missing": result.missing, "cells_in_table": len(result.rows), "seconds": result.seconds,
               "files": {k: str(v) for k, v in result.files.items()}}
    if args.json:
        ctx.stdout.write(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    else:
        ctx.stdout.write((result.out_dir / "results.md").read_text(encoding="utf-8"))
        ctx.stdout.write(f"ran {len(result.ran)} cell(s), skipped {len(result.skipped)} finished, "
                         f"{len(result.missing)} not finished; {result.seconds:.0f} s\n")
        for path in result.files.values():
            ctx.stdout.write(f"wrote {path}\n")
    return C.EXIT_OK
