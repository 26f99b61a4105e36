"""Known-answer tests of the logit diagnostic's numbers (asymseg.diagnostics, arrays only)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asymseg.diagnostics import (
    AnalysisResult,
    CaseSample,
    allocate_quota,
    analyze_classes,
    analyze_logits,
    case_samples,
    decision_variable,
    summarize_values,
)
from asymseg.diagnostics.stats import histogram, histogram_edges


def _known_groups():
    train = (np.array([2.0, 2.0, 2.0, 2.0, -3.0, -3.0]), np.array([1, 1, 1, 1, 0, 0], bool))
    test = (np.array([-1.0, 1.0, 3.0, -4.0, -2.0, 1.0, -3.0]), np.array([1, 1, 1, 0, 0, 0, 0], bool))
    return {"train": [train], "test": [test]}


def test_shift_and_wrong_side_fraction_are_exact_on_known_dz():
    result = analyze_logits(_known_groups(), class_name="tumour_core")
    numbers = result.classes["tumour_core"]
    assert numbers["shift"]["rare"] == -1.0           # mean(-1, 1, 3) - 2
    assert numbers["shift"]["nonrare"] == 1.0         # mean(-4, -2, 1, -3) - (-3)
    test_rare = numbers["groups"]["test"]["rare"]
    assert test_rare["count"] == 3
    assert test_rare["wrong_side"] == pytest.approx(1 / 3, abs=0)
    assert test_rare["wrong_side_count"] == 1
    assert numbers["groups"]["train"]["rare"]["wrong_side"] == 0.0
    assert numbers["groups"]["test"]["nonrare"]["wrong_side"] == 0.25  # only the +1 voxel
    assert test_rare["quantiles"]["p50"] == 1.0
    assert test_rare["quantiles"]["p25"] == 0.0
    assert test_rare["min"] == -1.0 and test_rare["max"] == 3.0
    assert test_rare["std"] == pytest.approx(np.std([-1.0, 1.0, 3.0]))
    assert result.shift("rare") == -1.0


def test_a_voxel_exactly_on_the_boundary_is_not_on_the_wrong_side():
    stats_rare = summarize_values(np.array([0.0, 0.0, -0.5, 1.0]), "rare")
    stats_nonrare = summarize_values(np.array([0.0, 0.5, -1.0]), "nonrare")
    assert stats_rare["wrong_side"] == 0.25
    assert stats_nonrare["wrong_side"] == pytest.approx(1 / 3)


def test_quantiles_follow_linear_interpolation():
    values = np.arange(101, dtype=np.float64)  # 0..100: the p-th quantile is p
    stats = summarize_values(values, "rare")
    assert stats["quantiles"] == {"p1": 1.0, "p5": 5.0, "p25": 25.0, "p50": 50.0, "p75": 75.0,
                                  "p95": 95.0, "p99": 99.0}


def test_binary_decision_variable_is_foreground_minus_background_logit():
    logits = np.array([[1.0, -2.0, 0.5], [3.0, 1.0, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(decision_variable(logits, 1), [2.0, 3.0, 0.0])
    np.testing.assert_array_equal(decision_variable(logits, 0), [-2.0, -3.0, 0.0])


def test_multiclass_decision_variable_uses_the_largest_other_logit():
    logits = np.array([[0.0, 5.0], [1.0, 1.0], [3.0, -1.0]], dtype=np.float32)  # (K=3, N=2)
    np.testing.assert_array_equal(decision_variable(logits, 1), [1.0 - 3.0, 1.0 - 5.0])
    np.testing.assert_array_equal(decision_variable(logits, 2), [3.0 - 1.0, -1.0 - 5.0])


def test_decision_variable_rejects_a_single_class_and_a_bad_index():
    with pytest.raises(ValueError, match="at least 2 classes"):
        decision_variable(np.zeros((1, 4)), 0)
    with pytest.raises(ValueError, match="rare_class 3 is out of range for 2 classes"):
        decision_variable(np.zeros((2, 4)), 3)


def test_quota_is_proportional_bounded_and_sums_to_the_cap():
    assert allocate_quota([100, 300], 40) == [10, 30]
    assert allocate_quota([5, 5, 5], 4) == [2, 1, 1]        # largest remainder, ties by order
    assert allocate_quota([10, 20], None) == [10, 20]
    assert allocate_quota([10, 20], 1000) == [10, 20]
    quota = allocate_quota([7, 1000, 3, 0], 50)
    assert sum(quota) == 50 and all(q <= c for q, c in zip(quota, [7, 1000, 3, 0]))


def test_nonrare_cap_is_recorded_and_rare_voxels_are_never_subsampled():
    rng = np.random.default_rng(0)
    cases = [(rng.normal(-4, 1, 5000 + 30), np.r_[np.ones(30, bool), np.zeros(5000, bool)]),
             (rng.normal(-4, 1, 15000 + 20), np.r_[np.ones(20, bool), np.zeros(15000, bool)])]
    result = analyze_logits({"train": cases, "test": cases[:1]}, max_nonrare=1000, seed=3)
    train = result.classes["rare"]["groups"]["train"]
    assert train["rare"]["count"] == 50
    assert train["nonrare"]["count"] == 1000
    assert train["nonrare_total"] == 20000 and train["nonrare_kept"] == 1000
    kept = [c["nonrare_kept_in_group"] for c in result.classes["rare"]["cases"]["train"]]
    assert kept == [250, 750]                                 # in proportion to 5000 : 15000
    assert result.settings["max_nonrare"] == 1000 and result.settings["seed"] == 3


def test_the_same_seed_picks_the_same_subsample_and_another_seed_does_not():
    rng = np.random.default_rng(1)
    case = (rng.normal(size=20000), np.r_[np.ones(10, bool), np.zeros(19990, bool)])
    a = analyze_logits({"train": [case], "test": [case]}, max_nonrare=500, seed=7).to_dict()
    b = analyze_logits({"train": [case], "test": [case]}, max_nonrare=500, seed=7).to_dict()
    c = analyze_logits({"train": [case], "test": [case]}, max_nonrare=500, seed=8).to_dict()
    assert a == b
    assert a["classes"]["rare"]["groups"]["train"]["nonrare"] != c["classes"]["rare"]["groups"]["train"]["nonrare"]


def test_histograms_share_edges_and_count_every_value():
    result = analyze_logits(_known_groups(), bins=10)
    hist = result.classes["rare"]["histogram"]
    assert len(hist["edges"]) == 11
    assert hist["edges"][0] <= 0.0 <= hist["edges"][-1]
    for group, sizes in (("train", {"rare": 4, "nonrare": 2}), ("test", {"rare": 3, "nonrare": 4})):
        for side, n in sizes.items():
            h = hist[group][side]
            assert sum(h["counts"]) + h["below"] + h["above"] == n
            widths = np.diff(hist["edges"])
            assert float(np.sum(np.array(h["density"]) * widths)) == pytest.approx(sum(h["counts"]) / n)


def test_values_outside_the_histogram_range_are_counted_below_and_above():
    edges = np.linspace(-1.0, 1.0, 5)
    h = histogram(np.array([-5.0, -1.0, 0.0, 1.0, 7.0, 9.0]), edges)
    assert h["below"] == 1 and h["above"] == 2 and sum(h["counts"]) == 3


def test_histogram_edges_include_the_boundary_and_widen_a_degenerate_range():
    edges = histogram_edges([np.full(10, 2.0)], bins=4)
    assert (edges[0], edges[-1]) == (0.0, 2.0)           # stretched to include dz = 0
    np.testing.assert_array_equal(histogram_edges([np.zeros(5)], bins=2), [-1.0, 0.0, 1.0])


def test_a_group_without_rare_voxels_gives_null_numbers_in_strict_json():
    groups = {"train": [(np.array([1.0, -2.0]), np.array([True, False]))],
              "test": [(np.array([-2.0, -3.0]), np.array([False, False]))]}
    data = analyze_logits(groups).to_dict()
    text = json.dumps(data, allow_nan=False)
    assert "NaN" not in text
    numbers = data["classes"]["rare"]
    assert numbers["groups"]["test"]["rare"]["count"] == 0
    assert numbers["groups"]["test"]["rare"]["mean"] is None
    assert numbers["shift"]["rare"] is None
    assert numbers["shift"]["nonrare"] == -0.5


def test_case_sample_validates_shapes_dtype_and_finite_values():
    with pytest.raises(ValueError, match=r"dz \(3,\) and is_rare \(2,\)"):
        CaseSample(np.zeros(3), np.zeros(2, bool))
    with pytest.raises(ValueError, match="is_rare must be boolean"):
        CaseSample(np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="NaN or infinite"):
        analyze_logits({"train": [(np.array([np.nan, 1.0]), np.array([True, False]))], "test": []})


def test_case_samples_separate_each_rare_class_from_the_nonrare_voxels():
    # 3 classes: 0 background (non-rare), 1 and 2 rare. 2x2x2 volume, one voxel outside the mask.
    classes = np.array([0, 0, 0, 1, 1, 2, 2, 0]).reshape(2, 2, 2)
    mask = np.ones((2, 2, 2), bool)
    mask.reshape(-1)[7] = False
    logits = np.zeros((3, 2, 2, 2), np.float32)
    flat = logits.reshape(3, -1)
    flat[1] = np.arange(8)          # z_1
    flat[2] = 10 - np.arange(8)     # z_2
    samples = case_samples(logits, classes, mask, (False, True, True), ("bg", "a", "b"), case_id="c0",
                           max_nonrare=None, rng=np.random.default_rng(0))
    assert set(samples) == {"a", "b"}
    a, b = samples["a"], samples["b"]
    assert int(a.is_rare.sum()) == 2 and a.nonrare_total == 3 and a.dz.size == 5   # class-2 voxels left out
    z1, z2 = flat[1], flat[2]
    expected_a = [z1[v] - max(0.0, z2[v]) for v in (3, 4, 0, 1, 2)]
    np.testing.assert_allclose(a.dz, expected_a)
    expected_b = [z2[v] - max(0.0, z1[v]) for v in (5, 6, 0, 1, 2)]
    np.testing.assert_allclose(b.dz, expected_b)
    assert b.case_id == "c0"


def test_case_samples_cap_nonrare_voxels_per_case_and_keep_the_true_count():
    classes = np.zeros((4, 8, 8), np.int64)
    classes[0, 0, :3] = 1
    logits = np.random.default_rng(0).normal(size=(2, 4, 8, 8)).astype(np.float32)
    samples = case_samples(logits, classes, np.ones_like(classes, bool), (False, True), ("bg", "core"),
                           case_id="c", max_nonrare=50, rng=np.random.default_rng(0))
    core = samples["core"]
    assert int(core.is_rare.sum()) == 3
    assert int((~core.is_rare).sum()) == 50
    assert core.nonrare_total == 256 - 3


def test_multiclass_analysis_reports_each_rare_class_with_its_index():
    rng = np.random.default_rng(0)
    sample = (rng.normal(size=40), np.r_[np.ones(10, bool), np.zeros(30, bool)])
    result = analyze_classes({"kidney": {"train": [sample], "test": [sample]},
                              "tumour": {"train": [sample], "test": [sample]}},
                             class_indices={"kidney": 1, "tumour": 2})
    assert list(result.classes) == ["kidney", "tumour"]
    assert result.classes["tumour"]["class_index"] == 2
    assert result.shift("rare", "tumour") == 0.0


def test_analysis_round_trips_through_json(tmp_path):
    result = analyze_logits(_known_groups(), meta={"model": "m"})
    written = result.save(tmp_path)
    loaded = AnalysisResult.load(tmp_path)
    assert loaded.to_dict() == result.to_dict()
    assert written["json"] == tmp_path / "analysis.json"
    json.loads((tmp_path / "analysis.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))


def test_loading_something_else_names_the_file(tmp_path):
    path = tmp_path / "analysis.json"
    path.write_text('{"format": "other"}')
    with pytest.raises(Exception, match=r"analysis.json: not an asymseg-logit-analysis v1 file"):
        AnalysisResult.load(path)
