"""``asymseg info CASE``: what AsymSeg finds in a case folder (channels, label, mask, geometry, target)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from asymseg import constants as C
from asymseg.cli import HelpFormatter


def register(subparsers) -> argparse.ArgumentParser:
    from asymseg.io import add_case_arguments, add_target_arguments

    parser = subparsers.add_parser(
        "info",
        help="show the channels, label, brain mask, geometry and tumour-core size found in a case folder",
        description="Describe a case: which files were found for each channel (generic, BraTS 2017-2021 "
        "and BraTS 2023+ names), the label values, the brain mask (file or derived from the background), "
        "the geometry, and the tumour-core voxels under the label convention (guessed when unambiguous).",
        formatter_class=HelpFormatter,
    )
    add_case_arguments(parser, multiple=False, positional=True)
    add_target_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)
    return parser


def _name(path: str | None, folder: str | None) -> str:
    if path is None:
        return "-"
    if folder is not None and os.path.dirname(path) == folder:
        return os.path.basename(path)
    return path


def _fmt(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def format_report(report: dict[str, Any]) -> str:
    """The human-readable text of :func:`asymseg.io.report.case_report`."""
    folder = report["folder"]
    lines = [f"case        {report['case_id']}" + (f"  ({folder})" if folder else "")]
    for i, ch in enumerate(report["channels"]):
        head = f"channels    {len(report['channels'])}: " if i == 0 else " " * 15
        lines.append(f"{head}{ch['name']:<6} {_name(ch['file'], folder)}  "
                     f"(brain mean {ch['brain_mean']:.4g}, sd {ch['brain_std']:.4g}, "
                     f"range {ch['brain_min']:.4g}..{ch['brain_max']:.4g})")
    label = report["label"]
    if label is None:
        lines.append("label       none")
    else:
        lines.append(f"label       {_name(label['file'], folder)}  values {', '.join(map(str, label['values']))}")
    mask = report["mask"]
    where = _name(mask["file"], folder) if mask["source"] == "file" else "derived (voxels differing from the background)"
    lines.append(f"brain mask  {where}  {report['brain_voxels']:,} voxels ({report['brain_volume_ml']:.1f} ml)")
    geo = report["geometry"]
    lines.append(f"geometry    size {'x'.join(map(str, geo['size']))}, spacing {_fmt(geo['spacing'])} mm, "
                 f"origin {_fmt(geo['origin'])} mm")
    lines.append(f"            direction {_fmt(geo['direction'])}")
    target = report["target"]
    if target is None:
        lines.append(f"tumour core unknown: {report['target_error']}" if report["target_error"]
                     else "tumour core unknown (no label)")
    else:
        rare = [c for c in target["classes"] if c["rare"]]
        labels = ",".join(str(v) for c in rare for v in c["labels"])
        how = (f"{target['convention']}" if target["convention"] else "foreground labels") + \
              (", guessed from the label values" if target["guessed"] else "")
        if report["tumour_core_voxels"] is None:
            lines.append(f"tumour core labels {labels} ({how}); no label map to count")
        else:
            lines.append(f"tumour core {report['tumour_core_voxels']:,} voxels "
                         f"({100 * report['tumour_core_fraction_of_brain']:.2f}% of the brain), labels {labels} ({how})")
            if len(target["classes"]) > 2:
                for cls in target["classes"]:
                    lines.append(f"            {cls['name']}: {target['voxels'][cls['name']]:,} voxels")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, ctx) -> int:
    from asymseg.events import json_safe
    from asymseg.io import case_files_from_args
    from asymseg.io.report import case_report

    (files,) = case_files_from_args(args)
    report = case_report(files, convention=args.label_convention, foreground_labels=args.foreground_labels,
                         strict=args.strict)
    if args.json:
        ctx.stdout.write(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    else:
        ctx.stdout.write(format_report(report))
    return C.EXIT_OK
