"""``asymseg models``: list, show, import, export and create models; print the user folder."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asymseg import constants as C
from asymseg.context import HelpFormatter, add_network_param_argument, network_params
from asymseg.errors import InputError
from asymseg.io.cli_args import parse_label_list

#: Default target of ``models create``: binary tumour core in the BraTS 2017-2021 labels {1, 4}.
DEFAULT_CONVENTION = "brats2017"


def register(subparsers) -> argparse.ArgumentParser:
    fmt = HelpFormatter
    parser = subparsers.add_parser(
        "models", help="list, show, import, export and create models",
        description="Models are folders with model.json (the card) and model.safetensors (the weights). "
        "Names refer to bundled models and to the user folder (asymseg models path; $ASYMSEG_HOME/models, "
        "default ~/.asymseg/models). Pickle checkpoints are refused.", formatter_class=fmt)
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="list bundled and user models", formatter_class=fmt)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_list)

    p = sub.add_parser("show", help="verify a model and show its card", formatter_class=fmt)
    p.add_argument("model", metavar="NAME|DIR", help="model name or directory")
    p.add_argument("--json", action="store_true", help="print the card and geometry as JSON")
    p.set_defaults(func=run_show)

    p = sub.add_parser("import", help="verify a model folder or archive and copy it into the user folder",
                       formatter_class=fmt)
    p.add_argument("path", type=Path, metavar="PATH", help="model directory or .zip/.tar.gz archive")
    p.add_argument("--name", default=None, help="registry name (default: the card's name)")
    p.add_argument("--overwrite", action="store_true", help="replace a user model of the same name")
    p.add_argument("--json", action="store_true", help="print the name and folder as JSON")
    p.set_defaults(func=run_import)

    p = sub.add_parser("export", help="write a model as a .zip or .tar.gz archive", formatter_class=fmt)
    p.add_argument("model", metavar="NAME|DIR", help="model name or directory")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="archive path (.zip or .tar.gz)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing archive")
    p.add_argument("--json", action="store_true", help="print the model and the archive as JSON")
    p.set_defaults(func=run_export)

    p = sub.add_parser(
        "create", help="write an untrained model (training from scratch, tests, benchmarks)", formatter_class=fmt,
        description="Write an untrained model directory. The default target is the binary tumour core in the "
        "BraTS 2017-2021 labels {1, 4}.")
    p.add_argument("--architecture", required=True, choices=("deepmedic", "deepmedic-tmi", "unet"),
                   help="network: original DeepMedic, DeepMedic of the TMI code (x3 and x5 pathways), 3D U-Net")
    p.add_argument("--channels", required=True, metavar="NAMES",
                   help="comma-separated input channels in order, e.g. flair,t1c")
    target = p.add_argument_group("target").add_mutually_exclusive_group()
    target.add_argument("--label-convention", choices=sorted(C.TUMOUR_CORE_LABELS), default=None,
                        help=f"BraTS convention of the tumour core (default {DEFAULT_CONVENTION}: labels 1,4)")
    target.add_argument("--foreground-labels", type=parse_label_list, metavar="L1,L2,...", default=None,
                        help="explicit label values forming the foreground")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="model directory to create")
    p.add_argument("--name", default=None, help="model name in the card (default: the directory name)")
    p.add_argument("--description", default="", help="free-text description")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    add_network_param_argument(p, "network hyper-parameter, VALUE in JSON, repeatable, e.g. base_features=32")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run_create)

    p = sub.add_parser("path", help="print the user models folder", formatter_class=fmt)
    p.add_argument("--json", action="store_true", help="print the folder as JSON")
    p.set_defaults(func=run_path)
    return parser


def _write_json(ctx, data: Any) -> None:
    from asymseg.events import json_safe

    ctx.stdout.write(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def run_list(args: argparse.Namespace, ctx) -> int:
    from asymseg.registry import bundled_models_dir, list_models, user_models_dir

    infos = list_models()
    if args.json:
        _write_json(ctx, {"bundled_dir": str(bundled_models_dir()), "user_dir": str(user_models_dir()),
                          "models": [i.to_dict() for i in infos]})
        return C.EXIT_OK
    if not infos:
        ctx.stdout.write(f"no models (bundled: {bundled_models_dir()}; user: {user_models_dir()})\n")
        return C.EXIT_OK
    rows = [("NAME", "SOURCE", "ARCHITECTURE", "CHANNELS", "CLASSES", "PATH")]
    for i in infos:
        if i.card is None:
            rows.append((i.name, i.source, "INVALID", "-", "-", f"{i.path} ({i.error})"))
        else:
            rows.append((i.name, i.source, i.card.architecture, ",".join(i.card.channels),
                         ",".join(n + ("*" if r else "") for n, r in zip(i.card.target.names, i.card.target.rare)),
                         str(i.path)))
    widths = [max(len(r[k]) for r in rows) for k in range(5)]
    for r in rows:
        ctx.stdout.write("  ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + "  " + r[5] + "\n")
    ctx.stdout.write("(* = rare class)\n")
    return C.EXIT_OK


def describe(loaded) -> dict[str, Any]:
    """Card plus path, parameter count and geometry of a loaded model (JSON-ready)."""
    net, card = loaded.net, loaded.card
    return {
        "path": str(loaded.path),
        "card": card.to_dict(),
        "parameters": sum(p.numel() for p in net.parameters()),
        "geometry": {
            "context": net.context, "output_multiple": net.output_multiple, "exact_tiling": net.exact_tiling,
            "receptive_field": net.receptive_field, "training_output_size": net.training_output_size,
            "training_input_size": net.training_input_size,
        },
        "weights_verified": True,
    }


def run_show(args: argparse.Namespace, ctx) -> int:
    from asymseg.registry import load_model

    info = describe(load_model(args.model))
    if args.json:
        _write_json(ctx, info)
        return C.EXIT_OK
    card, geo = info["card"], info["geometry"]
    classes = ", ".join(f"{c['value']} {c['name']}" + (f" (labels {c['labels']})" if c["labels"] else "")
                        + (" rare" if c["rare"] else "") for c in card["target"]["classes"])
    channels = ", ".join(f"{c['name']} ({c['normalization']})" for c in card["channels"])
    prov = card.get("provenance") or {}
    lines = [
        f"name:          {card['name']}",
        f"path:          {info['path']}",
        f"description:   {card['description'] or '-'}",
        f"created:       {card['created'] or '-'}",
        f"architecture:  {card['architecture']['name']} ({info['parameters']:,} parameters)",
        f"hparams:       {json.dumps(card['architecture']['hparams'], separators=(',', ':'))}",
        f"geometry:      context {geo['context']}, output multiple {geo['output_multiple']}, receptive field "
        f"{geo['receptive_field']}, training {geo['training_input_size']}^3 -> {geo['training_output_size']}^3, "
        f"exact tiling {'yes' if geo['exact_tiling'] else 'no'}",
        f"channels:      {channels}",
        f"classes:       {classes}",
        f"training:      technique {json.dumps(prov.get('technique'))}, iterations "
        f"{json.dumps(prov.get('iterations', '-'), separators=(',', ':'))}, cases {_case_counts(prov.get('data'))}, "
        f"base model {_base_name(prov.get('base_model'))}",
        f"weights:       {card['weights']['file']} sha256 {card['weights']['sha256'][:16]}... (verified)",
    ]
    if prov.get("validation"):
        lines.append(f"validation:    {json.dumps(prov['validation'], separators=(',', ':'))}")
    point = card.get("operating_point")
    if point:
        cases = point.get("validation", {}).get("cases") or []
        lines.append(f"operating pt:  tumour where dz > {point['threshold']:g}, post-processing {point['postprocess']}, "
                     f"TTA {'on' if point['tta'] else 'off'} (chosen on {point['chosen_on']}"
                     + (f": {', '.join(cases)}" if cases else "") + ")")
    else:
        lines.append("operating pt:  argmax (dz > 0), no post-processing, no TTA")
    ctx.stdout.write("\n".join(lines) + "\n")
    return C.EXIT_OK


def _base_name(base: Any) -> str:
    """A card's base model in a word: its name (a fine-tuned model's record), the text given, or '-'."""
    if isinstance(base, dict):
        return str(base.get("name") or "-")
    return str(base) if base else "-"


def _case_counts(data: object) -> str:
    """The training data of a card's provenance in a few words: ``train 1, val 1`` for the
    ``{"train": [...], "val": [...]}`` that fine-tuning records, ``3`` for a plain list, ``-`` for none."""
    if isinstance(data, Mapping):
        parts = [f"{key} {len(value)}" for key, value in data.items() if isinstance(value, (list, tuple))]
        return ", ".join(parts) or "-"
    if isinstance(data, (list, tuple)):
        return str(len(data))
    return "-"


def run_import(args: argparse.Namespace, ctx) -> int:
    from asymseg.registry import import_model

    path = import_model(args.path, name=args.name, overwrite=args.overwrite)
    if args.json:
        _write_json(ctx, {"name": path.name, "path": str(path)})
    else:
        ctx.stdout.write(f"imported {path.name} -> {path}\n")
    return C.EXIT_OK


def run_export(args: argparse.Namespace, ctx) -> int:
    from asymseg.registry import export_model

    out = export_model(args.model, args.out, overwrite=args.overwrite)
    if args.json:
        _write_json(ctx, {"model": args.model, "archive": str(Path(out).resolve())})
    else:
        ctx.stdout.write(f"exported {args.model} -> {out}\n")
    return C.EXIT_OK


def run_create(args: argparse.Namespace, ctx) -> int:
    from asymseg.io.discovery import canonical_channel
    from asymseg.modelfile import create_model, save_model
    from asymseg.target import TargetSpec

    names = [n.strip() for n in args.channels.split(",") if n.strip()]
    if not names:
        raise InputError("--channels: no channel names given (e.g. --channels flair,t1c)")
    channels = [canonical_channel(n) for n in names]
    if args.foreground_labels:
        target = TargetSpec.foreground(args.foreground_labels)
    else:
        target = TargetSpec.tumour_core(args.label_convention or DEFAULT_CONVENTION)
    hparams = network_params(args.network_param) or {}
    name = args.name or args.out.name
    net, card = create_model(args.architecture, channels, target, seed=args.seed, name=name,
                             description=args.description, **hparams)
    path = save_model(args.out, net, card, overwrite=args.overwrite)
    if args.json:
        from asymseg.modelfile import read_card

        _write_json(ctx, {"path": str(path.resolve()), "card": read_card(path).to_dict()})
    else:
        ctx.stdout.write(f"created untrained {args.architecture} model {name!r} ({len(channels)} channel(s): "
                         f"{', '.join(channels)}; classes: {', '.join(target.names)}) -> {path}\n")
    return C.EXIT_OK


def run_path(args: argparse.Namespace, ctx) -> int:
    from asymseg.registry import user_models_dir

    if args.json:
        _write_json(ctx, {"path": str(user_models_dir())})
    else:
        ctx.stdout.write(f"{user_models_dir()}\n")
    return C.EXIT_OK
