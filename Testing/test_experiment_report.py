"""The experiment report: CSV rows, the Markdown table (mean ± sd over seeds) and the Fig. 1 plots."""

from __future__ import annotations

import csv
import io

import pytest

from asymseg.experiment.report import (
    CSV_COLUMNS,
    aggregate,
    metrics_figure,
    paired_differences,
    results_csv,
    results_markdown,
    shift_figure,
    technique_style,
)


def _row(n, technique, seed, dsc, sens, prec, shift):
    return {"cell": f"n{n:02d}_{technique}_s{seed}", "index": 0, "fraction": n / 4, "n_train": n,
            "technique": technique, "seed": seed, "dsc": dsc, "sensitivity": sens, "precision": prec,
            "shift_rare": shift, "shift_nonrare": 0.1, "test_rare_wrong_side": 0.2}


ROWS = [
    _row(2, "ce", 0, 0.5, 0.4, 0.9, -3.0), _row(2, "ce", 1, 0.7, 0.6, 0.9, -1.0),
    _row(2, "a-focal", 0, 0.6, 0.7, 0.8, -1.0), _row(2, "a-focal", 1, 0.6, 0.7, 0.8, -1.0),
    _row(4, "ce", 0, 0.8, 0.8, 0.9, -0.5), _row(4, "a-focal", 0, None, None, None, None),
]


def test_csv_has_one_row_per_cell_and_empty_fields_for_missing_numbers():
    rows = list(csv.DictReader(io.StringIO(results_csv(ROWS))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(ROWS)
    assert rows[0]["cell"] == "n02_ce_s0" and float(rows[0]["dsc"]) == 0.5
    assert rows[-1]["dsc"] == "" and rows[-1]["shift_rare"] == ""


def test_aggregate_gives_mean_and_sample_sd_over_seeds():
    entries = aggregate(ROWS, ["ce", "a-focal"])
    assert [(e["n_train"], e["technique"], e["seeds"]) for e in entries] == [
        (2, "ce", 2), (2, "a-focal", 2), (4, "ce", 1), (4, "a-focal", 1)]
    mean, sd = entries[0]["dsc"]
    assert mean == 0.6 and abs(sd - 0.1414213562) < 1e-9
    assert entries[0]["shift_rare"] == (-2.0, 2 ** 0.5)
    assert entries[2]["dsc"] == (0.8, None)                    # one seed: no sd
    assert entries[3]["dsc"] == (None, None)


def test_markdown_table_shows_percentages_with_sd_and_every_cell_group():
    text = results_markdown(ROWS, ["ce", "a-focal"], title="Results: t", notes=["note line"])
    assert text.startswith("# Results: t\n\nnote line\n")
    table = text.split("\n\n")[2]
    assert len(table.splitlines()) == 2 + 4                     # header + one row per (size, technique)
    assert "| 2 | 0.50 | ce | 2 | 60.0 ± 14.1 | 50.0 ± 14.1 | 90.0 ± 0.0 | -2.00 ± 1.41 | +0.10 ± 0.00 |" in text
    assert "| 4 | 1.00 | ce | 1 | 80.0 | 80.0 | 90.0 | -0.50 | +0.10 |" in text
    assert "| 4 | 1.00 | a-focal | 1 | n/a | n/a | n/a | n/a |" in text


def test_metrics_figure_has_dsc_sensitivity_precision_with_one_line_per_technique():
    fig = metrics_figure(ROWS, ["ce", "a-focal"], title="t")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["DSC", "Sensitivity", "Precision"]
    labels = [t.get_text() for t in axes[-1].get_legend().get_texts()]
    assert labels == ["ce", "a-focal"]
    assert len(shift_figure(ROWS, ["ce", "a-focal"], title="t").axes) == 2


def test_asymmetric_variants_share_their_family_colour_and_are_dashed():
    assert technique_style("a-focal")["color"] == technique_style("focal")["color"]
    assert technique_style("a-focal")["linestyle"] == "--" and technique_style("focal")["linestyle"] == "-"


def test_findings_give_the_numbers_behind_the_paper_questions():
    from asymseg.experiment.report import findings

    rows = [_row(2, "focal", 0, 0.4, 0.3, 0.8, -4.0), _row(4, "focal", 0, 0.7, 0.7, 0.85, -1.0),
            _row(2, "a-focal", 0, 0.5, 0.5, 0.7, -2.0), _row(4, "a-focal", 0, 0.72, 0.75, 0.8, -0.5)]
    lines = findings(rows, ["focal", "a-focal"])
    assert "  - focal: sensitivity -40.0, precision -5.0 (sensitivity falls more)" in lines
    assert "  - a-focal: 2: -2.00, 4: -0.50" in lines
    assert "  - a-focal - focal: 2: +10.0 (1/1), 4: +2.0 (1/1)" in lines
    text = results_markdown(rows, ["focal", "a-focal"], title="t")
    assert "## Numbers behind the paper's questions" in text


def test_differences_are_matched_by_seed_and_count_the_seeds_a_technique_wins():
    (entry,) = paired_differences(ROWS, ["ce", "a-focal"], "ce")  # n=4: a-focal has no DSC, so no pair
    assert (entry["n_train"], entry["technique"], entry["reference"], entry["seeds"]) == (2, "a-focal", "ce", 2)
    assert entry["dsc"][0] == pytest.approx(0.0, abs=1e-12) and entry["dsc"][1] == pytest.approx(0.1414213562)
    assert entry["sensitivity"] == pytest.approx((0.2, 0.1414213562)) and entry["dsc_higher"] == 1
    assert entry["precision"] == pytest.approx((-0.1, 0.0))
    # the difference of means would hide that a-focal loses on one seed and wins on the other
    rows = ROWS + [_row(2, "lm", 1, 0.75, 0.6, 0.9, -1.0)]
    (lm,) = [e for e in paired_differences(rows, ["ce", "lm"], "ce")]
    assert lm["seeds"] == 1 and lm["dsc"] == pytest.approx((0.05, None)) and lm["dsc_higher"] == 1
    against = paired_differences(ROWS, ["a-focal"], "", against={"a-focal": "ce"})
    assert [e["reference"] for e in against] == ["ce"]
    text = results_markdown(ROWS, ["ce", "a-focal"], title="t")
    assert "## Seed-matched differences against ce" in text
    assert "| 2 | a-focal | 2 | +0.0 ± 14.1 | +20.0 ± 14.1 | -10.0 ± 0.0 | 1/2 |" in text
