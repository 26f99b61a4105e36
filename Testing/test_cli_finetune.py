"""``asymseg finetune`` on the command line: a real run used by ``asymseg segment``, bad input, SIGTERM and
resume in a real subprocess, and torchrun with two CPU processes against one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asymseg.modelfile import load_model
from asymseg.train.checkpoint import load_checkpoint
from helpers.nets import TINY

TINY_DEEPMEDIC = {"architecture": "deepmedic", "network": TINY}
#: U-Net with instance normalisation: per-sample statistics, so data-parallel runs match one process.
TINY_UNET = {"architecture": "unet", "network": {"depth": 2, "base_features": 4, "training_output_size": 16}}
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from asymseg.phantom import write_phantom_cases

    return [str(p) for p in write_phantom_cases(tmp_path_factory.mktemp("phantoms"), 3, size=(32, 32, 32), seed=4)]


def write_config(path: Path, data: dict) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def finetune_args(cases, tmp_path, net=TINY_DEEPMEDIC, *extra):
    return ["finetune", "--config", write_config(tmp_path / "net.json", net), "--train-case", cases[0],
            "--train-case", cases[1], "--val-case", cases[2], "--batch-size", "2", "--device", "cpu", *extra]


def subprocess_env():
    return {**os.environ, **ENV}


@pytest.mark.slow
def test_a_cli_run_yields_a_model_that_segment_uses(cli, cases, tmp_path, asymseg_proc):
    model = tmp_path / "model"
    result = cli("--threads", "1", *finetune_args(cases, tmp_path), "--technique", "a-focal", "--iterations", "4",
                 "--val-every", "2", "--output-model", model, "--progress", "none", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["status"] == "done" and summary["iterations"] == 4 and summary["model_path"] == str(model)
    assert (tmp_path / "model.run" / "checkpoint").is_dir()
    out = tmp_path / "seg.nii.gz"
    proc = asymseg_proc("--threads", "1", "segment", "--model", model, "--case", cases[2], "--output", out,
                        "--progress", "none", env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()


def test_progress_jsonl_is_one_json_object_per_line(cli, cases, tmp_path):
    result = cli("--threads", "1", *finetune_args(cases, tmp_path), "--iterations", "2", "--val-every", "2",
                 "--output-model", tmp_path / "m", "--progress", "jsonl")
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "done" and "start" in kinds and "validation" in kinds and "checkpoint" in kinds
    iteration = [e for e in events if e["event"] == "iteration"][-1]
    assert {"done", "total", "losses", "lr", "iterations_per_second", "eta_seconds"} <= set(iteration)
    assert events[-1]["model_path"] == str(tmp_path / "m")


@pytest.mark.parametrize("extra, pattern", [
    (["--train-case", "/nonexistent/case7"], "/nonexistent/case7: no such case folder"),
    (["--technique", "fancy"], "unknown technique 'fancy'"),
    (["--foreground-labels", "3"], r"no rare-class \(tumour\) voxels in any training case"),
    (["--batch-size", "0"], "batch_size"),
])
def test_bad_input_exits_2_with_one_line(cli, cases, tmp_path, extra, pattern):
    import re

    result = cli("--threads", "1", *finetune_args(cases, tmp_path), "--iterations", "1",
                 "--output-model", tmp_path / "m", "--progress", "none", *extra)
    assert result.code == 2, result
    assert result.err.count("\n") == 1 and result.err.startswith("asymseg finetune: error: ")
    assert re.search(pattern, result.err), result.err


def test_resume_needs_a_run_folder_and_keeps_its_settings(cli, cases, tmp_path):
    result = cli("finetune", "--resume", tmp_path, "--progress", "none")
    assert result.code == 2 and "not a training run folder" in result.err
    ok = cli("--threads", "1", *finetune_args(cases, tmp_path), "--iterations", "2", "--val-every", "1",
             "--output-model", tmp_path / "m", "--progress", "none", "--stop-after", "1")
    assert ok.code == 0, ok.err
    changed = cli("finetune", "--resume", tmp_path / "m.run", "--technique", "combo", "--progress", "none")
    assert changed.code == 2 and "cannot change" in changed.err
    done = cli("--threads", "1", "finetune", "--resume", tmp_path / "m.run", "--progress", "none", "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["iterations"] == 2


@pytest.mark.slow
def test_sigterm_leaves_a_checkpoint_and_the_best_model_and_resume_completes(cases, tmp_path):
    model, run_dir = tmp_path / "model", tmp_path / "model.run"
    cmd = [sys.executable, "-m", "asymseg", "--threads", "1",
           *finetune_args(cases, tmp_path), "--iterations", "24", "--val-every", "2", "--checkpoint-every", "20",
           "--output-model", str(model), "--progress", "jsonl"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    events = []
    try:
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "iteration" and events[-1]["done"] >= 4 and \
                    any(e["event"] == "validation" for e in events):
                proc.send_signal(signal.SIGTERM)
                break
        rest, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    events += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 130, err
    assert events[-1]["event"] == "cancelled"
    assert err.strip().splitlines()[-1].startswith("asymseg finetune: cancelled: cancelled by SIGTERM after iteration")
    stopped = load_checkpoint(run_dir).iteration
    assert 4 <= stopped < 20  # the current iteration finished and was checkpointed (not the every-20 one)
    best = load_model(model)
    assert best.card.provenance["status"] == "best" and best.card.provenance["iterations"] <= stopped

    resumed = subprocess.run([sys.executable, "-m", "asymseg", "--threads", "1", "finetune", "--resume", str(run_dir),
                              "--progress", "none", "--json"], capture_output=True, text=True, timeout=600,
                             env=subprocess_env())
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["iterations"] == 24 and summary["status"] == "done"
    assert load_checkpoint(run_dir).iteration == 24
    assert len([line for line in (run_dir / "train_log.csv").read_text().splitlines()]) == 25


def torchrun(*args, nproc=2, log_dir=None):
    """torchrun with ``nproc`` CPU processes; with ``log_dir`` each rank's stderr goes to a file
    there (:func:`rank_logs` puts them in a failure message)."""
    exe = Path(sys.executable).parent / "torchrun"
    logs = ["--log-dir", str(log_dir), "--redirects", "2"] if log_dir is not None else []
    return subprocess.run([str(exe), "--standalone", f"--nproc_per_node={nproc}", *logs, "-m", "asymseg",
                           "--threads", "1", *map(str, args)], capture_output=True, text=True, timeout=600,
                          env=subprocess_env())


def rank_logs(log_dir: Path, tail: int = 1500) -> str:
    """The end of every rank's stderr under ``log_dir`` (for a failure message)."""
    parts = []
    for path in sorted(Path(log_dir).rglob("*.log")):
        parts.append(f"--- {path.relative_to(log_dir)}: {path.read_text(errors='replace')[-tail:]}")
    return "\n".join(parts)


