"""Experiment configs: bundled configs by name, and one-line errors naming the file and the key."""

from __future__ import annotations

import copy
import json

import pytest

from asymseg.errors import InputError
from asymseg.experiment import bundled_configs, load_experiment_config

BASE = {
    "name": "t",
    "phantom": {"train": 6, "test": 2, "size": 32},
    "fractions": [0.5, 1.0],
    "techniques": ["ce", "a-focal"],
    "seeds": [0, 1],
    "model": {"architecture": "deepmedic",
              "network": {"normal_features": [4, 4], "lowres_features": [4, 4], "fc_features": [8],
                          "dropout": [0.0, 0.0]}},
    "train": {"iterations": 5, "batch_size": 2},
}


def _write(tmp_path, data, name="study.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _changed(**changes):
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_bundled_configs_load_by_name():
    assert {"smoke", "paper-mini"} <= set(bundled_configs())
    smoke = load_experiment_config("smoke")
    assert smoke.name == "smoke" and smoke.phantom is not None
    assert smoke.source == "smoke (bundled config)"
    mini = load_experiment_config("paper-mini")
    assert set(mini.techniques) == {"ce", "fg-sampling", "dice", "lm", "a-lm", "focal", "a-focal", "at", "a-at",
                                    "mixup", "a-mixup", "combo", "combo-authors"}
    assert len(mini.sizes()) >= 3


def test_a_valid_file_resolves_sizes_channels_and_the_phantom_target(tmp_path):
    config = load_experiment_config(_write(tmp_path, BASE))
    assert config.sizes() == [(0.5, 3), (1.0, 6)]
    assert config.model["channels"] == ["flair", "t1c"]
    assert config.target == {"label_convention": "brats2017"}
    assert config.phantom.size == (32, 32, 32)


def test_case_lists_are_resolved_against_the_config_folder(tmp_path):
    data = _changed(phantom=None, train_cases=["a", "b"], test_cases=["c"], fractions=None, train_sizes=[1, 2])
    data["model"]["channels"] = ["flair"]
    config = load_experiment_config(_write(tmp_path, data))
    assert config.train_cases == (str(tmp_path / "a"), str(tmp_path / "b"))
    assert config.test_cases == (str(tmp_path / "c"),)


def test_yaml_files_are_accepted(tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_experiment_config(path).name == "t"


@pytest.mark.parametrize("data, key, problem", [
    (_changed(techniques=["ce", "nope"]), r"techniques\[1\]", "unknown technique 'nope'"),
    (_changed(fractions=[0.5, 1.5]), r"fractions\[1\]", r"expected a number in \(0, 1\]"),
    (_changed(fractions=[1.0, 0.5]), "fractions", "increasing"),
    (_changed(fractions=[0.1, 0.15]), "fractions", "repeated case counts"),
    (_changed(seeds=[0, -1]), r"seeds\[1\]", "integer >= 0"),
    (_changed(bogus=1), "bogus", "unknown key"),
    (_changed(name=None), "name", "missing"),
    (_changed(phantom=None), "phantom", "either phantom"),
    (_changed(train_sizes=[2]), "fractions", "either fractions or train_sizes"),
    (_changed(fractions=None, train_sizes=[2, 9]), "train_sizes", "pool has 6"),
    (_changed(train={"iterations": 0}), r"train \(ce\)", "iterations"),
    (_changed(train={"technique": "ce"}), "train.technique", "set by the experiment grid"),
    (_changed(train={"lr": -1}), r"train \(ce\)", "lr"),
    (_changed(model={"architecture": "resnet"}), "model.architecture", "expected one of"),
    (_changed(model={"architecture": "deepmedic", "network": {"depth": 3}}), "model.network", "unknown"),
    (_changed(technique_overrides={"a-focal": {"gamma": -2}}), r"train \(a-focal\)", "gamma"),
    (_changed(technique_overrides={"lm": {"margin": 1}}), "technique_overrides.lm", "unknown key"),
    (_changed(analyze={"max_nonrare": 0}), "analyze.max_nonrare", "integer >= 1"),
    (_changed(device="tpu"), "device", "expected one of"),
    (_changed(phantom={"train": 4}), "phantom.test", "missing"),
    (_changed(phantom={"train": 4, "test": 1, "channels": ["pd"]}), "phantom.channels", "unknown channel"),
])
def test_config_errors_are_one_line_naming_the_file_and_the_key(tmp_path, data, key, problem):
    path = _write(tmp_path, data)
    with pytest.raises(InputError) as info:
        load_experiment_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    import re

    assert re.search(key, message), message
    assert re.search(problem, message), message


def test_unknown_names_and_unreadable_files_are_reported(tmp_path):
    with pytest.raises(InputError, match=r"no-such-config: no such config file or bundled config \(bundled: "):
        load_experiment_config("no-such-config")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"bad.json: invalid JSON"):
        load_experiment_config(bad)
    with pytest.raises(InputError, match=r"missing.json: no such config file"):
        load_experiment_config(tmp_path / "missing.json")


def test_the_cli_reports_a_config_error_in_one_line_with_exit_2(cli, tmp_path):
    path = _write(tmp_path, _changed(techniques=["ce", "nope"]))
    result = cli("experiment", "--config", path, "--out", tmp_path / "out", "--dry-run")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0] and "techniques[1]" in lines[0]


def test_case_folders_on_the_command_line_replace_the_config_data(tmp_path):
    folders = [tmp_path / name for name in "abcde"]
    config = load_experiment_config("brats2015-pair", train_cases=folders[:1], test_cases=folders[1:2])
    assert config.phantom is None
    assert config.train_cases == (str(folders[0]),) and config.test_cases == (str(folders[1]),)
    assert config.target == {"label_convention": "brats2015"}
    smoke = load_experiment_config("smoke", train_cases=folders[:4], test_cases=folders[4:])
    assert smoke.phantom is None and smoke.pool_size == 4
    with pytest.raises(InputError, match=r"smoke \(bundled config\): train_sizes: 4 cases requested but the pool has 2"):
        load_experiment_config("smoke", train_cases=folders[:2], test_cases=folders[4:])
    with pytest.raises(InputError, match="--train-case and --test-case go together"):
        load_experiment_config("smoke", train_cases=[tmp_path / "a"])
    with pytest.raises(InputError, match=r"brats2015-pair \(bundled config\): phantom: give either phantom"):
        load_experiment_config("brats2015-pair")
