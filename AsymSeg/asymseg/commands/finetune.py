"""``asymseg finetune``: train or fine-tune a model on a few labelled cases with a technique preset.

A thin shell over :func:`asymseg.train.finetune`: the options build a
:class:`~asymseg.train.TrainConfig` (on top of ``--config FILE`` when given), the API runs, and the
result is printed. Under ``torchrun`` every process runs this command; rank 0 prints and writes.

Exit codes: 0 done; 2 bad input; 3 unusable base model; 4 out of memory/disk; 130 cancelled
(SIGINT/SIGTERM: the current iteration finishes, a checkpoint is written, the best model so far
stays in the output folder; continue with ``--resume RUN_DIR``).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from asymseg import constants as C
from asymseg.techniques import MIXUP_NORMALIZE, SYMMETRY_PARTS

_EPILOG = """\
examples:
  asymseg finetune --train-case cases/p01 --train-case cases/p02 --val-case cases/p03 \\
      --base-model asymseg-starter-deepmedic --technique combo --iterations 2000 --output-model my-model
  asymseg finetune --config run.yaml --lr 5e-4 --output-model my-model
  asymseg finetune --resume my-model.run            (continue a cancelled or finished run)
  torchrun --standalone --nproc_per_node=2 -m asymseg finetune ...   (data-parallel; --batch-size is global)

