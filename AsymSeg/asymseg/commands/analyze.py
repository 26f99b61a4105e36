"""``asymseg analyze``: the paper's logit diagnostic of a model on training vs unseen cases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from asymseg import constants as C
from asymseg.errors import InputError


def register(subparsers) -> argparse.ArgumentParser:
    from asymseg.cli import HelpFormatter
    from asymseg.diagnostics.collect import DEFAULT_MAX_NONRARE

    parser = subparsers.add_parser(
        "analyze",
        help="logit diagnostic: where do unseen rare-class voxels fall relative to the decision boundary?",
        description="Run a model on its training cases and on unseen cases, and compare the distributions "
        "of the decision variable dz = z_rare - max(other logits) (binary: z_fg - z_bg) inside the brain "
        "mask, for ground-truth rare and non-rare voxels (Li, Kamnitsas & Glocker 2019, Fig. 2/4). Writes "
        "analysis.json (counts, means, quantiles, wrong-side fractions, shifts test - train, histograms, "
        "per-case numbers) and logits.png to --out.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model folder or registry name")
    parser.add_argument("--train-case", action="append", metavar="DIR", default=None,
                        help="a case the model was trained on (repeatable)")
    parser.add_argument("--train-cases-from", metavar="FILE", default=None,
                        help="text file with one training case folder per line")
    parser.add_argument("--test-case", action="append", metavar="DIR", default=None,
                        help="an unseen case (repeatable)")
    parser.add_argument("--test-cases-from", metavar="FILE", default=None,
                        help="text file with one unseen case folder per line")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--max-nonrare", type=int, default=DEFAULT_MAX_NONRARE,
                        help="cap on non-rare voxels per group (train/test), split over cases in proportion "
                             "to their size; 0 keeps all. Rare voxels are never subsampled")
    parser.add_argument("--seed", type=int, default=0, help="seed of the non-rare subsample")
    parser.add_argument("--bins", type=int, default=80, help="histogram bins")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--tile", type=int, default=None, help="largest inference tile edge (default: automatic)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a case whose plausibility checks fail (skull left in, very thick slices, "
                             "CT-like intensities) instead of analysing it with a warning")
    from asymseg.io.cli_args import add_reference_channel_argument

    add_reference_channel_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    parser.set_defaults(func=run)
    return parser


def _cases(args: argparse.Namespace, which: str) -> list[Path]:
    from asymseg.io import read_case_list

    folders = [Path(p) for p in (getattr(args, f"{which}_case") or [])]
    listed = getattr(args, f"{which}_cases_from")
    if listed:
        names = read_case_list(listed)
        if not names:
            raise InputError(f"{listed}: the case list names no case folder")
        folders.extend(names)
    if not folders:
        raise InputError(f"no {which} case given: pass --{which}-case DIR or --{which}-cases-from FILE")
    unique: list[Path] = []
    for folder in folders:
        if folder not in unique:
            unique.append(folder)
    return unique


def summary(result, written: dict[str, Path]) -> dict[str, Any]:
    """The compact JSON printed by ``--json`` (no histograms or per-case numbers: see analysis.json)."""
    classes = {}
    for name, numbers in result.classes.items():
        classes[name] = {
            "shift": numbers["shift"],
            "groups": {group: {side: {k: stats[side][k] for k in ("count", "mean", "std", "wrong_side")}
                               for side in ("rare", "nonrare")}
                       | {"nonrare_total": stats["nonrare_total"], "nonrare_kept": stats["nonrare_kept"]}
                       for group, stats in numbers["groups"].items()},
        }
    return {"files": {k: str(v) for k, v in written.items()}, "settings": result.settings, "classes": classes}


def run(args: argparse.Namespace, ctx) -> int:
    from asymseg.diagnostics import analyze_model
    from asymseg.events import json_safe

    train_cases = _cases(args, "train")
    test_cases = _cases(args, "test")
    overlap = sorted(set(map(str, train_cases)) & set(map(str, test_cases)))
    if overlap:
        raise InputError(f"{overlap[0]}: given both as a training and as an unseen case")
    if args.max_nonrare < 0:
        raise InputError(f"--max-nonrare must be >= 0 (0 keeps all), got {args.max_nonrare}")
    if args.bins < 2:
        raise InputError(f"--bins must be >= 2, got {args.bins}")
    if args.tile is not None and args.tile < 1:
        raise InputError(f"--tile must be >= 1, got {args.tile}")
    from asymseg.io import discover_case
    from asymseg.io.cli_args import check_output_path

    check_output_path(args.out, "--out", folder=True)
    for folder in [*train_cases, *test_cases]:  # missing folders or files fail now, not after inference
        discover_case(folder)
    renderer = ctx.renderer()
    try:
        result = analyze_model(
            args.model, train_cases, test_cases, max_nonrare=args.max_nonrare or None, seed=args.seed,
            bins=args.bins, device=args.device, tile=None if args.tile is None else (args.tile,) * 3,
            on_event=renderer, cancel=ctx.cancel, strict=args.strict, reference_channel=args.reference_channel,
        )
        written = result.save(args.out, title=f"{Path(str(args.model)).name}: train vs unseen cases")
    finally:
        renderer.close()
    if args.json:
        ctx.stdout.write(json.dumps(json_safe(summary(result, written)), indent=2, allow_nan=False) + "\n")
    else:
        for line in result.summary_lines():
            ctx.stdout.write(line + "\n")
        for path in written.values():
            ctx.stdout.write(f"wrote {path}\n")
    return C.EXIT_OK
