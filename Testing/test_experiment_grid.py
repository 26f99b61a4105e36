"""The experiment grid: cell order and ids, nested seeded subsets, filters, hashes and cost estimates."""

from __future__ import annotations

import pytest

from asymseg.errors import InputError
from asymseg.experiment import ExperimentConfig, build_cells, cell_subset, dry_run, select_cells, subset_order
from asymseg.experiment.grid import cell_spec, cost_model, spec_hash, updates_per_iteration, work_per_iteration
from asymseg.experiment.validate import parse_experiment_config

NET = {"normal_features": [4, 4], "lowres_features": [4, 4], "fc_features": [8], "dropout": [0.0, 0.0]}


def _config(**changes) -> ExperimentConfig:
    data = {"name": "g", "phantom": {"train": 12, "test": 3, "size": 32}, "train_sizes": [2, 4, 12],
            "techniques": ["ce", "a-focal", "combo"], "seeds": [0, 1],
            "model": {"architecture": "deepmedic", "network": NET}, "train": {"iterations": 10}}
    data.update(changes)
    return parse_experiment_config(data, source="g.json")


def test_cells_run_by_size_then_technique_then_seed_with_readable_ids():
    cells = build_cells(_config())
    assert len(cells) == 3 * 3 * 2
    assert [c.id for c in cells[:4]] == ["n02_ce_s0", "n02_ce_s1", "n02_a-focal_s0", "n02_a-focal_s1"]
    assert cells[-1].id == "n12_combo_s1" and cells[-1].fraction == 1.0
    assert [c.index for c in cells] == list(range(len(cells)))


def test_subsets_are_nested_across_sizes_and_differ_between_seeds():
    pool = [f"case{i}" for i in range(12)]
    cells = build_cells(_config())
    for seed in (0, 1):
        subsets = [cell_subset(pool, c) for c in cells if c.seed == seed and c.technique == "ce"]
        assert [len(s) for s in subsets] == [2, 4, 12]
        assert subsets[1][:2] == subsets[0] and subsets[2][:4] == subsets[1]
        assert sorted(subsets[2]) == sorted(pool)
    assert subset_order(12, 0) != subset_order(12, 1)
    assert subset_order(12, 0) == subset_order(12, 0)


def test_every_technique_of_a_size_and_seed_trains_on_the_same_cases():
    pool = [f"case{i}" for i in range(12)]
    cells = [c for c in build_cells(_config()) if c.n_train == 4 and c.seed == 1]
    assert len({tuple(cell_subset(pool, c)) for c in cells}) == 1


def test_fractions_round_to_case_counts_of_at_least_one():
    config = parse_experiment_config(
        {"name": "g", "phantom": {"train": 12, "test": 3}, "fractions": [0.05, 0.5, 1.0], "techniques": ["ce"],
         "model": {"architecture": "deepmedic", "network": NET}}, source="g.json")
    assert [n for _, n in config.sizes()] == [1, 6, 12]


def test_cell_filters_accept_indices_ranges_and_globs():
    cells = build_cells(_config())
    assert [c.index for c in select_cells(cells, ["3"])] == [3]
    assert [c.index for c in select_cells(cells, ["0-2", "17"])] == [0, 1, 2, 17]
    assert {c.id for c in select_cells(cells, ["*_combo_*"])} == {
        "n02_combo_s0", "n02_combo_s1", "n04_combo_s0", "n04_combo_s1", "n12_combo_s0", "n12_combo_s1"}
    assert [c.id for c in select_cells(cells, ["n04_ce_*,n12_ce_s0"])] == ["n04_ce_s0", "n04_ce_s1", "n12_ce_s0"]
    assert select_cells(cells, None) == cells
    with pytest.raises(InputError, match=r"--cells 'n99_\*' matches no cell \(ids look like n02_ce_s0; indices 0-17\)"):
        select_cells(cells, ["n99_*"])


def test_the_cell_hash_changes_with_what_determines_the_cell_only():
    config = _config()
    cells = build_cells(config)
    ce, focal = cells[0], cells[2]
    data = {"kind": "phantom"}

    def digest(cfg, cell):
        return spec_hash(cell_spec(cfg, cell, ["a", "b"], ["t"], data))

    assert digest(config, ce) == digest(_config(), ce)
    tuned = _config(technique_overrides={"a-focal": {"gamma": 2}})
    assert digest(tuned, focal) != digest(config, focal)
    assert digest(tuned, ce) == digest(config, ce)           # another technique's override
    assert digest(_config(train={"iterations": 11}), ce) != digest(config, ce)
    assert spec_hash(cell_spec(config, ce, ["a", "c"], ["t"], data)) != digest(config, ce)


