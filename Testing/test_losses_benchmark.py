"""The loss benchmark module: its interface, table, JSON and standalone entry (tiny sizes)."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys

import pytest

from asymseg.bench import losses as bench
from asymseg.errors import InputError


class _Context:
    def __init__(self) -> None:
        self.stdout, self.stderr = io.StringIO(), io.StringIO()


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_run_prints_a_table_and_returns_the_ratios():
    ctx = _Context()
    result = bench.run(_args("--shapes", "2x2x3x3x3,1x3x4x4x4", "--repeats", "3", "--warmup", "1"), ctx)
    assert result["benchmark"] == "losses" and [row["shape"] for row in result["rows"]] == ["2x2x3x3x3", "1x3x4x4x4"]
    for row in result["rows"]:
        assert row["asymmetric_ce_ms"] > 0 and row["cross_entropy_ms"] > 0
        assert row["ratio"] == pytest.approx(row["asymmetric_ce_ms"] / row["cross_entropy_ms"], rel=1e-2)
        assert row["ratio_min"] > 0
        assert row["ratio_cpu"] is None or row["ratio_cpu"] >= 0          # None when the CPU clock read 0
    table = ctx.stdout.getvalue()
    assert "2x2x3x3x3" in table and "ratio" in table and "margin 0.2, gamma 2.0" in table


def test_json_output_is_one_object():
    ctx = _Context()
    bench.run(_args("--shapes", "2x2x3x3x3", "--repeats", "2", "--json"), ctx)
    data = json.loads(ctx.stdout.getvalue())
    assert data["settings"]["margin"] == 0.2 and data["rows"][0]["voxels"] == 54


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="--shapes: '2x2' needs B, C >= 2"):
        bench.run(_args("--shapes", "2x2"), _Context())
    with pytest.raises(InputError, match="is not BxCxDxHxW"):
        bench.run(_args("--shapes", "2xtwo"), _Context())
    with pytest.raises(InputError, match="--repeats must be >= 1"):
        bench.run(_args("--repeats", "0"), _Context())


def test_the_module_runs_standalone():
    result = subprocess.run([sys.executable, "-m", "asymseg.bench.losses", "--json", "--repeats", "1", "--warmup", "0",
                             "--shapes", "1x2x3x3x3"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"][0]["shape"] == "1x2x3x3x3"
    bad = subprocess.run([sys.executable, "-m", "asymseg.bench.losses", "--shapes", "1x1x3"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "needs B, C >= 2" in bad.stderr
