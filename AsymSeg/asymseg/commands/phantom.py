"""``asymseg phantom``: write synthetic BraTS-like cases (BraTS 2017-2021 names) to a folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from asymseg import constants as C
from asymseg.errors import InputError
from asymseg.io.cli_args import parse_size


def parse_spacing(text: str) -> tuple[float, float, float]:
    """``"1"`` -> (1.0, 1.0, 1.0); ``"1,1,2.5"`` -> (1.0, 1.0, 2.5) mm (x, y, z)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise InputError(f"--spacing {text!r}: expected one number or 3 comma-separated numbers")
    try:
        return tuple(float(p) for p in parts)  # type: ignore[return-value]
    except ValueError as err:
        raise InputError(f"--spacing {text!r}: not a number") from err


def parse_channels(text: str) -> tuple[str, ...]:
    """``"2"`` -> (flair, t1c); ``"4"`` -> (flair, t1c, t1, t2); or an explicit list of names."""
    text = text.strip()
    if text.isdigit():
        count = int(text)
        if count not in (2, 4):
            raise InputError(f"--channels {text}: expected 2, 4 or a list of names from {C.CHANNEL_NAMES}")
        return C.CHANNEL_NAMES[:count]
    from asymseg.io import canonical_channel

    names = tuple(canonical_channel(p) for p in text.split(",") if p.strip())
    if not names:
        raise InputError("--channels: no channel names given")
    return names


def register(subparsers) -> argparse.ArgumentParser:
    from asymseg.cli import HelpFormatter

    parser = subparsers.add_parser(
        "phantom",
        help="write synthetic BraTS-like cases (brain, tumour core, oedema) for tests and experiments",
        description="Write N deterministic synthetic cases in BraTS 2017-2021 naming "
        "(<id>/<id>_flair.nii.gz, _t1ce, _t1, _t2, _seg; labels 0, 1 necrosis, 2 oedema, 4 enhancing) "
        "and a phantom.json describing each case.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--cases", required=True, type=int, help="number of cases to write")
    parser.add_argument("--size", default="48", help="volume size x,y,z in voxels, or one number for a cube")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same cases)")
    parser.add_argument("--channels", default="2",
                        help="2 (flair,t1c), 4 (flair,t1c,t1,t2) or a comma-separated list of names")
    parser.add_argument("--spacing", default="1", help="voxel spacing x,y,z in mm, or one number")
    parser.add_argument("--vessels", action="store_true",
                        help="also draw vessels that enhance like a tumour rim on T1c (venous sinuses along "
                        "the brain's edge, cortical veins, choroid plexus), as background: a network must "
                        "learn that not every enhancing voxel is tumour")
    parser.add_argument("--first-index", type=int, default=0,
                        help="index of the first case (ids phantom_<index>); add cases to a folder")
    parser.add_argument("--overwrite", action="store_true", help="replace existing case folders")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, ctx) -> int:
    from asymseg.phantom import read_phantom_manifest, write_phantom_cases

    size = parse_size(args.size)
    spacing = parse_spacing(args.spacing)
    channels = parse_channels(args.channels)
    renderer = ctx.renderer()
    try:
        paths = write_phantom_cases(
            args.out, args.cases, size=size, seed=args.seed, channels=channels, spacing=spacing,
            vessels=args.vessels, first_index=args.first_index, overwrite=args.overwrite, on_event=renderer,
            cancel=ctx.cancel,
        )
    finally:
        renderer.close()
    manifest = read_phantom_manifest(args.out)
    written = {p.name for p in paths}
    summary = {
        "out_dir": str(Path(args.out).resolve()),
        "generator": manifest["generator"],
        "generator_version": manifest["generator_version"],
        "cases": [dict(c, path=str(Path(args.out).resolve() / c["case_id"]))
                  for c in manifest["cases"] if c["case_id"] in written],
    }
    if args.json:
        from asymseg.events import json_safe

        ctx.stdout.write(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    else:
        for case in summary["cases"]:
            ctx.stdout.write(
                f"{case['case_id']}: core {100 * case['core_fraction']:.2f}% of brain "
                f"({case['core_voxels']} voxels), oedema {case['oedema_voxels']} voxels -> {case['path']}\n")
        ctx.stdout.write(f"wrote {len(summary['cases'])} case(s) to {summary['out_dir']}\n")
    return C.EXIT_OK
