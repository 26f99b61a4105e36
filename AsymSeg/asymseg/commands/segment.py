"""``asymseg segment``: segment one or several cases with a model.

One case: ``--output`` is the label map's path. Several cases (``--case`` repeated or
``--cases-from``): ``--output`` is a folder that gets ``<case_id>_seg.nii.gz`` (and ``_prob``,
``_dz`` with ``--probabilities``/``--logits``).

With ``--progress jsonl`` stdout carries one JSON object per line: progress events, then a
``{"event": "done", "case_id": ..., "outputs": {...}, "metrics": {...}, "seconds": ...,
"device": ...}`` line per case and, for several cases, a final ``{"event": "done", "cases": [...]}``.

Distributed batches: under ``torchrun`` (``WORLD_SIZE`` > 1), rank ``r`` takes the cases
``r::WORLD_SIZE`` of the list and, on CUDA, the GPU ``LOCAL_RANK``; no process group is needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from asymseg import constants as C
from asymseg.errors import InputError

log = logging.getLogger(__name__)

def _finite_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _postprocess(text: str) -> str:
    from asymseg.operating import parse_postprocess

    try:
        return parse_postprocess(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def register(subparsers) -> argparse.ArgumentParser:
    from asymseg.cli import HelpFormatter
    from asymseg.io import add_case_arguments

    parser = subparsers.add_parser(
        "segment",
        help="segment cases with a model (label map, probabilities, logits; metrics given a reference)",
        description="Segment one case (--case DIR or --channel NAME=PATH ...) or several (--case repeated, "
        "--cases-from FILE) with a model. Outputs keep the input's exact geometry. For several cases "
        "--output is a folder and files are named <case_id>_seg.nii.gz, _prob.nii.gz, _dz.nii.gz. "
        "--logits writes the decision variable dz = z_rare - max(other logits) (z_fg - z_bg for a binary "
        "model) and, for models with more than two classes, one logit file per class named "
        "<dz stem>_<class><ext>. Under torchrun (WORLD_SIZE > 1) each rank takes every WORLD_SIZE-th case.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="NAME|DIR",
                        help="model directory or a name from 'asymseg models list'")
    add_case_arguments(parser)
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="label map file (one case) or output folder (several cases)")
    parser.add_argument("--probabilities", nargs="?", const="", default=None, metavar="PATH",
                        help="also write the rare-class probability map (float32); one case: its path (default "
                             "beside --output, its name ending _prob instead of _seg: x_seg.nii.gz gives "
                             "x_prob.nii.gz); several cases: an optional folder")
    parser.add_argument("--logits", nargs="?", const="", default=None, metavar="PATH",
                        help="also write the decision variable dz (float32), plus per-class logits for "
                             "multi-class models; one case: its path (default beside --output, "
                             "ending _dz instead of _seg: x_seg.nii.gz gives x_dz.nii.gz); "
                             "several cases: an optional folder")
    parser.add_argument("--reference", metavar="PATH", default=None,
                        help="reference label map of the single case; adds metrics (through the model's target)")
    parser.add_argument("--evaluate", action="store_true",
                        help="score every case against its own label file (seg/label/OTMultiClass)")
    point = parser.add_argument_group("operating point (default: the model card's; 'asymseg models show' lists it)")
    point.add_argument("--threshold", type=_finite_float, default=None, metavar="DZ",
                       help="tumour where dz > DZ (0 = argmax; for a binary model p > sigmoid(DZ))")
    point.add_argument("--postprocess", type=_postprocess, default=None, metavar="none|largest|min-ml:V",
                       help="keep the largest connected component, or drop components under V ml")
    point.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                       help="average the logits over the 8 mirrorings of the volume (8x the inference time)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--tile", type=int, default=None,
                        help="largest output tile edge in voxels (default: as large as memory allows)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="tiles per forward pass (default: 1 on the CPU, as many as fit on CUDA)")
    parser.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                        help="mixed precision on CUDA (auto: bf16 where supported, else fp16)")
    parser.add_argument("--json", action="store_true",
                        help="print the results as one JSON document (ignored with --progress jsonl, whose "
                             "done lines carry them)")
    parser.set_defaults(func=run)
    return parser


def _with_suffix(path: Path, suffix: str) -> Path:
    from asymseg.io import strip_image_extension
    from asymseg.io.images import image_extension

    ext = image_extension(path) or ".nii.gz"
    stem = strip_image_extension(path)
    if stem.endswith("_seg"):
        stem = stem[: -len("_seg")]
    return path.with_name(f"{stem}{suffix}{ext}")


def _check_output_file(path: Path, option: str) -> None:
    """Refuse an output file that cannot be written, before any work is done.

    Raises:
        InputError: an extension AsymSeg does not write, or a regular file where a folder of the
            path should be.
    """
    from asymseg.io.cli_args import check_output_path
    from asymseg.io.images import WRITE_EXTENSIONS, image_extension

    if image_extension(path) not in WRITE_EXTENSIONS:
        raise InputError(f"{path}: {option} must end in one of {', '.join(WRITE_EXTENSIONS)}")
    check_output_path(path, option, folder=False)


def _make_parent(path: Path) -> None:
    """Create the output file's folder, with an error that names the file and the folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{path}: cannot create the folder {path.parent}: {err.strerror or err}") from err


