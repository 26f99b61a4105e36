"""Benchmark: forward + backward time of :func:`asymseg.losses.asymmetric_ce` vs torch's cross-entropy.

Both run in the same process on the same logits and labels, interleaved (the order alternates
every repeat), so machine load affects both alike; the result is the ratio of the medians.
The settings are the ``combo`` technique's loss (asymmetric large margin m = 0.2 and focal
gamma = 2, binary tumour core r = [0, 1]) on DeepMedic training batches: 10 segments of 9^3
(original) and 21^3 (TMI configuration) output voxels.

Run standalone with ``python -m asymseg.bench.losses [--json]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from asymseg.bench.common import standalone_main, write_result

#: Output batches of a DeepMedic training step: (B, C, D, H, W).
DEFAULT_SHAPES = ("10x2x9x9x9", "10x2x21x21x21")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to ``parser``."""
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                        help="comma-separated logits shapes BxCxDxHxW")
    parser.add_argument("--repeats", type=int, default=50, help="timed repeats per shape and function")
    parser.add_argument("--warmup", type=int, default=5, help="untimed repeats first")
    parser.add_argument("--margin", type=float, default=0.2, help="large margin m of asymmetric_ce")
    parser.add_argument("--gamma", type=float, default=2.0, help="focal gamma of asymmetric_ce")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random logits and labels")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    """Time both losses on every shape; print a table (or JSON) to ``ctx.stdout``.

    Returns:
        ``{"benchmark": "losses", "settings": {...}, "rows": [{"shape", "voxels",
        "asymmetric_ce_ms", "cross_entropy_ms", "ratio", ...}, ...]}``: the median wall-clock
        times and their ratio; ``*_min_ms``/``ratio_min`` the fastest repeats and
        ``*_cpu_ms``/``ratio_cpu`` the median process CPU time (both better estimates of the
        intrinsic cost on a machine shared with other work).

    Raises:
        InputError: a malformed shape, repeats < 1 or an unavailable device.
    """
    import torch
    import torch.nn.functional as F

    from asymseg.errors import InputError
    from asymseg.losses import asymmetric_ce

    shapes = [_parse_shape(text) for text in str(args.shapes).split(",") if text.strip()]
    if args.repeats < 1 or args.warmup < 0:
        raise InputError(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    try:
        device = torch.device(args.device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as err:
        raise InputError(f"--device {args.device}: {err}") from err
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for shape in shapes:
        batch, classes, *spatial = shape
        rare = [False] + [True] * (classes - 1)
        logits = torch.randn(shape, generator=generator).to(device)
        labels = torch.randint(0, classes, (batch, *spatial), generator=generator).to(device)

        def ours() -> None:
            z = logits.detach().requires_grad_(True)
            asymmetric_ce(z, labels, rare=rare, margin=args.margin, gamma=args.gamma).backward()

        def reference() -> None:
            z = logits.detach().requires_grad_(True)
            F.cross_entropy(z, labels).backward()

        wall, cpu = _interleaved({"asymmetric_ce": ours, "cross_entropy": reference},
                                 args.repeats, args.warmup, device)
        row: dict[str, Any] = {"shape": "x".join(map(str, shape)), "voxels": batch * _product(spatial)}
        for key, samples, reduce in (("", wall, statistics.median), ("_min", wall, min),
                                     ("_cpu", cpu, statistics.median)):
            ours_ms = reduce(samples["asymmetric_ce"]) * 1e3
            ref_ms = reduce(samples["cross_entropy"]) * 1e3
            row[f"asymmetric_ce{key}_ms"] = round(ours_ms, 4)
            row[f"cross_entropy{key}_ms"] = round(ref_ms, 4)
            row[f"ratio{key}"] = ours_ms / ref_ms if ref_ms > 0 else None
        rows.append(row)
    result = {
        "benchmark": "losses",
        "settings": {"margin": args.margin, "gamma": args.gamma, "rare": "all classes but 0",
                     "repeats": args.repeats, "device": str(device), "threads": torch.get_num_threads(),
                     "torch": torch.__version__},
        "rows": rows,
    }
    write_result(ctx, result, as_json=args.json, text=_table)
    return result


def _interleaved(functions: dict, repeats: int, warmup: int, device: Any
                 ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process CPU seconds per call, the call order alternating every repeat."""
    import torch

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for function in functions.values():
            function()
    wall: dict[str, list[float]] = {name: [] for name in functions}
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    order = list(functions.items())
    for repeat in range(repeats):
        for name, function in (order if repeat % 2 == 0 else order[::-1]):
            synchronise()
            start, start_cpu = time.perf_counter(), time.process_time()
            function()
            synchronise()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def _parse_shape(text: str) -> tuple[int, ...]:
    from asymseg.errors import InputError

    try:
        shape = tuple(int(part) for part in text.strip().lower().split("x"))
    except ValueError as err:
        raise InputError(f"--shapes: {text!r} is not BxCxDxHxW") from err
    if len(shape) < 3 or min(shape) < 1 or shape[1] < 2:
        raise InputError(f"--shapes: {text!r} needs B, C >= 2 and at least one spatial size, all >= 1")
    return shape


def _product(values: list[int]) -> int:
    result = 1
    for value in values:
        result *= value
    return result


def _table(result: dict[str, Any]) -> str:
    settings = result["settings"]
    lines = [
        f"asymmetric_ce (margin {settings['margin']}, gamma {settings['gamma']}, asymmetric) vs "
        f"torch cross_entropy: forward + backward, medians of {settings['repeats']} interleaved repeats, "
        f"{settings['device']}, {settings['threads']} thread(s)",
        f"{'logits shape':>16}  {'voxels':>8}  {'asymmetric_ce ms':>16}  {'cross_entropy ms':>16}  {'ratio':>6}"
        f"  {'ratio (fastest)':>15}  {'ratio (CPU time)':>16}",
    ]
    for row in result["rows"]:
        lines.append(f"{row['shape']:>16}  {row['voxels']:>8}  {row['asymmetric_ce_ms']:>16.3f}  "
                     f"{row['cross_entropy_ms']:>16.3f}  {_fmt(row['ratio']):>6}  {_fmt(row['ratio_min']):>15}  "
                     f"{_fmt(row['ratio_cpu']):>16}")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m asymseg.bench.losses``."""
    return standalone_main("losses", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
