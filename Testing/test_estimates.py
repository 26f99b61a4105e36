"""Long jobs say how long they will take: fine-tuning after a short warm-up, an experiment after its
first cell, both measured on this machine."""

from __future__ import annotations

import json
import re

import pytest


def test_finetuning_writes_one_estimate_after_the_warm_up(tmp_path, cli, one_torch_thread):
    assert cli("phantom", "--out", tmp_path / "cases", "--cases", 1, "--size", 32).code == 0
    result = cli("finetune", "--base-model", "asymseg-starter-deepmedic", "--train-case", tmp_path / "cases" / "phantom_000",
                 "--iterations", 6, "--batch-size", 2, "--output-model", tmp_path / "m", "--progress", "plain")
    assert result.code == 0, result.err
    estimates = [line for line in result.err.splitlines() if line.startswith("estimate:")]
    assert len(estimates) == 1, result.err
    match = re.fullmatch(r"estimate: about (\d+\.\d) s for the remaining 2 iteration\(s\) on this CPU, 1 thread\(s\) "
                         r"\((\d+\.\d\d) s per iteration, measured on iterations 2-4\)", estimates[0])
    assert match, estimates[0]
    assert float(match.group(1)) == pytest.approx(2 * float(match.group(2)), abs=0.06)
    # It comes after the fourth iteration's count and before the run ends.
    lines = result.err.splitlines()
    assert lines.index(estimates[0]) < next(i for i, line in enumerate(lines) if line.startswith("train: iteration 6/6"))


def test_a_run_too_short_for_a_warm_up_writes_no_estimate(tmp_path, cli, one_torch_thread):
    assert cli("phantom", "--out", tmp_path / "cases", "--cases", 1, "--size", 32).code == 0
    result = cli("finetune", "--base-model", "asymseg-starter-deepmedic", "--train-case", tmp_path / "cases" / "phantom_000",
                 "--iterations", 4, "--batch-size", 2, "--output-model", tmp_path / "m", "--progress", "jsonl")
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out.splitlines() if line.startswith("{")]
    assert not [e for e in events if "estimated_seconds" in e]


@pytest.mark.slow
def test_an_experiment_estimates_its_remaining_cells_after_the_first_one(tmp_path, cli, one_torch_thread):
    result = cli("experiment", "--config", "smoke", "--out", tmp_path / "exp", "--cells", "n02_*", "--progress",
                 "jsonl")
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out.splitlines() if line.startswith("{")]
    estimates = [e for e in events if "estimated_seconds" in e]
    # One, from the experiment (the cells' own training estimates are left out), after the first cell.
    assert [e["stage"] for e in estimates] == ["experiment"]
    assert estimates[0]["message"].startswith("estimate: about ")
    assert "for the remaining 1 cell(s) on this machine" in estimates[0]["message"]
    assert estimates[0]["estimated_seconds"] > 0
    first_cell_done = next(i for i, e in enumerate(events) if e.get("message", "").startswith("n02_a-focal_s0: DSC")
                           or e.get("message", "").startswith("n02_ce_s0: DSC"))
    assert events.index(estimates[0]) > first_cell_done