exit codes: 0 done, 2 bad input, 3 unusable base model, 4 out of memory or disk,
130 cancelled (checkpoint written, best model kept; continue with --resume RUN_DIR)
"""


def _patch_size(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected N or D,H,W, got {text!r}") from err
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected N or D,H,W, got {text!r}")
    return values


def register(subparsers) -> argparse.ArgumentParser:
    from asymseg.context import add_network_param_argument
    from asymseg.io import add_target_arguments
    from asymseg.techniques import DESCRIPTIONS
    from asymseg.train.config import OPTIMIZERS

    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune (or train from scratch) on a few labelled cases with an asymmetric technique",
        description=textwrap.fill(
            "Train a segmentation model on labelled case folders with one of the paper's techniques "
            "(Li, Kamnitsas & Glocker 2019): clean step, then the adversarial and mixup steps when the technique "
            "has them. Validates every --val-every iterations with the inference engine, keeps the best model in "
            "--output-model (atomically replaced when it improves) and a resumable checkpoint in the run folder. "
            "Options override the values of --config.", 90),
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--train-case", action="append", metavar="DIR", default=None,
                      help="training case folder with channel images and a label map (repeatable; a case "
                      "given twice is drawn twice as often, read once)")
    data.add_argument("--train-cases-from", metavar="FILE", default=None,
                      help="text file with one training case folder per line")
    data.add_argument("--val-case", action="append", metavar="DIR", default=None,
                      help="validation case folder (repeatable)")
    data.add_argument("--val-cases-from", metavar="FILE", default=None,
                      help="text file with one validation case folder per line")
    data.add_argument("--val-fraction", type=float, default=None, metavar="F",
                      help="without validation cases: hold out this fraction of the training cases "
                           "(default 0: no validation, the best model is chosen by the training loss)")
    add_target_arguments(parser)

    model = parser.add_argument_group("model")
    source = model.add_mutually_exclusive_group()
    source.add_argument("--base-model", metavar="NAME|DIR", default=None,
                        help="model to fine-tune (bundled or user model name, or a model folder); its card "
                             "gives the channels, classes and architecture")
    source.add_argument("--architecture", choices=("deepmedic", "deepmedic-tmi", "unet"), default=None,
                        help="train this network from scratch (default without --base-model: deepmedic)")
    model.add_argument("--channels", default=None, metavar="NAMES",
                       help="input channels when training from scratch, e.g. flair,t1c "
                            "(default: the channels every training case has)")
    add_network_param_argument(model, "network hyper-parameter when training from scratch, VALUE in JSON "
                                      "(e.g. normal_features=[16,16,16,16,16,16,16,16]); repeatable")
    model.add_argument("--output-model", metavar="DIR|NAME", default=None,
                       help="where the trained model goes: a folder, or a bare name for the user models folder")
    model.add_argument("--overwrite", action="store_true",
                       help="replace an existing output model and start the run folder anew")

    tech = parser.add_argument_group("technique (preset, then explicit overrides)")
    tech.add_argument("--technique", default=None, metavar="PRESET",
                      help="preset (default ce): " + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()).replace("%", "%%"))
    tech.add_argument("--loss", choices=("ce", "dice", "focal-dice"), default=None, help="clean-step loss")
    tech.add_argument("--margin", type=float, default=None, help="large margin m on rare true-class logits")
    tech.add_argument("--gamma", type=float, default=None, help="focal gamma")
    tech.add_argument("--symmetric", action="store_const", const=True, default=None,
                      help="apply margin, focal, adversarial direction and mixup rule to every class")
    tech.add_argument("--adversarial", action=argparse.BooleanOptionalAction, default=None,
                      help="add (or remove) the adversarial step")
    tech.add_argument("--eps", type=float, default=None, help="adversarial perturbation norm per sample")
    tech.add_argument("--xi", type=float, default=None, help="adversarial random-start norm")
    tech.add_argument("--mixup", action=argparse.BooleanOptionalAction, default=None,
                      help="add (or remove) the mixup step")
    tech.add_argument("--mixup-alpha", type=float, default=None, help="mixup Beta(alpha, alpha)")
    tech.add_argument("--mixup-margin", type=float, default=None, help="asymmetric mixup margin")
    tech.add_argument("--asym-aug-p", type=float, default=None,
                      help="probability of augmenting background-centred patches (asymmetric augmentation)")
    for part in SYMMETRY_PARTS:
        tech.add_argument(f"--{part}-symmetry", choices=("symmetric", "asymmetric"), default=None,
                          help=f"symmetry of the {part} part alone (default: the preset's, or --symmetric)")
    tech.add_argument("--mixup-normalize", choices=MIXUP_NORMALIZE, default=None,
                      help="divide the mixup loss by all voxels, ignored ones included (the authors'; default), "
                           "or by the valid voxels only")

    train = parser.add_argument_group("training")
    train.add_argument("--config", metavar="FILE", default=None,
                       help="JSON or YAML file with any of these settings (options given here win)")
    train.add_argument("--iterations", type=int, default=None, help="training iterations (default 1000)")
    train.add_argument("--batch-size", type=int, default=None,
                       help="patches per step, GLOBAL: split evenly across torchrun processes (default 10)")
    train.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=None,
                       help="rmsprop (the authors' DeepMedic RMSProp: rho 0.9, eps 1e-4 inside the square root, "
                            "Nesterov momentum 0.6; default), torch-rmsprop (torch's, larger steps) or adam")
    train.add_argument("--lr", type=float, default=None, help="initial learning rate (default 1e-3)")
    train.add_argument("--operating-point", choices=("validation", "validation-tta", "cross-validation", "none"),
                       default=None,
                       help="after training, choose the decision threshold and post-processing on the "
                            "validation cases and record them on the model card (default validation; "
                            "validation-tta also tries mirror TTA; cross-validation, without validation "
                            "cases: one extra run per training case, each scoring the case it left out; "
                            "none keeps the argmax)")
    train.add_argument("--batchnorm-stats", choices=("ema", "window"), default=None,
                       help="batch-norm statistics for inference: ema (moving average; default) or window "
                            "(average of the last 60 clean batches, as the authors' DeepMedic)")
    train.add_argument("--weight-decay", type=float, default=None, help="L2 weight decay (default 0)")
    train.add_argument("--schedule", choices=("constant", "step", "cosine", "poly"), default=None,
                       help="learning-rate schedule (default step: halved at 17,22,27,30,33/35 of the run)")
    train.add_argument("--fg-fraction", type=float, default=None,
                       help="fraction of patches centred on a tumour voxel (default: the technique's, 0.5)")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="random flips and intensity jitter (default: the technique's)")
    train.add_argument("--patch-size", type=_patch_size, default=None, metavar="N|D,H,W",
                       help="output size of a training patch (default: the network's)")
    train.add_argument("--val-every", type=int, default=None, help="validate every K iterations (default 100)")
    train.add_argument("--checkpoint-every", type=int, default=None,
                       help="write the resume checkpoint every K iterations (default: --val-every)")
    train.add_argument("--patience", type=int, default=None,
                       help="stop after P evaluations without improvement (default: never)")
    train.add_argument("--strict", action="store_true", default=None,
                       help="refuse a case whose plausibility checks fail (skull left in, very thick slices, "
                            "CT-like intensities) instead of training on it with a warning")
    from asymseg.io.cli_args import add_reference_channel_argument

    add_reference_channel_argument(train)
    train.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                       help="auto (CUDA when available; default), cpu or cuda")
    train.add_argument("--run-dir", metavar="DIR", default=None,
                       help="checkpoints and logs (default: OUTPUT.run beside the output model)")
    train.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue the run in RUN_DIR exactly where its checkpoint left off "
                            "(--iterations may extend it; --device may change)")
    train.add_argument("--stop-after", type=int, default=None, metavar="N",
                       help="pause once N iterations are done (checkpoint written; continue with --resume)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)
    return parser


def _case_list(folders: list[str] | None, list_file: str | None) -> list[str] | None:
    from asymseg.io import read_case_list

    out = [str(Path(f)) for f in folders or []]
    if list_file:
        out.extend(str(p) for p in read_case_list(list_file))
    return out or None


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config values given on the command line (None = not given)."""
    from asymseg.context import network_params

    technique = {
        "loss": args.loss, "margin": args.margin, "gamma": args.gamma, "symmetric": args.symmetric,
        "adversarial": args.adversarial, "eps": args.eps, "xi": args.xi, "mixup": args.mixup,
        "mixup_alpha": args.mixup_alpha, "mixup_margin": args.mixup_margin, "asym_aug_p": args.asym_aug_p,
        "mixup_normalize": args.mixup_normalize,
    }
    for part in SYMMETRY_PARTS:
        choice = getattr(args, f"{part}_symmetry")
        if choice is not None:
            technique[f"{part}_symmetric"] = choice == "symmetric"
    if args.asym_aug_p is not None and args.augment is None:
        technique["augment"] = True
    return {
        "train_cases": _case_list(args.train_case, args.train_cases_from),
        "val_cases": _case_list(args.val_case, args.val_cases_from),
        "val_fraction": args.val_fraction,
        "base_model": args.base_model,
        "architecture": args.architecture,
        "channels": args.channels,
        "network": network_params(args.network_param),
        "label_convention": args.label_convention,
        "foreground_labels": list(args.foreground_labels) if args.foreground_labels else None,
        "technique": args.technique,
        "technique_overrides": {k: v for k, v in technique.items() if v is not None} or None,
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "batchnorm_stats": args.batchnorm_stats,
        "operating_point": args.operating_point,
        "strict": args.strict,
        "reference_channel": args.reference_channel,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "schedule": args.schedule,
        "fg_fraction": args.fg_fraction,
        "augment": args.augment,
        "patch_output_size": args.patch_size,
        "val_every": args.val_every,
        "checkpoint_every": args.checkpoint_every,
        "patience": args.patience,
        "seed": args.seed,
        "device": args.device,
        "output_model": args.output_model,
        "run_dir": args.run_dir,
    }