def _single_outputs(args: argparse.Namespace, case_id: str):
    from asymseg.infer.cases import OutputPaths

    output = Path(args.output)
    if output.is_dir():
        return OutputPaths.in_folder(output, case_id, probabilities=args.probabilities is not None,
                                     logits=args.logits is not None)
    probabilities = logits = None
    if args.probabilities is not None:
        probabilities = Path(args.probabilities) if args.probabilities else _with_suffix(output, "_prob")
    if args.logits is not None:
        logits = Path(args.logits) if args.logits else _with_suffix(output, "_dz")
    for path, option in ((output, "--output"), (probabilities, "--probabilities"), (logits, "--logits")):
        if path is not None:
            _check_output_file(path, option)
    paths = [p for p in (output, probabilities, logits) if p is not None]
    if len({p.resolve() for p in paths}) != len(paths):
        raise InputError(f"--output, --probabilities and --logits must be different files, got "
                         f"{', '.join(str(p) for p in paths)}")
    return OutputPaths(output, probabilities, logits)


def _batch_outputs(args: argparse.Namespace, case_ids: list[str]):
    from asymseg.infer.cases import OutputPaths

    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: with several cases --output must be a folder")
    extra = [Path(p) for p in (args.probabilities, args.logits) if p]
    for path in [folder, *extra]:
        path.mkdir(parents=True, exist_ok=True)
    duplicates = sorted({i for i in case_ids if case_ids.count(i) > 1})
    if duplicates:
        raise InputError(f"{folder}: several cases share the id {', '.join(duplicates)}; their outputs would "
                         "overwrite each other")
    return [OutputPaths.in_folder(folder, case_id, probabilities=args.probabilities is not None,
                                  logits=args.logits is not None, probabilities_folder=args.probabilities or None,
                                  logits_folder=args.logits or None) for case_id in case_ids]


def _shard() -> tuple[int, int, int | None]:
    """(rank, world size, local rank) from torchrun's environment (read as training reads it); (0, 1, None)
    outside torchrun. The local rank is None when torchrun did not set LOCAL_RANK."""
    from asymseg.train.distributed import launch_environment

    launch = launch_environment()
    if launch is None:
        return 0, 1, None
    rank, world, local = launch
    return rank, world, local if "LOCAL_RANK" in os.environ else None


def _write_done(ctx: Any, payload: dict[str, Any], rank: int, world: int) -> None:
    """One ``done`` JSON line (per case, or the batch's summary), with the rank under torchrun."""
    from asymseg.events import json_safe

    line = {"event": C.EVENT_DONE, **payload}
    if world > 1:
        line.update(rank=rank, world_size=world)
    ctx.stdout.write(json.dumps(json_safe(line), allow_nan=False) + "\n")
    ctx.stdout.flush()


def _summary_line(result: dict[str, Any]) -> str:
    line = (f"{result['case_id']}: {result['foreground_voxels']} foreground voxels "
            f"({result['foreground_ml']:.2f} ml) -> {result['outputs']['labels']} "
            f"[{result['seconds']:.1f} s on {result['device']}]")
    point = result.get("operating_point") or {}
    if point and (point.get("threshold") or point.get("postprocess") != "none" or point.get("tta")):
        line += (f"\n  operating point: dz > {point['threshold']:g}, post-processing {point['postprocess']}, "
                 f"TTA {'on' if point['tta'] else 'off'} ({point['chosen_on']})")
    metrics = result.get("metrics")
    if metrics:
        parts = []
        for key, label, fmt in (("dsc", "DSC", "{:.4f}"), ("sensitivity", "sens", "{:.4f}"),
                                ("precision", "prec", "{:.4f}"), ("hd95", "HD95", "{:.2f} mm")):
            value = metrics.get(key)
            parts.append(f"{label} {'n/a' if value is None else fmt.format(value)}")
        line += "\n  " + ", ".join(parts)
    return line


