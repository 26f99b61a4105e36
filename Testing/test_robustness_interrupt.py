"""Interrupted work: signals during ``segment``, repeated SIGKILL during ``finetune``.

- SIGTERM or SIGINT while ``segment`` is inferring (a real subprocess, signalled after its first
  tile-progress line): exit 130, one line on stderr, no output file and no temporary file, no
  process left behind. A second signal stops at once, with the same guarantees.
- ``finetune`` killed with SIGKILL at random moments (seeded), K times in a row, each time resumed:
  after every kill the run folder holds a loadable checkpoint whose iteration never goes back, the
  output model (when one was written) loads and its SHA256 verifies, and the next resume starts
  training. A final resume runs to completion and leaves no half-written temporary folder.
  Zero corrupt runs.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from asymseg import constants as C
from helpers import broken as B

TINY_NET = {"normal_features": [4, 4], "lowres_features": [4, 4], "fc_features": [8], "dropout": [0.0, 0.0]}
#: Kill-and-resume cycles of the finetune loop (raise it locally for a longer soak).
KILL_LOOPS = int(os.environ.get("ASYMSEG_KILL_LOOPS", "5"))
KILL_SEED = int(os.environ.get("ASYMSEG_KILL_SEED", "20190613"))


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from asymseg.modelfile import create_model, save_model
    from asymseg.target import TargetSpec

    net, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.tumour_core("brats2017"), seed=3,
                             name="tiny", **TINY_NET)
    return save_model(tmp_path_factory.mktemp("interrupt") / "tiny", net, card)


# -- segment: SIGTERM / SIGINT ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_case(tmp_path_factory) -> Path:
    """A 96^3 phantom: with 6^3 tiles the tiny model needs a few seconds, time enough to be interrupted."""
    from asymseg.phantom import write_phantom_cases

    (case,) = write_phantom_cases(tmp_path_factory.mktemp("big") / "cases", 1, size=(96, 96, 96), seed=8)
    return case


def _wait_for(proc: subprocess.Popen, accept, timeout: float = 300.0) -> list[dict]:
    """Read JSON lines from ``proc.stdout`` until ``accept(event)``; returns the events read."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        events.append(json.loads(line))
        if accept(events[-1]):
            return events
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"the awaited event never came (exit {proc.poll()}): {events[-3:]}")


def _reap(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if a failed assertion left it running."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _assert_cancelled_in_one_line(proc: subprocess.Popen, err: str) -> None:
    assert proc.returncode == C.EXIT_CANCELLED, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("asymseg segment: ") and "cancelled" in lines[0], err


@pytest.mark.slow
@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGINT,), (signal.SIGTERM, signal.SIGTERM)],
                         ids=["SIGTERM", "SIGINT", "SIGTERM-twice"])
