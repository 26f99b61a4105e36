"""Benchmark: training iterations per second and peak memory of each technique preset, relative to ``ce``.

Every preset trains its own copy of the same network (same initial weights) on patches from the
same phantom cases, in ONE process, interleaved: each round runs a block of iterations of every
preset, in an order that rotates from round to round, so machine load affects all presets alike.
The first round is a warm-up and is not counted. An iteration is what ``asymseg finetune`` runs:
draw and cut the patches, then the technique's steps (clean, adversarial, mixup updates).

Reported per preset: optimiser updates per iteration, median seconds per iteration and its ratio
to ``ce`` (the combination runs up to three updates plus the adversarial direction pass), the
ratio per update, the ratio of the median process CPU time (steadier than wall time on a shared
machine; on CUDA it counts the host side only), and memory: on the CPU the peak resident set size (RSS) seen while the preset
ran (sampled every few milliseconds by a background thread) and its rise above the RSS at the
start of the preset's block; on CUDA the peak allocated GPU memory of the preset's blocks.

Run standalone with ``python -m asymseg.bench.training [--json]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from asymseg.bench.common import standalone_main, write_result

#: Presets in the table's order (``ce`` first: the reference).
DEFAULT_PRESETS = ("ce", "dice", "fg-sampling", "lm", "a-lm", "focal", "a-focal", "at", "a-at", "mixup",
                   "a-mixup", "a-aug", "combo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to ``parser``."""
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="comma-separated technique presets")
    parser.add_argument("--architecture", default="deepmedic", choices=("deepmedic", "deepmedic-tmi", "unet"),
                        help="network")
    from asymseg.context import add_network_param_argument

    add_network_param_argument(parser, "network hyper-parameter, VALUE in JSON (repeatable)")
    parser.add_argument("--batch-size", type=int, default=10, help="patches per step (authors: 10)")
    parser.add_argument("--iterations", type=int, default=2, help="iterations per preset per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    parser.add_argument("--cases", type=int, default=3, help="phantom cases to sample from")
    parser.add_argument("--size", type=int, default=64, help="phantom edge length (voxels)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantoms, weights and patches")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


class _RssSampler:
    """Samples this process's RSS in a thread; keeps the peak per tag."""

    def __init__(self, interval: float = 0.003) -> None:
        import psutil

        self._process = psutil.Process()
        self.interval = interval
        self.tag: str | None = None
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            tag = self.tag
            if tag is not None:
                value = self.rss()
                if value > self.peaks.get(tag, 0):
                    self.peaks[tag] = value
            time.sleep(self.interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    """Time every preset (see the module docstring); print a table (or JSON) to ``ctx.stdout``.

    Returns:
        ``{"benchmark": "training", "settings": {...}, "rows": [{"preset", "updates",
        "seconds_per_iteration", "iterations_per_second", "ratio", "ratio_per_update",
        "peak_rss_mib", "rss_rise_mib", "rss_ratio" | "peak_gpu_mib", "gpu_ratio"}, ...]}``.

    Raises:
        InputError: unknown presets, bad counts, an unavailable device or missing psutil.
    """
    import numpy as np
    import torch

    from asymseg.errors import InputError
    from asymseg.infer import resolve_device
    from asymseg.io import discover_case, load_case
    from asymseg.nets import build_network
    from asymseg.phantom import write_phantom_cases
    from asymseg.target import TargetSpec
    from asymseg.techniques import TECHNIQUES
    from asymseg.train.config import TrainConfig
    from asymseg.train.data import prepare_case
    from asymseg.train.session import amp_dtype, build_session
    from asymseg.train.steps import IterationRunner

    presets = [p.strip() for p in str(args.presets).split(",") if p.strip()]
    unknown = [p for p in presets if p not in TECHNIQUES]
    if unknown:
        raise InputError(f"--presets: unknown preset(s) {unknown}; expected some of {list(TECHNIQUES)}")
    if "ce" not in presets:
        presets.insert(0, "ce")
    for name in ("batch_size", "iterations", "rounds", "cases"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    device = resolve_device(args.device)
    from asymseg.context import network_params

    hparams = network_params(args.network_param) or {}
    try:
        sampler_rss = _RssSampler() if device.type == "cpu" else None
    except ImportError as err:
        raise InputError("asymseg bench training needs psutil (pip install 'asymseg[bench]')") from err

    target = TargetSpec.tumour_core("brats2017")
    with tempfile.TemporaryDirectory(prefix="asymseg-bench-") as tmp:
        folders = write_phantom_cases(Path(tmp), args.cases, size=(args.size,) * 3, seed=args.seed)
        prepared = []
        for folder in folders:
            case = load_case(discover_case(folder), channels=["flair", "t1c"], require_label=True)
            prepared.append(prepare_case(case.case_id, case.image, case.label, case.mask, target, margin=0))
    try:
        reference_net = build_network(args.architecture, 2, 2, generator=torch.Generator().manual_seed(args.seed),
                                      **hparams)
    except (TypeError, ValueError) as err:
        raise InputError(f"--network-param: {err}") from err
    amp = amp_dtype(device)

    states: dict[str, dict[str, Any]] = {}
    for name in presets:
        # What `asymseg finetune --technique <name>` trains with: its defaults (optimiser, lr, patch).
        config = TrainConfig(train_cases=tuple(str(f) for f in folders), output_model="bench", technique=name,
                             batch_size=args.batch_size, architecture=args.architecture, device=device.type,
                             seed=args.seed)
        net = build_network(args.architecture, 2, 2, generator=torch.Generator().manual_seed(args.seed), **hparams)
        net.load_state_dict(reference_net.state_dict())
        net.to(device).train()
        session = build_session(config, net, prepared, device)
        in_size, out_size = session.input_size, session.output_size
        states[name] = {
            "technique": session.technique, "net": net, "sampler": session.sampler,
            "rng": np.random.default_rng(args.seed),
            "runner": IterationRunner(net, net, session.optimizer, session.technique, list(target.rare),
                                      torch.Generator().manual_seed(args.seed + 1), session.amp),
            "times": [], "cpu": [], "gpu_peak": 0,
        }

    def block(name: str, timed: bool) -> None:
        st = states[name]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        if sampler_rss is not None:
            st.setdefault("rss_start", []).append(sampler_rss.rss())
            sampler_rss.tag = name if timed else None
        for _ in range(args.iterations):
            started, cpu_started = time.perf_counter(), time.process_time()
            draw = st["sampler"].draw(args.batch_size, st["rng"])
            x, y = st["sampler"].extract(draw)
            st["runner"](torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if timed:
                st["times"].append(time.perf_counter() - started)
                st["cpu"].append(time.process_time() - cpu_started)
        if sampler_rss is not None:
            sampler_rss.tag = None
        if device.type == "cuda" and timed:
            st["gpu_peak"] = max(st["gpu_peak"], int(torch.cuda.max_memory_allocated(device)))

    import contextlib

    with (sampler_rss if sampler_rss is not None else contextlib.nullcontext()):
        for round_index in range(args.rounds + 1):
            shift = round_index % len(presets)
            order = presets[shift:] + presets[:shift]
            if round_index % 2:
                order = order[::-1]
            for name in order:
                block(name, timed=round_index > 0)

    mib = 1024.0 ** 2
    ce = states["ce"]
    ce_time = statistics.median(ce["times"])
    ce_cpu = statistics.median(ce["cpu"])
    rows = []
    for name in presets:
        st = states[name]
        seconds = statistics.median(st["times"])
        updates = len(st["technique"].steps)
        row: dict[str, Any] = {
            "preset": name, "updates": updates, "seconds_per_iteration": seconds,
            "iterations_per_second": 1.0 / seconds, "ratio": seconds / ce_time,
            "ratio_per_update": seconds / ce_time / updates, "seconds_min": min(st["times"]),
            "cpu_seconds_per_iteration": statistics.median(st["cpu"]),
            "cpu_ratio": statistics.median(st["cpu"]) / ce_cpu,
        }
        if sampler_rss is not None:
            peak = sampler_rss.peaks.get(name, 0)
            row.update(peak_rss_mib=peak / mib, rss_rise_mib=max(peak - min(st["rss_start"]), 0) / mib,
                       rss_ratio=peak / max(sampler_rss.peaks.get("ce", 1), 1))
        else:
            row.update(peak_gpu_mib=st["gpu_peak"] / mib, gpu_ratio=st["gpu_peak"] / max(ce["gpu_peak"], 1))
        rows.append(row)
    result = {
        "benchmark": "training",
        "settings": {"architecture": args.architecture, "hparams": hparams, "batch_size": args.batch_size,
                     "input_patch": list(in_size), "output_patch": list(out_size), "iterations": args.iterations,
                     "rounds": args.rounds, "cases": args.cases, "size": args.size, "device": str(device),
                     "amp": str(amp).replace("torch.", "") if amp else "off", "threads": torch.get_num_threads(),
                     "torch": torch.__version__},
        "rows": rows,
    }
    write_result(ctx, result, as_json=args.json, text=_table)
    return result


def _table(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [f"training benchmark: {s['architecture']} on {s['device']} (amp {s['amp']}, {s['threads']} threads), "
             f"batch {s['batch_size']}, patch {s['input_patch'][0]}^3 -> {s['output_patch'][0]}^3, "
             f"{s['rounds']} rounds x {s['iterations']} iterations per preset", ""]
    gpu = "peak_gpu_mib" in result["rows"][0]
    memory = "peak GPU MiB  x ce" if gpu else "peak RSS MiB  rise MiB  x ce"
    lines.append(f"{'preset':<12} {'updates':>7} {'s/iter':>8} {'iter/s':>7} {'x ce':>6} {'x ce/update':>11} "
                 f"{'CPU x ce':>8}  {memory}")
    for r in result["rows"]:
        if gpu:
            mem = f"{r['peak_gpu_mib']:>12.0f}  {r['gpu_ratio']:>4.2f}"
        else:
            mem = f"{r['peak_rss_mib']:>12.0f}  {r['rss_rise_mib']:>8.0f}  {r['rss_ratio']:>4.2f}"
        lines.append(f"{r['preset']:<12} {r['updates']:>7} {r['seconds_per_iteration']:>8.3f} "
                     f"{r['iterations_per_second']:>7.2f} {r['ratio']:>6.2f} {r['ratio_per_update']:>11.2f} "
                     f"{r['cpu_ratio']:>8.2f}  {mem}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m asymseg.bench.training``."""
    return standalone_main("training", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