def single(*args):
    return subprocess.run([sys.executable, "-m", "asymseg", "--threads", "1", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=subprocess_env())


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes_matches_one_process_with_the_same_global_batch(cases, tmp_path):
    """U-Net (instance norm) + a-focal: the global batch is the same patches in both modes and DDP
    averages equal-sized per-process means, so only floating-point summation order differs (1e-6)."""
    common = finetune_args(cases, tmp_path, TINY_UNET, "--batch-size", "4", "--iterations", "6",
                           "--val-every", "3", "--technique", "a-focal", "--progress", "jsonl")
    dist = torchrun(*common, "--output-model", tmp_path / "dist", log_dir=tmp_path / "ranks")
    assert dist.returncode == 0, dist.stderr[-3000:] + rank_logs(tmp_path / "ranks")
    events = [json.loads(line) for line in dist.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events].count("done") == 1  # only rank 0 reports
    assert [e for e in events if e["event"] == "start"][0]["world_size"] == 2
    one = single(*common, "--output-model", tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = load_checkpoint(tmp_path / "dist.run"), load_checkpoint(tmp_path / "one.run")
    assert a.iteration == b.iteration == 6
    for key, value in a.weights.items():
        torch.testing.assert_close(value, b.weights[key], atol=1e-6, rtol=1e-5, msg=key)
    assert [h["dsc"] for h in a.state["loop"]["history"]] == [h["dsc"] for h in b.state["loop"]["history"]]
    load_model(tmp_path / "dist")


@pytest.mark.slow
def test_torchrun_runs_the_combination_with_batch_norm_to_completion(cases, tmp_path):
    """DeepMedic (batch norm) + combo under DDP on the CPU: SyncBatchNorm needs CUDA, so each process
    normalises with its own half of the batch and draws its own adversarial start and mixup partners;
    the result follows one process loosely (measured: ~4% relative L2 after 6 iterations)."""
    common = finetune_args(cases, tmp_path, TINY_DEEPMEDIC, "--batch-size", "4", "--iterations", "6",
                           "--val-every", "3", "--technique", "combo", "--progress", "none", "--json")
    dist = torchrun(*common, "--output-model", tmp_path / "dist", log_dir=tmp_path / "ranks")
    assert dist.returncode == 0, dist.stderr[-3000:] + rank_logs(tmp_path / "ranks")
    summary = json.loads(dist.stdout)
    assert summary["iterations"] == 6 and set(summary["last_losses"]) == {"clean", "adversarial", "mixup"}
    one = single(*common, "--output-model", tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = load_checkpoint(tmp_path / "dist.run"), load_checkpoint(tmp_path / "one.run")
    num = sum(float((v - b.weights[k]).square().sum()) for k, v in a.weights.items() if "running" not in k
              and v.is_floating_point())
    den = sum(float(v.square().sum()) for k, v in b.weights.items() if "running" not in k and v.is_floating_point())
    assert (num / den) ** 0.5 < 0.2


def test_part_symmetry_and_mixup_normalisation_options_reach_the_technique():
    from asymseg.commands.finetune import overrides_from_args
    from asymseg.cli import build_parser

    args = build_parser().parse_args(["finetune", "--technique", "combo", "--adversarial-symmetry", "symmetric",
                                      "--margin-symmetry", "asymmetric", "--mixup-normalize", "valid",
                                      "--optimizer", "torch-rmsprop", "--batchnorm-stats", "window",
                                      "--operating-point", "validation-tta"])
    overrides = overrides_from_args(args)
    assert (overrides["batchnorm_stats"], overrides["operating_point"]) == ("window", "validation-tta")
    assert overrides["technique_overrides"] == {"adversarial_symmetric": True, "margin_symmetric": False,
                                                "mixup_normalize": "valid"}
    assert overrides["optimizer"] == "torch-rmsprop"