def _summary_text(result: dict[str, Any]) -> str:
    lines = [f"{result['status']}: {result['iterations']} of {result['total_iterations']} iterations "
             f"in {result['seconds']:.1f} s"]
    best = result.get("best_metrics") or {}
    if result.get("best_iteration") is not None:
        if "dsc" in best:
            detail = ", ".join(f"{k} {best[k]:.4f}" for k in ("dsc", "sensitivity", "precision")
                               if best.get(k) is not None)
            lines.append(f"best model: iteration {result['best_iteration']} (validation {detail})")
        elif "training_loss" in best:
            lines.append(f"best model: iteration {result['best_iteration']} "
                         f"(training loss {best['training_loss']:.4f}; no validation cases)")
    lines.append(f"model: {result['model_path']}")
    lines.append(f"run folder (checkpoint, logs): {result['run_dir']}")
    return "\n".join(lines) + "\n"


def _check_output_folders(config) -> None:
    """Refuse an output model or run folder that cannot be created, before any case is loaded."""
    from asymseg.io.cli_args import check_output_path
    from asymseg.train.api import default_run_dir, resolve_output

    if not config.output_model:
        return
    output = resolve_output(str(config.output_model))
    run_dir = Path(config.run_dir).expanduser().absolute() if config.run_dir \
        else default_run_dir(str(config.output_model))
    check_output_path(output, "--output-model", folder=True)
    check_output_path(run_dir, "--run-dir", folder=True)


def run(args: argparse.Namespace, ctx) -> int:
    from asymseg.errors import Cancelled, InputError
    from asymseg.events import json_safe
    from asymseg.train import finetune, load_config, load_run_config

    overrides = overrides_from_args(args)
    if args.stop_after is not None and args.stop_after < 1:
        raise InputError(f"--stop-after must be >= 1, got {args.stop_after}")
    if args.resume:
        if args.config:
            raise InputError("--resume takes the settings of the run folder; do not combine it with --config")
        allowed = {"iterations", "device", "patience", "val_every", "checkpoint_every"}
        given = sorted(k for k, v in overrides.items() if v is not None and k not in allowed)
        if given:
            raise InputError(f"--resume continues the saved run; these settings cannot change: {given} "
                             f"(allowed: {sorted(allowed)})")
        config = load_run_config(args.resume, {k: overrides[k] for k in allowed})
    else:
        config = load_config(args.config, overrides)
    _check_output_folders(config)
    renderer = ctx.renderer()
    try:
        result = finetune(config, on_event=renderer, cancel=ctx.cancel, resume=bool(args.resume),
                          overwrite=args.overwrite, stop_after=args.stop_after)
    except Cancelled as err:
        renderer.close()
        ctx.stderr.write(f"asymseg finetune: cancelled: {' '.join(str(err).split())}\n")
        return C.EXIT_CANCELLED
    finally:
        renderer.close()
    if not result.is_main:
        return C.EXIT_OK
    summary = result.to_dict()
    if args.json:  # one line after JSON progress lines, so the stream stays JSON lines
        indent = None if args.progress == "jsonl" else 2
        ctx.stdout.write(json.dumps(json_safe(summary), indent=indent, allow_nan=False) + "\n")
    elif args.progress != "jsonl":
        ctx.stdout.write(_summary_text(summary))
    return C.EXIT_OK
