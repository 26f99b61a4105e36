"""Progress in a log file or a pipe: plain lines, each message once, no carriage return or escape.

The renderer is driven with a hand-moved clock; the commands run as real subprocesses whose stderr
is a pipe, as ``make demo > demo.log 2>&1`` or ``asymseg ... | tee`` would see them.
"""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys

import pytest

from asymseg import constants as C
from asymseg.events import Event, JsonlRenderer, PlainRenderer, TqdmRenderer, make_renderer

#: Carriage returns and ANSI/VT100 escape sequences (cursor moves, line clears).
CONTROL = re.compile(r"[\r\x1b]")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _ev(kind, stage, done=None, total=None, message=None, **data):
    return Event(kind=kind, stage=stage, done=done, total=total, message=message, data=data)


def test_a_long_training_writes_a_periodic_iteration_line_with_rate_and_time_left():
    clock, out = Clock(), io.StringIO()
    renderer = PlainRenderer(out, interval=30, clock=clock)
    renderer(_ev(C.EVENT_START, "train", 0, 100, "training 100 iterations"))
    for i in range(1, 101):
        clock.now += 2.0  # 2 s per iteration
        renderer(_ev(C.EVENT_ITERATION, "train", i, 100, loss=0.3))
        if i == 50:
            renderer(_ev(C.EVENT_VALIDATION, "validate", i, 100, "validation at 50: DSC 0.5"))
    renderer(_ev(C.EVENT_DONE, "train", 100, 100, "training done"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "training 100 iterations"
    periodic = [line for line in lines if line.startswith("train: iteration") and "ETA" in line]
    assert len(periodic) == 200 // 30  # one every 30 s of a 200 s run, the last one at 180 s
    assert periodic[0] == "train: iteration 15/100, 2.00 s/it, ETA 2m50s"
    assert "validation at 50: DSC 0.5" in lines
    assert lines[-2:] == ["train: iteration 100/100 in 3m20s", "training done"]
    assert len(lines) == len(set(lines))  # nothing written twice
    renderer.close()


def test_a_nested_stage_writes_no_completion_line_and_its_parent_does():
    clock, out = Clock(), io.StringIO()
    renderer = PlainRenderer(out, interval=30, clock=clock)
    for case in range(2):
        renderer(_ev(C.EVENT_PROGRESS, "case", case, 2, f"case {case + 1}/2"))
        for stage in ("load", "infer", "write"):
            renderer(_ev(C.EVENT_PROGRESS, stage, 0, 1))
            clock.now += 1
            renderer(_ev(C.EVENT_PROGRESS, stage, 1, 1))
        renderer(_ev(C.EVENT_PROGRESS, "case", case + 1, 2))
    assert out.getvalue().splitlines() == ["case 1/2", "case 2/2", "case: 2/2 in 6.0 s"]


def test_a_stage_that_runs_again_is_counted_again_and_failures_are_left_to_the_command():
    clock, out = Clock(), io.StringIO()
    renderer = PlainRenderer(out, interval=30, clock=clock)
    for _ in range(2):
        renderer(_ev(C.EVENT_START, "load", 0, 2))
        clock.now += 0.5
        renderer(_ev(C.EVENT_PROGRESS, "load", 2, 2))
    renderer(_ev(C.EVENT_ITERATION, "train", 1, 10))
    renderer(_ev(C.EVENT_FAILED, "train", message="out of memory"))
    renderer.echo("result", out)
    assert out.getvalue().splitlines() == ["load: 2/2 in 0.5 s", "load: 2/2 in 0.5 s", "result"]


def test_auto_draws_bars_on_a_terminal_and_plain_lines_elsewhere():
    pipe = io.StringIO()
    assert isinstance(make_renderer("auto", stdout=pipe, stderr=pipe), PlainRenderer)
    assert isinstance(make_renderer("plain", stdout=pipe, stderr=pipe), PlainRenderer)
    assert isinstance(make_renderer("tqdm", stdout=pipe, stderr=pipe), TqdmRenderer)
    assert isinstance(make_renderer("jsonl", stdout=pipe, stderr=pipe), JsonlRenderer)
    leader, follower = pty.openpty()
    try:
        with open(follower, "w", closefd=False) as terminal:
            assert isinstance(make_renderer("auto", stdout=pipe, stderr=terminal), TqdmRenderer)
    finally:
        os.close(leader)
        os.close(follower)


def run_asymseg(*args: object, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """``python -m asymseg ARGS`` with stdout and stderr to pipes, read as bytes and decoded without
    newline translation (text mode would turn a carriage return into a newline)."""
    proc = subprocess.run([sys.executable, "-m", "asymseg", *map(str, args)], capture_output=True,
                          timeout=timeout, env={**os.environ, **env})
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def _message_lines(text: str) -> list[str]:
    """The lines that head a message or a result (stage counts, which repeat per run of a stage, and
    indented details of a result, such as each case's operating point, left out)."""
    return [line for line in text.splitlines()
            if line.strip() and not line[0].isspace() and not re.match(r"^\w+: (iteration )?\d+/\d+", line)]


@pytest.mark.slow
def test_commands_with_stderr_to_a_pipe_write_plain_lines_once(tmp_path):
    cases = tmp_path / "cases"
    env = {"OMP_NUM_THREADS": "1", "ASYMSEG_HOME": str(tmp_path / "home")}
    runs = [
        ("phantom", "--out", cases, "--cases", 2, "--size", 32),
        ("segment", "--model", "asymseg-starter-deepmedic", "--case", cases / "phantom_000",
         "--case", cases / "phantom_001", "--output", tmp_path / "seg", "--evaluate"),
        ("finetune", "--base-model", "asymseg-starter-deepmedic", "--train-case", cases / "phantom_000",
         "--val-case", cases / "phantom_001", "--iterations", 2, "--batch-size", 2, "--val-every", 1,
         "--output-model", tmp_path / "model", "--threads", 1),
    ]
    for args in runs:
        proc = run_asymseg(*args, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert not CONTROL.search(proc.stderr), f"{args[0]}: {proc.stderr!r}"
        lines = _message_lines(proc.stderr + proc.stdout)
        assert len(lines) == len(set(lines)), f"{args[0]} repeats a line: {lines}"
        assert re.search(r"^\w+: (iteration )?(\d+)/\2 in ", proc.stderr, re.M), proc.stderr  # a stage's count
    # --progress tqdm still draws bars into the pipe when asked to.
    forced = run_asymseg("phantom", "--out", tmp_path / "more", "--cases", 1, "--size", 32, "--progress", "tqdm",
                         env=env, timeout=300)
    assert forced.returncode == 0 and "\r" in forced.stderr
