"""The experiment runner end to end: the bundled smoke config, resume, redoing crashed cells, cancel."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from asymseg.errors import Cancelled
from asymseg.events import CancelToken
from asymseg.experiment import build_cells, load_experiment_config, run_experiment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One torch thread: on a shared 2-core machine, spinning OpenMP threads make tiny nets far slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke experiment, run once through the CLI with JSON-lines progress."""
    import io

    from asymseg.cli import main

    out = tmp_path_factory.mktemp("smoke") / "exp"
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(["experiment", "--config", "smoke", "--out", str(out), "--progress", "jsonl"],
                stdout=stdout, stderr=stderr)
    assert code == 0, stderr.getvalue()
    return out, _events(stdout.getvalue())


def test_smoke_experiment_table_has_every_cell(smoke_run):
    out, events = smoke_run
    config = load_experiment_config("smoke")
    cells = build_cells(config)
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["cell"] for r in rows] == [c.id for c in cells]
    for row in rows:
        for key in ("dsc", "sensitivity", "precision", "shift_rare", "shift_nonrare"):
            assert row[key] != "", (row["cell"], key)
            value = float(row[key])
            if key in ("dsc", "sensitivity", "precision"):
                assert 0.0 <= value <= 1.0
    markdown = (out / "results.md").read_text()
    for technique in config.techniques:
        assert f"| {technique} |" in markdown
    assert "Not finished" not in markdown
    for name in ("metrics.png", "logit_shift.png", "logits_n2.png", "logits_n4.png"):
        assert (out / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    assert any(e["event"] == "iteration" for e in events)
    done = [e for e in events if e["event"] == "done" and e.get("stage") == "experiment"]
    assert done and done[-1]["ran"] == [c.id for c in cells] and done[-1]["skipped"] == []


def test_each_cell_records_metrics_analysis_and_its_training_cases(smoke_run):
    out, _ = smoke_run
    small = json.loads((out / "cells" / "n02_ce_s0" / "result.json").read_text())
    large = json.loads((out / "cells" / "n04_ce_s0" / "result.json").read_text())
    assert len(small["train_cases"]) == 2 and len(large["train_cases"]) == 4
    assert large["train_cases"][:2] == small["train_cases"]           # nested subsets
    assert len(small["metrics"]["per_case"]) == 2                     # the fixed test set
    analysis = json.loads((out / "cells" / "n02_ce_s0" / "analysis" / "analysis.json").read_text())
    numbers = analysis["classes"]["tumour_core"]
    assert numbers["shift"]["rare"] == small["analysis"]["shift_rare"]
    assert numbers["groups"]["train"]["cases"] == 2 and numbers["groups"]["test"]["cases"] == 2
    assert (out / "cells" / "n02_ce_s0" / "model").is_dir()
    # figures.logit_cells asks for the diagnostic's figure of n02_ce_s0 only
    assert (out / "cells" / "n02_ce_s0" / "analysis" / "logits.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "cells" / "n04_ce_s0" / "analysis" / "logits.png").exists()


def test_a_second_run_recomputes_nothing(smoke_run, cli):
    out, _ = smoke_run
    results = sorted((out / "cells").glob("*/result.json"))
    before = {p: p.stat().st_mtime_ns for p in results}
    second = cli("experiment", "--config", "smoke", "--out", out, "--progress", "jsonl")
    assert second.code == 0, second.err
    events = _events(second.out)
    assert not [e for e in events if e["event"] in ("iteration", "validation")]
    skipped = [e["cell"] for e in events if e["event"] == "log" and e.get("skipped") is True]
    assert skipped == [c.id for c in build_cells(load_experiment_config("smoke"))]
    assert {p: p.stat().st_mtime_ns for p in results} == before


def test_report_only_rewrites_the_table_from_finished_cells(smoke_run, tmp_path, cli):
    source, _ = smoke_run
    out = tmp_path / "exp"
    shutil.copytree(source, out)
    (out / "results.csv").unlink()
    shutil.rmtree(out / "cells" / "n04_ce_s0")
    result = cli("experiment", "--config", "smoke", "--out", out, "--report-only", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["ran"] == [] and summary["missing"] == ["n04_ce_s0"] and summary["cells_in_table"] == 3
    with open(out / "results.csv", newline="") as handle:
        assert [r["cell"] for r in csv.DictReader(handle)] == ["n02_ce_s0", "n02_a-focal_s0", "n04_a-focal_s0"]


def test_a_report_names_finished_seeds_it_leaves_out_and_more_seeds_extend_the_run(smoke_run, tmp_path, cli):
    source, _ = smoke_run
    out = tmp_path / "exp"
    shutil.copytree(source, out)
    ran = cli("experiment", "--config", "smoke", "--seeds", "0,3", "--cells", "n02_ce_s3", "--out", out,
              "--progress", "none", "--json")
    assert ran.code == 0, ran.err
    summary = json.loads(ran.out)
    assert summary["ran"] == ["n02_ce_s3"] and summary["cells_in_table"] == 5
    plain = cli("experiment", "--config", "smoke", "--out", out, "--report-only")
    assert plain.code == 0, plain.err
    assert ("finished cells of seed(s) 3, not in this report: add --seeds 0,3 to include them" in
            (out / "results.md").read_text())
    extended = cli("experiment", "--config", "smoke", "--seeds", "0,3", "--out", out, "--report-only", "--json")
    assert json.loads(extended.out)["cells_in_table"] == 5
    assert "not in this report" not in (out / "results.md").read_text()


def test_a_crashed_or_outdated_cell_is_redone_and_only_that_one(smoke_run, tmp_path):
    source, _ = smoke_run
    out = tmp_path / "exp"
    shutil.copytree(source, out)
    (out / "cells" / "n02_a-focal_s0" / "result.json").unlink()         # crashed before finishing
    stale = out / "cells" / "n04_ce_s0" / "result.json"
    data = json.loads(stale.read_text())
    data["hash"] = "0" * 16                                             # written under another config
    stale.write_text(json.dumps(data))
    config = load_experiment_config("smoke")
    result = run_experiment(config, out)
    assert result.ran == ["n02_a-focal_s0", "n04_ce_s0"]
    assert result.skipped == ["n02_ce_s0", "n04_a-focal_s0"]
    assert result.missing == []


def test_a_cancelled_cell_leaves_no_result_and_filters_run_a_subset(smoke_run, tmp_path):
    source, _ = smoke_run
    out = tmp_path / "exp"
    shutil.copytree(source, out)
    for cell in ("n02_a-focal_s0", "n04_ce_s0", "n04_a-focal_s0"):
        shutil.rmtree(out / "cells" / cell)
    config = load_experiment_config("smoke")
    token = CancelToken()

    def on_event(event):
        if event.kind == "iteration" and event.data.get("cell") == "n02_a-focal_s0":
            token.cancel("test")

    with pytest.raises(Cancelled):
        run_experiment(config, out, cells=["n02_*"], on_event=on_event, cancel=token)
    assert (out / "cells" / "n02_ce_s0" / "result.json").is_file()
    assert not (out / "cells" / "n02_a-focal_s0" / "result.json").exists()
    result = run_experiment(config, out, cells=["n02_ce_s0"])
    assert result.ran == [] and result.skipped == ["n02_ce_s0"]
    assert result.missing == ["n02_a-focal_s0", "n04_ce_s0", "n04_a-focal_s0"]
    assert "Not finished: n02_a-focal_s0, n04_ce_s0, n04_a-focal_s0." in (out / "results.md").read_text()
    with open(out / "results.csv", newline="") as handle:
        assert [r["cell"] for r in csv.DictReader(handle)] == ["n02_ce_s0"]