def test_updates_per_iteration_count_the_extra_steps():
    assert updates_per_iteration("ce") == 1
    assert updates_per_iteration("a-at") == 2
    assert updates_per_iteration("a-mixup") == 2
    assert updates_per_iteration("combo") == 3
    assert work_per_iteration("ce") == 1 and work_per_iteration("a-at") == 3 and work_per_iteration("combo") == 4


def test_cost_model_prefers_measured_cells_over_the_config_estimate():
    config = _config(estimate={"seconds_per_update": 2.0, "seconds_per_case": 3.0})
    assert cost_model(config).seconds_per_update == 2.0 and not cost_model(config).measured
    finished = [{"timing": {"train_seconds": 10.0, "work": 100, "infer_seconds": 8.0, "cases_inferred": 4}},
                {"timing": {"train_seconds": 30.0, "work": 100, "infer_seconds": 8.0, "cases_inferred": 4}}]
    costs = cost_model(config, finished)
    assert costs.measured and costs.seconds_per_update == pytest.approx(0.2) and costs.seconds_per_case == 2.0
    cells = build_cells(config)
    combo = next(c for c in cells if c.technique == "combo" and c.n_train == 2)
    # combo: clean (1) + adversarial (2: direction and update) + mixup (1) = 4 passes per iteration
    assert costs.cell_seconds(config, combo, n_test=3) == pytest.approx(10 * 4 * 0.2 + (2 + 3) * 2.0)


def test_dry_run_plans_every_selected_cell_without_writing_data(tmp_path):
    planned, costs = dry_run(_config(), tmp_path / "exp", cells=["*_ce_*"])
    assert [p.cell.id for p in planned] == ["n02_ce_s0", "n02_ce_s1", "n04_ce_s0", "n04_ce_s1",
                                            "n12_ce_s0", "n12_ce_s1"]
    assert not any(p.finished for p in planned)
    assert all(p.estimated_seconds > 0 for p in planned)
    assert not (tmp_path / "exp").exists()


def test_dry_run_cli_prints_the_grid_and_the_estimate_without_creating_anything(cli, tmp_path):
    import json

    out = tmp_path / "exp"
    text = cli("experiment", "--config", "paper-mini", "--out", out, "--dry-run")
    assert text.code == 0, text.err
    lines = text.out.splitlines()
    assert lines[0].startswith("experiment paper-mini (config: paper-mini (bundled config)): 39 cell(s), 39 to run")
    assert "n02_ce_s0" in lines[1] and "n12_combo-authors_s0" in lines[39]
    assert lines[-1].startswith("estimated time to run: ")
    result = cli("experiment", "--config", "smoke", "--out", out, "--dry-run", "--json", "--cells", "*_ce_*")
    data = json.loads(result.out)
    assert [c["id"] for c in data["cells"]] == ["n02_ce_s0", "n04_ce_s0"]
    assert data["cells"][1]["train_cases"][:2] == data["cells"][0]["train_cases"]
    assert data["estimated_seconds"] > 0 and data["cost_model"]["measured"] is False
    assert not out.exists()


def test_more_seeds_extend_a_grid_without_changing_the_cells_it_had(tmp_path, cli, capsys):
    import json

    from asymseg.experiment import load_experiment_config

    one, _ = dry_run(load_experiment_config("smoke"), tmp_path / "exp")
    three, _ = dry_run(load_experiment_config("smoke", seeds=[0, 4, 7]), tmp_path / "exp")
    assert [p.cell.seed for p in three] == [0, 4, 7] * (len(one))
    by_id = {p.cell.id: p for p in three}
    for p in one:
        assert by_id[p.cell.id].hash == p.hash and by_id[p.cell.id].train_cases == p.train_cases
    assert by_id["n02_ce_s4"].hash != by_id["n02_ce_s0"].hash
    result = cli("experiment", "--config", "smoke", "--seeds", "0,4", "--out", tmp_path / "exp", "--dry-run",
                 "--json")
    assert result.code == 0, result.err
    assert [c["id"] for c in json.loads(result.out)["cells"]][:2] == ["n02_ce_s0", "n02_ce_s4"]
    for bad in ("0,0", "1,-2", "x", ","):
        with pytest.raises(SystemExit) as exit_:  # argparse usage error
            cli("experiment", "--config", "smoke", "--seeds", bad, "--out", tmp_path / "exp", "--dry-run")
        assert exit_.value.code == 2 and "argument --seeds" in capsys.readouterr().err, bad
    assert not (tmp_path / "exp").exists()
