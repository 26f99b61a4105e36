"""TrainConfig: validation, JSON/YAML files, command-line overrides, schedules, technique resolution."""

from __future__ import annotations

import json
import math

import pytest

from asymseg.errors import InputError
from asymseg.train.config import AUTHORS_LR_MILESTONES, TrainConfig, load_config, read_config_file


def make(**kw) -> TrainConfig:
    base = {"train_cases": ["a"], "output_model": "out"}
    base.update(kw)
    return TrainConfig(**base)


def test_defaults_follow_the_authors_recipe():
    cfg = make()
    assert cfg.optimizer == "rmsprop" and cfg.lr == 1e-3 and cfg.schedule == "step"
    assert cfg.architecture == "deepmedic" and cfg.base_model is None
    assert cfg.technique_spec().fg_fraction == 0.5
    assert cfg.train_cases == ("a",)


@pytest.mark.parametrize("changes, pattern", [
    ({"batch_size": 0}, "batch_size"),
    ({"iterations": 2.5}, "iterations"),
    ({"lr": -1.0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"schedule": "linear"}, "schedule.*constant"),
    ({"optimizer": "sgd"}, "optimizer.*rmsprop"),
    ({"device": "tpu"}, "device"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"fg_fraction": 1.5}, "fg_fraction"),
    ({"technique": "nope"}, "unknown technique 'nope'"),
    ({"base_model": "m", "architecture": "unet"}, "either base_model or architecture"),
    ({"base_model": "m", "channels": ["flair"]}, "base model's card"),
    ({"label_convention": "brats2015", "foreground_labels": [1]}, "either label_convention"),
    ({"lr_milestones": [0.8, 0.2]}, "lr_milestones"),
    ({"train_cases": []}, "at least one training case"),
])
def test_invalid_values_raise_input_error_naming_the_key(changes, pattern):
    with pytest.raises(InputError, match=pattern):
        make(**changes)


def test_from_dict_splits_a_technique_mapping_and_refuses_unknown_keys():
    cfg = TrainConfig.from_dict({"train_cases": ["a"], "output_model": "o",
                                 "technique": {"name": "a-focal", "gamma": 2}})
    assert cfg.technique == "a-focal" and cfg.technique_overrides == {"gamma": 2}
    assert cfg.technique_spec().gamma == 2.0
    with pytest.raises(InputError, match=r"unknown key\(s\) \['iters'\]"):
        TrainConfig.from_dict({"train_cases": ["a"], "output_model": "o", "iters": 3})


def test_round_trip_through_json(tmp_path):
    cfg = make(technique="combo", technique_overrides={"gamma": 3.0}, patch_output_size=[9, 9, 12],
               network={"fc_features": [16, 16]})
    cfg.save(tmp_path / "c.json")
    again = TrainConfig.from_dict(json.loads((tmp_path / "c.json").read_text()))
    assert again == cfg


def test_yaml_file_resolves_relative_paths_and_options_win(tmp_path):
    (tmp_path / "cases").mkdir()
    (tmp_path / "run.yaml").write_text(
        "train_cases: [cases/p1, cases/p2]\n"
        "output_model: my-model\n"
        "technique: {name: a-focal, gamma: 2}\n"
        "iterations: 50\n")
    cfg = load_config(tmp_path / "run.yaml", {"iterations": 7, "lr": None})
    assert cfg.train_cases == (str(tmp_path / "cases/p1"), str(tmp_path / "cases/p2"))
    assert cfg.output_model == "my-model"  # a bare name stays a registry name
    assert cfg.iterations == 7 and cfg.lr == 1e-3
    assert cfg.technique_spec().gamma == 2.0


def test_changing_the_technique_on_the_command_line_drops_the_files_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train_cases": ["x"], "output_model": "m",
                                "technique": {"name": "a-focal", "gamma": 2}}))
    assert load_config(path, {"technique": "ce"}).technique_spec().gamma == 0.0
    merged = load_config(path, {"technique_overrides": {"margin": 0.5}})
    assert merged.technique_overrides == {"gamma": 2, "margin": 0.5}


def test_a_base_model_on_the_command_line_replaces_the_files_architecture(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train_cases": ["x"], "output_model": "m", "architecture": "unet",
                                "channels": ["flair"]}))
    cfg = load_config(path, {"base_model": "some-model"})
    assert cfg.base_model == "some-model" and cfg.architecture is None and cfg.channels is None


def test_bad_config_files_give_one_line_errors(tmp_path):
    with pytest.raises(InputError, match=r"missing\.json: no such config file"):
        read_config_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON"):
        read_config_file(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="mapping"):
        read_config_file(listy)
    with pytest.raises(InputError, match="no training cases"):
        load_config(None, {"output_model": "m"})


def test_step_schedule_halves_at_the_authors_milestones():
    cfg = make(iterations=350, schedule="step")
    milestones = [round(m * 350) for m in AUTHORS_LR_MILESTONES]
    assert milestones == [170, 220, 270, 300, 330]
    assert cfg.lr_at(0) == cfg.lr_at(169) == 1e-3
    assert cfg.lr_at(170) == 5e-4 and cfg.lr_at(349) == 1e-3 / 32


def test_cosine_poly_and_constant_schedules():
    cos = make(iterations=100, schedule="cosine")
    assert cos.lr_at(0) == 1e-3 and math.isclose(cos.lr_at(50), 5e-4)
    poly = make(iterations=100, schedule="poly", poly_power=1.0)
    assert math.isclose(poly.lr_at(75), 2.5e-4)
    assert make(schedule="constant").lr_at(999) == 1e-3


def test_config_fields_override_the_technique():
    assert make(technique="fg-sampling").technique_spec().fg_fraction == 0.8
    assert make(technique="fg-sampling", fg_fraction=0.3).technique_spec().fg_fraction == 0.3
    spec = make(technique="a-aug", augment=False).technique_spec()
    assert spec.augment is False and spec.asym_aug_p is None
    with pytest.raises(InputError, match="unknown technique setting"):
        make(technique_overrides={"gama": 2}).technique_spec()
