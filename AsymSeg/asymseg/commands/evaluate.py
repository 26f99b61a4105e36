"""``asymseg evaluate --prediction P --reference R``: DSC, sensitivity, precision, specificity, HD95, volumes."""

from __future__ import annotations

import argparse
import json
from typing import Any

from asymseg import constants as C
from asymseg.cli import HelpFormatter

#: Rows of the human-readable table: (key, label, format).
_ROWS = (
    ("dsc", "DSC", "{:.4f}"),
    ("sensitivity", "sensitivity", "{:.4f}"),
    ("precision", "precision", "{:.4f}"),
    ("specificity", "specificity", "{:.6f}"),
    ("hd95", "HD95 (mm)", "{:.2f}"),
    ("hausdorff", "Hausdorff (mm)", "{:.2f}"),
    ("volume_prediction_ml", "volume prediction (ml)", "{:.2f}"),
    ("volume_reference_ml", "volume reference (ml)", "{:.2f}"),
    ("tp", "true positives", "{:,}"),
    ("fp", "false positives", "{:,}"),
    ("fn", "false negatives", "{:,}"),
    ("tn", "true negatives", "{:,}"),
)


def register(subparsers) -> argparse.ArgumentParser:
    from asymseg.io import add_target_arguments

    parser = subparsers.add_parser(
        "evaluate",
        help="compare a predicted mask with a reference: DSC, sensitivity, precision, specificity, HD95, volumes",
        description="Compare a prediction with a reference segmentation on the same grid. Maps with values "
        "in {0, 1} are used as they are; label maps (e.g. BraTS labels) become the tumour core of the label "
        "convention (guessed when unambiguous). Empty masks follow the BraTS rules: both empty gives DSC 1 "
        "and HD95 0; one empty gives DSC 0 and HD95 373.13 mm.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--prediction", required=True, metavar="PATH", help="predicted mask or label map")
    parser.add_argument("--reference", required=True, metavar="PATH", help="reference mask or label map")
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)
    return parser


def format_result(result: dict[str, Any]) -> str:
    """The human-readable table of :func:`asymseg.metrics.evaluate_files`."""
    lines = [f"prediction  {result['prediction']}", f"reference   {result['reference']}"]
    target = result["target"]
    if target is not None:
        labels = ",".join(str(v) for c in target["classes"] if c["rare"] for v in c["labels"])
        how = target["convention"] or "foreground labels"
        if result["target_guessed"]:
            how += ", guessed from the label values"
        lines.append(f"foreground  labels {labels} ({how})")
    lines.append("")
    width = max(len(label) for _, label, _ in _ROWS)
    for key, label, fmt in _ROWS:
        value = result["metrics"][key]
        text = "n/a" if value is None else fmt.format(value)
        lines.append(f"{label:<{width}}  {text}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, ctx) -> int:
    from asymseg.events import json_safe
    from asymseg.metrics import evaluate_files

    result = evaluate_files(args.prediction, args.reference, convention=args.label_convention,
                            foreground_labels=args.foreground_labels)
    if args.json:
        ctx.stdout.write(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
    else:
        ctx.stdout.write(format_result(result))
    return C.EXIT_OK