def test_a_signal_during_segment_exits_130_and_leaves_nothing(model, big_case, tmp_path, signals):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "asymseg", "--threads", "1", "segment", "--model", str(model), "--case",
           str(big_case), "--output", str(out / "seg.nii.gz"), "--probabilities", "--logits", "--tile", "6",
           "--progress", "jsonl"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        events = _wait_for(proc, lambda e: e.get("stage") == "infer" and e.get("done", 0) >= 1)
        assert events[-1]["total"] > events[-1]["done"] + 10, "too few tiles left to interrupt"
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        for number in signals:
            proc.send_signal(number)
            time.sleep(0.05)
        _, err = proc.communicate(timeout=120)
    finally:
        _reap(proc)
    _assert_cancelled_in_one_line(proc, err)
    assert B.listing(out) == []  # the output folder (created up front) holds no file, not even a temporary one
    alive = [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []


def _catches(pid: int, number: int) -> bool:
    """Whether process ``pid`` has a handler for signal ``number`` (Linux: /proc/<pid>/status SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (number - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads signal masks from /proc")
def test_sigterm_while_the_engine_is_still_starting_exits_130(model, big_case, tmp_path):
    """Signalled as soon as the process catches SIGTERM at all (long before torch is imported and the
    command's own handlers exist): the documented "cancelled" exit, not death by the signal (143).
    (Python itself catches SIGINT from its first moments, so SIGINT cannot mark that point.)"""
    number = signal.SIGTERM
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "asymseg", "--threads", "1", "segment", "--model", str(model), "--case",
           str(big_case), "--output", str(out / "seg.nii.gz"), "--progress", "none"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 60
        while not _catches(proc.pid, number):
            assert proc.poll() is None and time.monotonic() < deadline, "the engine never caught the signal"
            time.sleep(0.001)
        proc.send_signal(number)
        _, err = proc.communicate(timeout=120)
    finally:
        _reap(proc)
    _assert_cancelled_in_one_line(proc, err)
    assert not (out / "seg.nii.gz").exists()


def test_main_restores_the_signal_handlers_it_installs(tmp_path):
    from asymseg.cli import main

    before = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM)}
    assert main(["phantom", "--out", str(tmp_path / "p"), "--cases", "1", "--size", "16"],
                stdout=io.StringIO(), stderr=io.StringIO()) == 0
    assert {n: signal.getsignal(n) for n in before} == before


# -- finetune: repeated SIGKILL -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_cases(tmp_path_factory) -> list[Path]:
    from asymseg.phantom import write_phantom_cases

    return write_phantom_cases(tmp_path_factory.mktemp("small") / "cases", 2, size=(32, 32, 32), seed=9)


def _check_run(run_dir: Path, output: Path, last_iteration: int) -> int:
    """The run folder after a kill: a loadable checkpoint (not behind the last one) and a loadable model."""
    from asymseg.modelfile import load_model
    from asymseg.train.checkpoint import find_checkpoint, load_checkpoint

    iteration = last_iteration
    if find_checkpoint(run_dir) is not None:
        iteration = load_checkpoint(run_dir).iteration  # raises on a damaged checkpoint
        assert iteration >= last_iteration, f"the checkpoint went back from {last_iteration} to {iteration}"
    else:
        assert last_iteration == 0, "a checkpoint disappeared"
    old = output.parent / f"{output.name}.old"
    if output.exists():
        loaded = load_model(output)  # checks the card and the weights' SHA256
        assert loaded.card.provenance["iterations"] <= max(iteration, 1) + 1
    elif old.exists():  # killed between the two renames of a model write: the previous model is complete
        load_model(old)
    return iteration


@pytest.mark.slow
def test_repeated_sigkill_during_finetune_always_leaves_a_resumable_run_and_an_intact_model(model, small_cases,
                                                                                             tmp_path):
    from asymseg.modelfile import load_model
    from asymseg.train.checkpoint import find_checkpoint, load_checkpoint

    rng = random.Random(KILL_SEED)
    output, run_dir = tmp_path / "tuned", tmp_path / "tuned.run"
    total = 400
    start = [sys.executable, "-m", "asymseg", "--threads", "1", "finetune", "--train-case", str(small_cases[0]),
             "--train-case", str(small_cases[1]), "--base-model", str(model), "--output-model", str(output),
             "--iterations", str(total), "--batch-size", "2", "--val-every", "1", "--checkpoint-every", "1",
             "--progress", "jsonl"]
    resume = [sys.executable, "-m", "asymseg", "--threads", "1", "finetune", "--resume", str(run_dir),
              "--progress", "jsonl"]
    iteration, history = 0, []
    for loop in range(KILL_LOOPS):
        fresh = find_checkpoint(run_dir) is None
        argv = start + (["--overwrite"] if loop else []) if fresh else resume
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        try:
            events = _wait_for(proc, lambda e: e["event"] == C.EVENT_ITERATION)
            started = events[-1]["done"]
            time.sleep(rng.uniform(0.0, 1.5))  # somewhere in training, checkpointing or a model write
            proc.kill()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert fresh or started >= iteration + 1, f"resume restarted at {started}, the checkpoint was at {iteration}"
        iteration = _check_run(run_dir, output, iteration)
        history.append(iteration)
    assert history[-1] > 0, f"no checkpoint in {KILL_LOOPS} runs: {history}"
    done = subprocess.run(resume[:-2] + ["--iterations", str(history[-1] + 3), "--progress", "none", "--json"],
                          capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "done" and summary["iterations"] == history[-1] + 3
    assert load_checkpoint(run_dir).iteration == history[-1] + 3
    assert load_model(output).card.provenance["status"] == "done"
    # Folders half-written by killed writers are cleared by the next run; none is left at the end.
    litter = [p for p in B.listing(tmp_path) if p.endswith((".tmp", ".old"))]
    assert litter == [], litter