def _check_headers(cases: list[Any]) -> None:
    """Every input image's header, before torch and the model are loaded: a crafted header (a few
    hundred bytes claiming billions of voxels) or a file that is no image is refused at once."""
    from asymseg.io.images import check_image_header

    for files in cases:
        for name, path in files.channels.items():
            check_image_header(path, role=f"{name} channel")
        if files.label is not None:
            check_image_header(files.label, role="label")
        if files.mask is not None:
            check_image_header(files.mask, role="mask")


def run(args: argparse.Namespace, ctx) -> int:
    from asymseg.io import case_files_from_args

    if args.tile is not None and args.tile < 1:
        raise InputError(f"--tile must be >= 1, got {args.tile}")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    cases = case_files_from_args(args)
    _check_headers(cases)

    from asymseg.events import json_safe
    from asymseg.infer.cases import segment_cases
    from asymseg.infer.engine import resolve_device
    from asymseg.infer.memory import configure_malloc
    from asymseg.io.cli_args import case_inputs, refuse_input_overwrite
    from asymseg.operating import OperatingPoint
    from asymseg.registry import load_model

    configure_malloc()
    batch = len(cases) > 1 or bool(args.cases_from) or len(args.case or []) > 1
    if args.reference and batch:
        raise InputError("--reference applies to a single case; use --evaluate to score several cases against "
                         "their own labels")
    rank, world, local_rank = _shard()
    device = args.device
    if world > 1:
        cases = cases[rank::world] if batch else (cases if rank == 0 else [])
        if local_rank is not None and device in ("auto", "cuda") and resolve_device(device).type == "cuda":
            device = f"cuda:{local_rank}"
        if not cases:
            log.info("rank %d of %d: no case to segment", rank, world)
            if ctx.progress == "jsonl":
                _write_done(ctx, {"cases": []}, rank, world)
            return C.EXIT_OK
    resolved = resolve_device(device)
    outputs = _batch_outputs(args, [c.case_id for c in cases]) if batch else _single_outputs(args, cases[0].case_id)
    written = [(o.labels, "--output") for o in (outputs if batch else [outputs])]
    written += [(o.probabilities, "--probabilities") for o in (outputs if batch else [outputs])]
    written += [(o.logits, "--logits") for o in (outputs if batch else [outputs])]
    read = [item for files in cases for item in case_inputs(files)]
    if args.reference:
        read.append((Path(args.reference), "the --reference label map"))
    refuse_input_overwrite(written, read)
    if not batch:
        for path in (outputs.labels, outputs.probabilities, outputs.logits):
            if path is not None:
                _make_parent(Path(path))
    model = load_model(args.model, device="cpu" if resolved.type == "cpu" else resolved)
    operating_point = (model.card.operating_point or OperatingPoint()).override(
        threshold=args.threshold, postprocess=args.postprocess, tta=args.tta)
    jsonl = ctx.progress == "jsonl"
    renderer = ctx.renderer()

    def on_case(result: dict[str, Any]) -> None:
        if jsonl:
            _write_done(ctx, result, rank, world)
        elif not args.json:
            renderer.echo(_summary_line(result), ctx.stdout)

    try:
        results = segment_cases(model, cases, outputs if batch else [outputs],
                                references=[args.reference] * len(cases), evaluate=args.evaluate, device=device,
                                tile=args.tile, batch_size=args.batch_size, amp=args.amp, on_event=renderer,
                                cancel=ctx.cancel, on_case=on_case, operating_point=operating_point,
                                strict=args.strict)
    finally:
        renderer.close()
    summary: dict[str, Any] = {"model": str(model.path), "cases": results,
                               "seconds": sum(r["seconds"] for r in results)}
    if world > 1:
        summary.update(rank=rank, world_size=world)
    if jsonl:
        if batch:
            _write_done(ctx, summary, rank, world)
    elif args.json:
        ctx.stdout.write(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    elif batch:
        ctx.stdout.write(f"segmented {len(results)} case(s) into {args.output}\n")
    return C.EXIT_OK
