#!/usr/bin/env python3
"""Leave-one-out runs on the two shared BRATS 2015 cases: train on one, validate on the other.

Each (technique, fold) is one ``asymseg finetune`` run of the original DeepMedic from scratch
(or from ``--base-model``), validated on the held-out case every ``--snapshot-every`` iterations.
The run goes in chunks (``--stop-after``, then ``--resume``), and after each chunk the weights of
the checkpoint are kept as a snapshot, so every iteration count of the run can be scored later
(``loo_eval.py``: thresholds, post-processing, mirror TTA) without training again. The learning-
rate schedule spans the whole ``--iterations`` whatever the chunks. Interrupted runs continue
where their checkpoint left off when the same command is given again.

    recipes/starter/loo.py --work /tmp/asymseg-loo --techniques ce,a-focal --iterations 2000
    recipes/starter/loo.py --work /tmp/asymseg-loo --techniques ce --folds 5to6   # one core each

Layout under --work: ``<technique>/<fold>/model`` (the finetune output), ``.../model.run`` (its
checkpoint and logs), ``.../snapshots/iter-NNNNN.safetensors`` and ``.../settings.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CASES = {"pat0005": "brats_2013_pat0005_1", "pat0006": "brats_2013_pat0006_1"}
FOLDS = {"5to6": ("pat0005", "pat0006"), "6to5": ("pat0006", "pat0005")}


def _python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _iteration(run_dir: Path) -> int:
    state = run_dir / "checkpoint" / "state.json"
    if not state.exists():
        return 0
    return int(json.loads(state.read_text())["iteration"])


def run_fold(args: argparse.Namespace, technique: str, fold: str) -> None:
    train, held_out = FOLDS[fold]
    folder = Path(args.work) / technique / fold
    model, run_dir, snapshots = folder / "model", folder / "model.run", folder / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    settings = {"technique": technique, "fold": fold, "train": CASES[train], "held_out": CASES[held_out],
                "iterations": args.iterations, "batch_size": args.batch_size, "lr": args.lr,
                "optimizer": args.optimizer, "snapshot_every": args.snapshot_every,
                "base_model": args.base_model, "seed": args.seed, "extra": args.extra}
    settings_file = folder / "settings.json"
    if settings_file.exists() and json.loads(settings_file.read_text()) != settings:
        raise SystemExit(f"loo.py: {settings_file}: an earlier run used other settings; use another --work")
    settings_file.write_text(json.dumps(settings, indent=2) + "\n")
    base = [_python(), "-m", "asymseg", "--threads", str(args.threads), "finetune", "--progress", "none"]
    done = _iteration(run_dir)
    while done < args.iterations:
        stop = min(args.iterations, (done // args.snapshot_every + 1) * args.snapshot_every)
        if done == 0:
            command = base + [
                "--train-case", str(Path(args.data) / CASES[train]),
                "--val-case", str(Path(args.data) / CASES[held_out]),
                "--label-convention", "brats2015", "--technique", technique,
                "--iterations", str(args.iterations), "--batch-size", str(args.batch_size),
                "--lr", str(args.lr), "--optimizer", args.optimizer, "--seed", str(args.seed),
                "--val-every", str(args.snapshot_every), "--output-model", str(model),
                "--run-dir", str(run_dir), "--overwrite",
            ]
            if args.base_model:
                command += ["--base-model", args.base_model]
            else:
                command += ["--architecture", "deepmedic", "--channels", "flair,t1c"]
            command += list(args.extra)
        else:
            command = base + ["--resume", str(run_dir)]
        command += ["--stop-after", str(stop)]
        print(f"[{technique} {fold}] iterations {done} -> {stop}", flush=True)
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        done = _iteration(run_dir)
        if done != stop:
            raise SystemExit(f"loo.py: {run_dir}: expected iteration {stop} after the chunk, found {done}")
        shutil.copyfile(run_dir / "checkpoint" / "weights.safetensors", snapshots / f"iter-{done:05d}.safetensors")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="output folder (resumable)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "brats2015"))
    parser.add_argument("--techniques", default="ce,a-focal,combo,combo-authors")
    parser.add_argument("--folds", default="5to6,6to5")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--snapshot-every", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", default="rmsprop")
    parser.add_argument("--base-model", default=None, help="fine-tune this model instead of training from scratch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="further finetune options, after --")
    args = parser.parse_args(argv)
    for fold in args.folds.split(","):
        if fold not in FOLDS:
            parser.error(f"--folds: unknown fold {fold!r}; expected some of {', '.join(FOLDS)}")
    for technique in args.techniques.split(","):
        for fold in args.folds.split(","):
            run_fold(args, technique, fold)


if __name__ == "__main__":
    main()
