"""``asymseg operating-point``: choose threshold, post-processing and TTA on validation cases."""

from __future__ import annotations

import argparse
import json
from typing import Any

from asymseg import constants as C


def register(subparsers) -> argparse.ArgumentParser:
    from asymseg.cli import HelpFormatter

    parser = subparsers.add_parser(
        "operating-point",
        help="choose a model's decision threshold, post-processing and TTA on labelled validation cases",
        description="Run the model on labelled validation cases and choose the decision threshold on dz, the "
        "connected-component cleaning (none, largest, min-ml:V) and mirror TTA, each adopted only if no "
        "case loses DSC and the mean rises (nnU-Net's rule for its post-processing). With --fold-model, each "
        "case is scored by the model of the leave-one-out fold that did not train on it (for a model trained "
        "on all the cases). --write records the choice on the model's card, where 'asymseg segment' and the "
        "Slicer panel apply it.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="NAME|DIR", help="the model to calibrate")
    parser.add_argument("--val-case", action="append", required=True, metavar="DIR", dest="val_cases",
                        help="labelled validation case folder (repeatable)")
    parser.add_argument("--fold-model", action="append", default=None, metavar="NAME|DIR", dest="fold_models",
                        help="per --val-case, in order: the model that did not train on it (leave-one-out)")
    parser.add_argument("--tta", action="store_true", help="also consider mirror TTA (8x the inference time)")
    parser.add_argument("--write", action="store_true", help="record the chosen operating point on the model's card")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)
    return parser


def _table(result: dict[str, Any]) -> str:
    point = result["operating_point"]
    lines = [f"model {result['model']}",
             f"operating point: tumour where dz > {point['threshold']:g}, post-processing {point['postprocess']}, "
             f"TTA {'on' if point['tta'] else 'off'}" + (" (written to the card)" if result["written"] else "")]
    steps = point["validation"]["steps"]
    cases = point["validation"]["cases"]
    lines.append("DSC per case: " + ", ".join(cases))
    for step in steps:
        what = {"argmax": "argmax", "threshold": f"threshold {step.get('threshold', 0):g}",
                "postprocess": f"post-processing {step.get('postprocess')}",
                "tta": f"TTA {'on' if step.get('tta') else 'off'}"}[step["step"]]
        lines.append(f"  {what:<28} " + "  ".join(f"{v:.4f}" for v in step["dsc"]))
    for row in result["cases"]:
        sens = "n/a" if row["sensitivity"] is None else f"{row['sensitivity']:.4f}"
        prec = "n/a" if row["precision"] is None else f"{row['precision']:.4f}"
        lines.append(f"{row['case_id']}: DSC {row['dsc']:.4f}, sensitivity {sens}, precision {prec}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, ctx) -> int:
    from asymseg.calibrate import calibrate
    from asymseg.events import json_safe

    renderer = ctx.renderer()
    try:
        result = calibrate(args.model, args.val_cases, fold_models=args.fold_models, tta=args.tta, write=args.write,
                           device=args.device, on_event=renderer, cancel=ctx.cancel)
    finally:
        renderer.close()
    if args.json:
        ctx.stdout.write(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
    else:
        ctx.stdout.write(_table(result))
    return C.EXIT_OK
