"""``asymseg bench inference``: a tiny smoke run of all three methods (the full run is manual)."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("monai")

NARROW = ["--hparam", "normal_features=[6,6,6,6,6,6,6,6]", "--hparam", "lowres_features=[6,6,6,6,6,6,6,6]",
          "--hparam", "fc_features=[12,12]"]


@pytest.mark.slow
def test_tiny_benchmark_runs_every_method_with_identical_labels(tmp_path, asymseg_proc):
    proc = asymseg_proc("bench", "inference", "--size", "36,33,30", "--channels", "2", *NARROW,
                        "--monai-roi", "24", "--matmul-sizes", "128", "--workdir", tmp_path, "--json",
                        env={"ASYMSEG_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    runs = {r["method"]: r for r in report["runs"]}
    assert set(runs) == {"ours", "monai", "monai-crop", "naive"}
    for method in ("monai", "monai-crop", "naive"):
        assert runs[method]["label_mismatches"] == 0, runs[method]
        assert runs[method]["max_probability_difference"] < 1e-4
    for run in runs.values():
        assert run["seconds"] > 0 and run["gflop"] > 0 and run["peak_rss_gb"] > 0.1
        assert run["gflops"] == pytest.approx(run["gflop"] / run["seconds"])
        assert run["peak_share"] == pytest.approx(run["gflops"] / report["matmul_peak_gflops"]["best"])
    # MONAI's windows overlap and the naive segments cover the whole volume: both compute more.
    assert runs["monai"]["computed_voxels"] > runs["ours"]["computed_voxels"]
    # Given the brain box on our output grid, MONAI computes the box's voxels (its windows may overlap).
    assert runs["ours"]["computed_voxels"] <= runs["monai-crop"]["computed_voxels"] < runs["monai"]["computed_voxels"]
    assert runs["monai-crop"]["settings_text"].startswith("brain box ")
    assert re.match(r"brain box, \d+ tile\(s\) of \d+x\d+x\d+ \(\d+ without brain skipped\), ",
                    runs["ours"]["settings_text"]), runs["ours"]["settings_text"]
    assert runs["naive"]["computed_voxels"] >= 36 * 33 * 30
    assert set(report["goals"]["2ch"]) >= {"speedup_vs_monai", "ours_peak_share", "ours_peak_rss_gb",
                                           "per_voxel_vs_monai", "speedup_vs_monai_same_crop",
                                           "per_voxel_vs_monai_same_crop"}
    goal = report["goals"]["2ch"]
    assert goal["speedup_vs_monai_same_crop"] == pytest.approx(runs["monai-crop"]["seconds"] / runs["ours"]["seconds"])
    assert goal["per_voxel_vs_monai"] == pytest.approx(
        runs["ours"]["voxels_per_second"] / runs["monai"]["voxels_per_second"])

    from asymseg.bench.inference import markdown

    table = markdown(report)
    assert "| 2 | monai |" in table and "| 2 | monai-crop |" in table and "identical" in table and "% of peak" in table
    assert "MONAI given the same brain box: " in table and "x per computed voxel" in table


def test_bench_dispatches_to_the_inference_topic():
    from asymseg.cli import build_parser

    args = build_parser().parse_args(["bench", "inference", "--size", "40", "--channels", "2"])
    assert args.bench_module == "asymseg.bench.inference"
    assert args.size == "40" and args.channels == "2" and args.methods == "ours,monai,monai-crop,naive"


def test_bad_options_exit_2(cli):
    result = cli("bench", "inference", "--channels", "3")
    assert result.code == 2 and "--channels 3" in result.err
    result = cli("bench", "inference", "--methods", "ours,tvm")
    assert result.code == 2 and "--methods" in result.err
    result = cli("bench", "inference", "--hparam", "fc_features=[1,")
    assert result.code == 2 and "not JSON" in result.err
