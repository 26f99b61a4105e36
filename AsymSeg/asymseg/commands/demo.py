"""``asymseg demo``: the whole idea on phantom cases in a few minutes (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from asymseg import constants as C


def register(subparsers) -> argparse.ArgumentParser:
    from asymseg.cli import HelpFormatter
    from asymseg.demo import STARTER_MIN_SIZE, STARTER_MODEL, DemoSettings

    defaults = DemoSettings()
    parser = subparsers.add_parser(
        "demo", help="segment phantom cases with the starter model, fine-tune it with ce and combo, compare",
        description="Write phantom cases; segment one with the starter model (DSC, sensitivity, precision); "
        "fine-tune the starter model on two phantoms with ce and with the asymmetric combination (combo) in "
        "short runs; evaluate both on held-out phantoms side by side with the tumour logit shift of the "
        "logit diagnostic; write its figures. The last line names the output folder. Nothing is downloaded.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("demo-output"),
                        help="output folder (created; an earlier demo folder is replaced)")
    parser.add_argument("--model", default=STARTER_MODEL, metavar="NAME|DIR",
                        help="model to start from (bundled or user model name, or a model folder)")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller, faster run (48^3 phantoms, 1 held-out case, 3 iterations of batch 2)")
    parser.add_argument("--size", type=int, default=None,
                        help=f"phantom edge in voxels (default {defaults.size}; the starter model needs at least "
                             f"{STARTER_MIN_SIZE})")
    parser.add_argument("--iterations", type=int, default=None,
                        help=f"fine-tuning iterations per technique (default {defaults.iterations})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"patches per step (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"fine-tuning learning rate (default {defaults.lr:g}: a tenth of finetune's, so that "
                             "a few iterations adapt the starter model rather than overturn it)")
    parser.add_argument("--test-cases", type=int, default=None,
                        help=f"held-out phantom cases (default {defaults.test_cases})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantoms and the fine-tuning runs")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of text")
    parser.set_defaults(func=run)
    return parser


def _settings(args: argparse.Namespace):
    from asymseg.demo import DemoSettings

    changes = {k: v for k, v in (("size", args.size), ("iterations", args.iterations),
                                 ("batch_size", args.batch_size), ("lr", args.lr),
                                 ("test_cases", args.test_cases)) if v is not None}
    changes.update(model=args.model, seed=args.seed, device=args.device)
    return DemoSettings.quick(**changes) if args.quick else DemoSettings(**changes)


def _report(result) -> str:
    cfg = result.settings
    starter = result.starter
    lines = [
        f"phantom cases ({cfg['size']}^3 voxels): fine-tuning on {', '.join(result.cases['train'])}; "
        f"held out {', '.join(result.cases['test'])}",
        f"{result.model['name']} on {starter['case_id']}: DSC {starter['dsc']:.3f}, "
        f"sensitivity {_num(starter['sensitivity'])}, precision {_num(starter['precision'])}",
        "",
        f"mean over {len(result.cases['test'])} held-out phantom(s): the starter model as it is, and fine-tuned "
        f"on {len(result.cases['train'])} phantoms with ce and with combo ({cfg['iterations']} iterations of "
        f"{cfg['batch_size']} patches each, learning rate {cfg['lr']:g}):",
        *("  " + row for row in result.table()),
        "  (logit shift: mean dz = z_tumour - z_background on held-out minus training cases;",
        "   a large negative tumour shift is the overfitting the asymmetric techniques reduce)",
        "Short runs on toy cases show the workflow, not the size of the effect (asymseg experiment does).",
        "",
        "logit distribution figures:",
        *(f"  {name}: {entry['figure']}" for name, entry in result.techniques.items()),
        f"output folder: {result.out_dir}",
    ]
    return "\n".join(lines) + "\n"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def run(args: argparse.Namespace, ctx) -> int:
    from asymseg.demo import run_demo
    from asymseg.events import json_safe

    settings = _settings(args)
    renderer = ctx.renderer()
    try:
        result = run_demo(args.out, settings, on_event=renderer, cancel=ctx.cancel)
    finally:
        renderer.close()
    if args.json:
        ctx.stdout.write(json.dumps(json_safe(result.to_dict()), indent=2, allow_nan=False) + "\n")
    else:
        ctx.stdout.write(_report(result))
    return C.EXIT_OK
