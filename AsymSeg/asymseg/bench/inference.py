"""Benchmark: whole-volume inference, our engine vs MONAI's sliding window vs naive DeepMedic tiling.

On a phantom case (240x240x155 by default; 2 and 4 channels), one untrained network with fixed
weights (``create_model`` with a seed) runs through three methods:

- ``ours``: :func:`asymseg.infer.predict_volume` with its defaults (brain bounding box, tiles as
  large as the memory budget allows, channels_last_3d on the CPU).
- ``monai``: ``monai.inferers.sliding_window_inference`` over the whole volume (roi 96^3,
  overlap 0.25, constant blending, sw_batch_size 1: MONAI's defaults and a common roi). A valid-
  convolution net shrinks its input, so the predictor receives the window coordinates
  (``with_coord=True``) and runs the net on the window plus the receptive-field halo cut from the
  zero-padded volume; the volume is padded to a multiple of the net's ``output_multiple`` and the
  overlap chosen so that windows start on that grid, which makes every window's output exact.
- ``monai-crop``: the same, given the brain's bounding box instead of the whole volume (what a
  MONAI user gets with ``CropForeground`` first), on the same output grid as ours, so that the two
  compute the same voxels: the like-for-like comparison, per computed voxel.
- ``naive``: DeepMedic's own inference scheme: the whole volume in segments of 45^3 normal-
  pathway voxels (29^3 outputs, here the nearest multiple of ``output_multiple``: 30^3), batches
  of 10, contiguous memory.

Each method runs in a fresh subprocess (so peak RSS, ``ru_maxrss``, is its own: the interpreter,
torch, the case and the inference), one after the other on the same machine, with the process
settings of ``asymseg segment`` (torch threads, glibc keeping freed memory: see
:func:`asymseg.infer.memory.configure_malloc`). Reported per run: wall time of the inference
(case loading excluded, reported apart) and its process CPU time, computed output voxels and
their rate, FLOPs counted from the architecture (``net.flops``: convolutions, 2 per multiply-add,
for every tile the method ran), achieved GFLOP/s as a share of a float32 matmul peak measured in
this run (best of 3 per size, before and after the methods; also from CPU time x threads, which
other load on a shared machine distorts less), peak RSS, and label agreement with ``ours``
inside the brain mask (outside it every method gives background; voxels whose decision
variable is within 1e-4 of the boundary are numerical ties and counted apart).

Run standalone with ``python -m asymseg.bench.inference [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from asymseg.bench.common import standalone_main, write_result

METHODS = ("ours", "monai", "monai-crop", "naive")
#: Goals of the inference issue: speed-up over MONAI, share of the matmul peak, peak RSS.
GOAL_SPEEDUP = 2.0
GOAL_PEAK_SHARE = 0.60
GOAL_RSS_GB = 2.5
#: Voxels whose |dz| is below this are numerically undecided; label mismatches there are counted apart.
DZ_TIE = 1e-4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="240,240,155", help="phantom size x,y,z in voxels (one number: a cube)")
    parser.add_argument("--channels", default="2,4", help="channel counts to run, comma-separated (2 and/or 4)")
    parser.add_argument("--architecture", default="deepmedic", choices=("deepmedic", "deepmedic-tmi", "unet"),
                        help="network architecture (untrained, seeded weights)")
    from asymseg.context import add_network_param_argument

    add_network_param_argument(parser, "network hyper-parameter, VALUE in JSON, e.g. fc_features=[50,50] "
                                       "(repeatable)")
    parser.add_argument("--methods", default=",".join(METHODS), help="methods to run, comma-separated")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--tile", type=int, default=None, help="our engine's largest tile edge (default: automatic)")
    parser.add_argument("--monai-roi", type=int, default=96, help="MONAI window edge (output voxels)")
    parser.add_argument("--monai-overlap", type=float, default=0.25, help="MONAI window overlap (aligned down)")
    parser.add_argument("--monai-batch", type=int, default=1, help="MONAI sw_batch_size")
    parser.add_argument("--naive-output", type=int, default=29,
                        help="naive segment output edge (29 = DeepMedic's 45^3 segments); rounded to the "
                             "net's output multiple")
    parser.add_argument("--naive-batch", type=int, default=10, help="naive segments per batch")
    parser.add_argument("--matmul-sizes", default="2048,4096", help="square float32 matmul sizes for the peak")
    parser.add_argument("--seed", type=int, default=0, help="phantom and weight seed")
    parser.add_argument("--workdir", default=None, help="keep the phantom, model and outputs here (default: a "
                                                        "temporary folder, removed afterwards)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per method")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


# -- the parent: set up, run the workers, compare ---------------------------------------------------
def run(args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    """Run the benchmark; print a Markdown table (or JSON) to ``ctx.stdout``.

    Returns:
        ``{"benchmark": "inference", "settings", "machine", "matmul_peak_gflops", "runs": [...],
        "goals": {...}}``; each run has ``channels, method, seconds, load_seconds,
        computed_voxels, voxels_per_second, gflop, gflops, peak_share, peak_rss_gb,
        label_mismatches, label_mismatches_decided, max_probability_difference, settings``.

    Raises:
        InputError: bad options, a missing ``bench`` extra, or a method that failed.
    """
    import shutil

    import torch

    from asymseg.io.cli_args import parse_size
    from asymseg.errors import InputError

    size = parse_size(args.size)
    counts = _int_list(args.channels, "--channels")
    if any(c not in (2, 4) for c in counts):
        raise InputError(f"--channels {args.channels}: expected 2 and/or 4")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise InputError(f"--methods {args.methods}: expected some of {', '.join(METHODS)}")
    if any(m.startswith("monai") for m in methods):
        try:
            import monai  # noqa: F401
        except ImportError as err:
            raise InputError("the monai method needs the bench extra: pip install 'asymseg[bench]'") from err
    from asymseg.context import network_params

    hparams = network_params(args.network_param) or {}
    from asymseg.infer.engine import resolve_device

    device = resolve_device(args.device)
    sizes = _int_list(args.matmul_sizes, "--matmul-sizes")
    threads = torch.get_num_threads()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="asymseg-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = _loadavg()
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    try:
        peak_before = matmul_peak(sizes, device)
        for count in counts:
            case_dir, model_dir = _prepare(workdir, count, size, args.architecture, hparams, args.seed)
            ours = None
            for method in methods:
                spec = {
                    "method": method, "case": str(case_dir), "model": str(model_dir), "device": str(device),
                    "threads": threads, "tile": args.tile, "out": str(workdir / f"c{count}_{method}"),
                    "monai": {"roi": args.monai_roi, "overlap": args.monai_overlap, "batch": args.monai_batch},
                    "naive": {"output": args.naive_output, "batch": args.naive_batch},
                }
                result = _run_worker(spec, workdir, args.timeout)
                result["channels"] = count
                if method == "ours":
                    ours = result
                runs.append(result)
            for result in runs:
                if result["channels"] == count and ours is not None:
                    _compare(result, ours)
        peak_after = matmul_peak(sizes, device)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
            for result in runs:
                result.pop("files", None)  # removed with the temporary folder
    peak = max(peak_before["best"], peak_after["best"])
    peak_cpu = max(peak_before.get("best_cpu_time", 0.0), peak_after.get("best_cpu_time", 0.0)) or None
    for result in runs:
        result["peak_share"] = result["gflops"] / peak if peak > 0 else None
        if device.type == "cpu":
            _cpu_time_rates(result, peak_cpu)
    report = {
        "benchmark": "inference",
        "settings": {"size": list(size), "channels": counts, "architecture": args.architecture, "hparams": hparams,
                     "methods": methods, "device": str(device), "threads": threads, "seed": args.seed,
                     "tile": args.tile, "monai": {"roi": args.monai_roi, "overlap": args.monai_overlap,
                                                  "sw_batch_size": args.monai_batch, "mode": "constant"},
                     "naive": {"output": args.naive_output, "batch": args.naive_batch}},
        "machine": {"cpu": _cpu_name(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_average_before": load_before,
                    "load_average_after": _loadavg(), "seconds": time.perf_counter() - started},
        "matmul_peak_gflops": {"before": peak_before, "after": peak_after, "best": peak, "best_cpu_time": peak_cpu},
        "runs": runs,
    }
    report["goals"] = _goals(report)
    write_result(ctx, report, as_json=args.json, text=markdown)
    return report


def _int_list(text: str, option: str) -> list[int]:
    from asymseg.errors import InputError

    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError as err:
        raise InputError(f"{option} {text!r}: expected comma-separated integers") from err
    if not values or any(v < 1 for v in values):
        raise InputError(f"{option} {text!r}: expected positive integers")
    return values



def _prepare(workdir: Path, count: int, size: tuple[int, int, int], architecture: str, hparams: dict[str, Any],
             seed: int) -> tuple[Path, Path]:
    """Write the phantom case and the seeded model for ``count`` channels (reused when present)."""
    from asymseg import constants as C
    from asymseg.modelfile import create_model, save_model
    from asymseg.phantom import write_phantom_cases
    from asymseg.target import TargetSpec

    channels = C.CHANNEL_NAMES[:count]
    case_root = workdir / f"phantom_{count}ch"
    if not case_root.is_dir():
        write_phantom_cases(case_root, 1, size=size, seed=seed, channels=channels)
    case_dir = next(p for p in sorted(case_root.iterdir()) if p.is_dir())
    model_dir = workdir / f"model_{count}ch"
    if not model_dir.is_dir():
        net, card = create_model(architecture, channels, TargetSpec.tumour_core("brats2017"), seed=seed,
                                 name=f"bench-{architecture}-{count}ch", **hparams)
        save_model(model_dir, net, card)
    return case_dir, model_dir


def _run_worker(spec: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    from asymseg.errors import InputError

    spec_path = workdir / f"{Path(spec['out']).name}_spec.json"
    result_path = workdir / f"{Path(spec['out']).name}_result.json"
    spec["result"] = str(result_path)
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    try:
        proc = subprocess.run([sys.executable, "-m", "asymseg.bench.inference", "--worker", str(spec_path)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as err:
        raise InputError(f"bench inference: the {spec['method']} run took longer than --timeout {timeout:g} s") from err
    if proc.returncode != 0 or not result_path.is_file():
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        raise InputError(f"bench inference: the {spec['method']} run failed (exit {proc.returncode}): {tail}")
    return json.loads(result_path.read_text())


def _cpu_time_rates(result: dict[str, Any], peak_cpu: float | None) -> None:
    """GFLOP/s from the CPU time of the method's threads (``cpu_seconds / threads``) and its share
    of the matmul peak measured the same way: estimates that other load on the machine distorts less."""
    cpu, threads = result.get("cpu_seconds"), result.get("threads")
    if cpu and threads:
        result["gflops_cpu_time"] = result["gflop"] / (cpu / threads)
        result["peak_share_cpu_time"] = result["gflops_cpu_time"] / peak_cpu if peak_cpu else None


def _compare(result: dict[str, Any], ours: dict[str, Any]) -> None:
    """Label agreement and the largest probability difference with ``ours``, inside the mask."""
    import numpy as np

    mask = np.load(ours["files"]["mask"])
    ref_labels = np.load(ours["files"]["labels"])[mask]
    ref_p = np.load(ours["files"]["probabilities"])[mask]
    labels = np.load(result["files"]["labels"])[mask]
    p = np.load(result["files"]["probabilities"])[mask]
    differ = labels != ref_labels
    with np.errstate(divide="ignore"):
        dz = np.abs(np.log(ref_p) - np.log1p(-ref_p))
    result["label_mismatches"] = int(differ.sum())
    result["label_mismatches_decided"] = int((differ & (dz > DZ_TIE)).sum())
    result["max_probability_difference"] = float(np.abs(p - ref_p).max()) if p.size else 0.0
    result["brain_voxels"] = int(mask.sum())


def matmul_peak(sizes: list[int], device: Any, repeats: int = 3) -> dict[str, Any]:
    """Float32 matmul GFLOP/s per size (best of ``repeats``) and the best of all.

    ``best_cpu_time`` is the same rate from the process CPU time times the thread count (CPU
    only): what the threads reach while running, which other load on the machine lowers less.
    """
    import torch

    per_size, per_size_cpu = {}, {}
    threads = torch.get_num_threads()
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        torch.mm(a, b)  # warm-up
        best, best_cpu = math.inf, math.inf
        for _ in range(repeats):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            torch.mm(a, b)
            _sync(device)
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        per_size[str(n)] = 2.0 * n ** 3 / best / 1e9
        if getattr(device, "type", str(device)) == "cpu" and best_cpu > 0:
            per_size_cpu[str(n)] = 2.0 * n ** 3 / (best_cpu / threads) / 1e9
    out: dict[str, Any] = {"per_size": per_size, "best": max(per_size.values())}
    if per_size_cpu:
        out["per_size_cpu_time"] = per_size_cpu
        out["best_cpu_time"] = max(per_size_cpu.values())
    return out


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _goals(report: dict[str, Any]) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    for count in report["settings"]["channels"]:
        rows = {r["method"]: r for r in report["runs"] if r["channels"] == count}
        entry: dict[str, Any] = {}
        if "ours" in rows and "monai" in rows:
            speedup = rows["monai"]["seconds"] / rows["ours"]["seconds"]
            entry["speedup_vs_monai"] = speedup
            entry["speedup_goal_met"] = speedup >= GOAL_SPEEDUP and rows["monai"]["label_mismatches_decided"] == 0
            entry["per_voxel_vs_monai"] = rows["ours"]["voxels_per_second"] / rows["monai"]["voxels_per_second"]
        if "ours" in rows and "monai-crop" in rows:  # like for like: the same box, the same voxels
            entry["speedup_vs_monai_same_crop"] = rows["monai-crop"]["seconds"] / rows["ours"]["seconds"]
            entry["per_voxel_vs_monai_same_crop"] = (rows["ours"]["voxels_per_second"]
                                                     / rows["monai-crop"]["voxels_per_second"])
        if "ours" in rows:
            entry["ours_peak_share"] = rows["ours"]["peak_share"]
            entry["ours_peak_share_cpu_time"] = rows["ours"].get("peak_share_cpu_time")
            entry["peak_share_goal_met"] = (rows["ours"]["peak_share"] or 0) >= GOAL_PEAK_SHARE
            entry["ours_peak_rss_gb"] = rows["ours"]["peak_rss_gb"]
            entry["rss_goal_met"] = rows["ours"]["peak_rss_gb"] <= GOAL_RSS_GB
        goals[f"{count}ch"] = entry
    return goals


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: a settings line, the table, the goals."""
    s, m, peak = report["settings"], report["machine"], report["matmul_peak_gflops"]
    lines = [
        f"Inference on a {'x'.join(map(str, s['size']))} phantom, {s['architecture']} (untrained, seed {s['seed']}), "
        f"{s['device']}, {s['threads']} thread(s), {m['cpu']} ({m['logical_cpus']} logical CPUs), torch {m['torch']}; "
        f"load average {m['load_average_before']} before, {m['load_average_after']} after.",
        f"float32 matmul peak: {peak['best']:.1f} GFLOP/s (before: "
        + ", ".join(f"{k}^2 {v:.1f}" for k, v in peak["before"]["per_size"].items()) + "; after: "
        + ", ".join(f"{k}^2 {v:.1f}" for k, v in peak["after"]["per_size"].items()) + ").",
        "",
        "| channels | method | settings | time (s) | CPU time (s) | load (s) | computed output voxels "
        "| output vox/s | GFLOP | GFLOP/s | % of peak | % of peak (CPU time) | peak RSS (GB) | labels vs ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if peak.get("best_cpu_time"):
        lines.insert(2, f"float32 matmul peak from CPU time x threads: {peak['best_cpu_time']:.1f} GFLOP/s; the "
                        "'CPU time' columns divide by it (estimates that other load on the machine distorts less).")
    for r in report["runs"]:
        if r["method"] == "ours":
            agree = "reference"
        elif "label_mismatches" in r:
            agree = ("identical" if r["label_mismatches"] == 0 else
                     f"{r['label_mismatches']} differ ({r['label_mismatches_decided']} with abs(dz) > {DZ_TIE:g})")
            agree += f", max abs(dp) {r['max_probability_difference']:.1e}"
        else:
            agree = "n/a"
        share = f"{100 * r['peak_share']:.0f}" if r.get("peak_share") is not None else "n/a"
        share_cpu = f"{100 * r['peak_share_cpu_time']:.0f}" if r.get("peak_share_cpu_time") is not None else "n/a"
        cpu = f"{r['cpu_seconds']:.1f}" if r.get("cpu_seconds") is not None else "n/a"
        lines.append(
            f"| {r['channels']} | {r['method']} | {r['settings_text']} | {r['seconds']:.1f} | {cpu} "
            f"| {r['load_seconds']:.1f} | {r['computed_voxels'] / 1e6:.2f} M | {r['voxels_per_second'] / 1e3:.1f} k "
            f"| {r['gflop']:.0f} | {r['gflops']:.1f} | {share} | {share_cpu} | {r['peak_rss_gb']:.2f} | {agree} |")
    lines.append("")
    for key, goal in report["goals"].items():
        parts = []
        if "speedup_vs_monai" in goal:
            parts.append(f"speed-up over MONAI {goal['speedup_vs_monai']:.2f}x end to end (goal >= {GOAL_SPEEDUP:g}x "
                         f"with identical labels: {'met' if goal['speedup_goal_met'] else 'not met'}), "
                         f"{goal['per_voxel_vs_monai']:.2f}x per computed voxel")
        if "speedup_vs_monai_same_crop" in goal:
            parts.append(f"MONAI given the same brain box: {goal['speedup_vs_monai_same_crop']:.2f}x end to end, "
                         f"{goal['per_voxel_vs_monai_same_crop']:.2f}x per computed voxel")
        if "ours_peak_share" in goal and goal["ours_peak_share"] is not None:
            text = (f"ours at {100 * goal['ours_peak_share']:.0f}% of the matmul peak (goal >= "
                    f"{100 * GOAL_PEAK_SHARE:.0f}%: {'met' if goal['peak_share_goal_met'] else 'not met'}")
            if goal.get("ours_peak_share_cpu_time") is not None:
                text += f"; {100 * goal['ours_peak_share_cpu_time']:.0f}% from CPU time"
            parts.append(text + ")")
        if "ours_peak_rss_gb" in goal:
            parts.append(f"peak RSS {goal['ours_peak_rss_gb']:.2f} GB (goal <= {GOAL_RSS_GB:g} GB: "
                         f"{'met' if goal['rss_goal_met'] else 'not met'})")
        if parts:
            lines.append(f"- {key}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    from asymseg.events import json_safe

    return json_safe(value)


# -- the worker: one method in a fresh process ---------------------------------------------------------
def _worker(spec_path: str) -> int:
    import resource

    import numpy as np
    import torch

    from asymseg.io import discover_case, load_case
    from asymseg.registry import load_model

    from asymseg.infer.memory import configure_malloc

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(int(spec["threads"]))
    malloc_tuned = configure_malloc()  # as asymseg segment does; every method gets the same setting
    device = torch.device(spec["device"])
    t0 = time.perf_counter()
    loaded = load_model(spec["model"], device="cpu")
    case = load_case(discover_case(spec["case"]), channels=loaded.card.channels)
    load_seconds = time.perf_counter() - t0
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    net = loaded.net
    method = spec["method"]
    _sync(device)
    t0, cpu0 = time.perf_counter(), time.process_time()
    if method == "ours":
        labels, probabilities, tiles, text = _ours(net, case, device, spec["tile"])
    elif method == "monai":
        labels, probabilities, tiles, text = _monai(net, case, device, **spec["monai"])
    elif method == "monai-crop":
        labels, probabilities, tiles, text = _monai(net, case, device, **spec["monai"], crop=True)
    else:
        labels, probabilities, tiles, text = _naive(net, case, device, **spec["naive"])
    _sync(device)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    out = Path(spec["out"])
    files = {"labels": f"{out}_labels.npy", "probabilities": f"{out}_prob.npy", "mask": f"{out}_mask.npy"}
    np.save(files["labels"], labels)
    np.save(files["probabilities"], probabilities)
    np.save(files["mask"], case.mask)
    flops = sum(count * net.flops(net.input_shape(tuple(shape))) for shape, count in tiles)
    computed = sum(count * math.prod(shape) for shape, count in tiles)
    result = {
        "method": method, "settings_text": text, "seconds": seconds, "cpu_seconds": cpu_seconds,
        "threads": torch.get_num_threads(), "malloc_tuned": malloc_tuned, "load_seconds": load_seconds,
        "computed_voxels": computed, "voxels_per_second": computed / seconds, "gflop": flops / 1e9,
        "gflops": flops / 1e9 / seconds, "peak_rss_gb": peak_rss, "rss_after_load_gb": rss_loaded,
        "volume_voxels": int(case.mask.size), "tiles": [[list(s), c] for s, c in tiles], "files": files,
    }
    if device.type == "cuda":
        result["cuda_max_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 1024 ** 3
    Path(spec["result"]).write_text(json.dumps(_json_safe(result)))
    return 0


def _ours(net, case, device, tile):
    from asymseg.infer import predict_volume

    prediction = predict_volume(net, case.image, case.mask, device=device, tile=tile)
    info = prediction.info
    text = (f"brain box, {info['tiles']} tile(s) of {'x'.join(map(str, info['tile']))} "
            f"({info.get('skipped_tiles', 0)} without brain skipped), {info['memory_format']}, "
            f"batch {info['batch_size']}")
    return prediction.labels, prediction.probabilities, [(tuple(info["tile"]), info["tiles"])], text


def _padded_volume(net, image, multiple_of: int):
    """The image zero-padded by the context on each side and up to ``multiple_of`` per axis."""
    import torch
    import torch.nn.functional as F

    from asymseg.infer.tiling import round_up

    c = int(net.context)
    spatial = image.shape[1:]
    padded = tuple(round_up(n, multiple_of) for n in spatial)
    pads = []
    for n, p in zip(reversed(spatial), reversed(padded)):
        pads += [c, c + p - n]
    return F.pad(torch.from_numpy(image)[None], pads), padded


def _finish(logits, mask):
    """Labels and foreground probability (class 1 of a binary net) from full-volume logits, masked."""
    import numpy as np
    import torch

    labels = torch.argmax(logits, dim=0).numpy().astype(np.uint8)
    probabilities = torch.softmax(logits, dim=0)[1:].sum(dim=0).numpy().astype(np.float32)
    labels[~mask] = 0
    probabilities[~mask] = 0.0
    return labels, probabilities


def _monai(net, case, device, roi, overlap, batch, crop=False):
    import torch
    from monai.inferers import sliding_window_inference

    from asymseg.infer.tiling import mask_box, round_down, round_up

    m, c = int(net.output_multiple), int(net.context)
    halo, padded = _padded_volume(net, case.image, m)
    if crop:  # the brain box, widened to the output grid that ours uses (anchored at voxel 0)
        start, stop = mask_box(case.mask)
        lo = tuple(round_down(s, m) for s in start)
        hi = tuple(min(round_up(e, m), p) for e, p in zip(stop, padded))
    else:
        lo, hi = (0, 0, 0), tuple(padded)
    region = tuple(h - low for low, h in zip(lo, hi))
    inner = halo[(slice(None), slice(None), *(slice(c + low, c + h) for low, h in zip(lo, hi)))]
    roi_size = tuple(max(m, min(round_down(roi, m), p)) for p in region)
    intervals = [max(m, round_down(int(r * (1 - overlap)), m)) for r in roi_size]
    overlaps = [1.0 - (i + 0.5) / r if i < r else 0.0 for i, r in zip(intervals, roi_size)]
    halo = halo.to(device)
    calls = []

    def predictor(window, coords):
        crops = [halo[(slice(None), slice(None), *(slice(low + s.start, low + s.stop + 2 * c)
                                                   for low, s in zip(lo, coord[2:])))]
                 for coord in coords]
        calls.append(len(crops))
        return net(torch.cat(crops))

    with torch.inference_mode():
        logits = sliding_window_inference(inner, roi_size, batch, predictor, overlap=overlaps, mode="constant",
                                          with_coord=True, sw_device=device, device="cpu")
    spatial = case.image.shape[1:]
    if crop:
        full = torch.zeros((logits.shape[1], *padded), dtype=torch.float32)  # outside the box: background
        full[(slice(None), *(slice(low, h) for low, h in zip(lo, hi)))] = logits[0].float()
    else:
        full = logits[0]
    labels, probabilities = _finish(full[(slice(None), *(slice(0, n) for n in spatial))].float(), case.mask)
    where = f"brain box {'x'.join(map(str, region))}" if crop else "whole volume"
    text = (f"{where}, roi {'x'.join(map(str, roi_size))}, overlap {overlap:g}, sw_batch_size {batch}, "
            f"{sum(calls)} windows")
    return labels, probabilities, [(roi_size, sum(calls))], text


def _naive(net, case, device, output, batch):
    import itertools

    import torch

    m, c = int(net.output_multiple), int(net.context)
    size = max(m, int(round(output / m)) * m)
    halo, padded = _padded_volume(net, case.image, size)
    halo = halo[0].to(device)
    k = int(net.num_classes)
    logits = torch.zeros((k, *padded))
    starts = list(itertools.product(*(range(0, p, size) for p in padded)))
    with torch.inference_mode():
        for first in range(0, len(starts), batch):
            group = starts[first:first + batch]
            x = torch.stack([halo[(slice(None), *(slice(s, s + size + 2 * c) for s in start))] for start in group])
            out = net(x).float().cpu()
            for b, start in enumerate(group):
                logits[(slice(None), *(slice(s, s + size) for s in start))] = out[b]
    spatial = case.image.shape[1:]
    labels, probabilities = _finish(logits[(slice(None), *(slice(0, n) for n in spatial))], case.mask)
    text = f"whole volume, {len(starts)} segments of {size}^3 outputs, batch {batch}, contiguous"
    return labels, probabilities, [((size, size, size), len(starts))], text


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m asymseg.bench.inference``; ``--worker SPEC`` runs one method."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "--worker":
        return _worker(argv[1])
    return standalone_main("inference", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
