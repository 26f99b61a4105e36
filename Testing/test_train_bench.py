"""``asymseg bench training``: a small run produces a row per preset relative to ce (no timing asserts)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("psutil")


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_training_reports_every_preset_against_ce(cli):
    result = cli("--threads", "1", "bench", "training", "--presets", "a-mixup,combo", "--size", "32",
                 "--batch-size", "2", "--rounds", "1", "--iterations", "1", "--cases", "2", "--device", "cpu",
                 "--network-param", "normal_features=[4,4,4,4]", "--network-param", "lowres_features=[4,4,4,4]",
                 "--network-param", "fc_features=[8]", "--network-param", "dropout=[0,0]", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    rows = {r["preset"]: r for r in report["rows"]}
    assert list(rows) == ["ce", "a-mixup", "combo"]
    assert [rows[p]["updates"] for p in rows] == [1, 2, 3]
    assert rows["ce"]["ratio"] == 1.0 and rows["ce"]["cpu_ratio"] == 1.0
    for row in rows.values():
        assert row["seconds_per_iteration"] > 0 and row["peak_rss_mib"] > 0
        assert row["ratio_per_update"] == pytest.approx(row["ratio"] / row["updates"])
    assert report["settings"]["output_patch"] == [9, 9, 9]


def test_bench_training_refuses_unknown_presets(cli):
    result = cli("bench", "training", "--presets", "ce,nope")
    assert result.code == 2 and "unknown preset(s) ['nope']" in result.err
