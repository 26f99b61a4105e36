"""finetune(): a tiny real run, resume equivalence, cancel, best-model selection, base models, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from asymseg.errors import Cancelled, InputError, ModelError
from asymseg.events import CancelToken
from asymseg.modelfile import create_model, save_model
from asymseg.registry import load_model
from asymseg.target import TargetSpec
from asymseg.techniques import TECHNIQUES
from asymseg.train import TrainConfig, finetune, load_run_config
from asymseg.train.checkpoint import load_checkpoint
from helpers.nets import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from asymseg.phantom import write_phantom_cases

    out = tmp_path_factory.mktemp("phantoms")
    return [str(p) for p in write_phantom_cases(out, 4, size=(32, 32, 32), seed=11)]


def config(cases, tmp_path, **kw) -> TrainConfig:
    base = dict(train_cases=cases[:2], val_cases=cases[2:3], output_model=str(tmp_path / "model"),
                network=TINY, iterations=8, batch_size=2, val_every=4, device="cpu", technique="ce", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights(path):
    return load_model(path).net.state_dict()


def test_a_tiny_run_lowers_the_loss_and_writes_a_model_with_its_provenance(cases, tmp_path):
    events = []
    result = finetune(config(cases, tmp_path, iterations=40, batch_size=4, val_every=20, schedule="constant",
                             technique="a-focal"), on_event=events.append)
    assert result.status == "done" and result.iterations == 40
    records = [r for r in jsonl(result.run_dir / "train_log.jsonl") if r["kind"] == "iteration"]
    losses = [r["losses"]["clean"] for r in records]
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])

    loaded = load_model(result.model_path)
    prov = loaded.card.provenance
    assert prov["data"] == {"train": ["phantom_000", "phantom_001"], "val": ["phantom_002"]}
    assert prov["technique"]["name"] == "a-focal" and prov["technique"]["gamma"] == 4.0
    assert prov["iterations"] == result.best_iteration and prov["iterations_run"] == 40
    assert prov["validation"]["dsc"] == result.best_metrics["dsc"] and prov["base_model"] is None
    assert prov["hyperparameters"]["batch_size"] == 4 and prov["selected_by"] == "validation_dsc"
    assert loaded.card.channels == ("flair", "t1c") and loaded.card.target.rare == (False, True)
    point = loaded.card.operating_point
    assert point.chosen_on == "validation" and point.validation["cases"] == ["phantom_002"] and not point.tta
    for name in ("train_log.jsonl", "train_log.csv", "train_config.json"):
        assert (result.model_path / name).is_file()
    csv_lines = (result.model_path / "train_log.csv").read_text().splitlines()
    assert csv_lines[0].startswith("iteration,lr,loss_clean") and len(csv_lines) == 41

    kinds = [e.kind for e in events]
    assert kinds.count("start") == 1 and kinds[-1] == "done" and kinds.count("validation") == 2
    assert "checkpoint" in kinds
    iteration = [e for e in events if e.kind == "iteration"]
    assert iteration[-1].done == 40 and "loss_clean" in iteration[-1].data and "eta_seconds" in iteration[-1].data
    validation = [e for e in events if e.kind == "validation"][0]
    assert validation.data["cases"][0]["case_id"] == "phantom_002"
    assert set(validation.data["mean"]) >= {"dsc", "sensitivity", "precision"}


def test_a_model_trained_from_scratch_records_the_median_training_spacing_and_trains_at_it(tmp_path):
    from asymseg.phantom import write_phantom_cases

    thick = write_phantom_cases(tmp_path / "thick", 2, size=(32, 32, 22), seed=3, spacing=(1.0, 1.0, 1.5))
    (fine,) = write_phantom_cases(tmp_path / "fine", 1, size=(32, 32, 32), seed=4)
    result = finetune(TrainConfig(train_cases=[str(c) for c in (*thick, fine)], output_model=str(tmp_path / "m"),
                                  iterations=2, batch_size=2, val_fraction=0, network=TINY))
    card = load_model(result.model_path).card
    assert card.spacing == (1.0, 1.0, 1.5) and card.orientation == "LPS"
    # Training loads its cases on the card's grid: the 1 mm case at 1.5 mm slices, the others as they are.
    assert _working_slices(fine, card) == 21 and _working_slices(thick[0], card) == 22

    (only_fine,) = write_phantom_cases(tmp_path / "fine2", 1, size=(32, 32, 32), seed=5)
    same = finetune(TrainConfig(train_cases=[str(only_fine)], output_model=str(tmp_path / "m2"), iterations=1,
                                batch_size=2, val_fraction=0, network=TINY))
    assert load_model(same.model_path).card.spacing == (1.0, 1.0, 1.0)


def _working_slices(folder, card) -> int:
    from asymseg.io import discover_case, load_case

    case = load_case(discover_case(folder), channels=list(card.channels), normalize=True, require_label=True,
                     spacing=card.spacing, orientation=card.orientation)
    return case.image.shape[1]


def test_throttled_iteration_events_still_report_the_first_and_the_last_of_a_session(cases, tmp_path, monkeypatch):
    from asymseg.train import loop

    monkeypatch.setattr(loop, "EVENT_INTERVAL", 1e9)  # as on a machine where iterations are very fast
    events = []
    paused = finetune(config(cases, tmp_path / "a", iterations=8, val_every=8), stop_after=5, on_event=events.append)
    assert paused.status == "stopped"
    assert [e.done for e in events if e.kind == "iteration"] == [1, 5]
    estimate = [e for e in events if e.kind == "log" and "seconds_per_iteration" in e.data]
    assert len(estimate) == 1 and estimate[0].data["measured_iterations"] == 3
    events.clear()
    finetune(load_run_config(paused.run_dir), resume=True, on_event=events.append)
    assert [e.done for e in events if e.kind == "iteration"] == [6, 8]  # the resumed session's first and last


@pytest.mark.parametrize("technique, bn", [("combo", "ema"), ("a-aug", "ema"), ("combo-authors", "window")])
def test_n_iterations_in_one_go_equal_half_then_resume(cases, tmp_path, technique, bn):
    kw = dict(iterations=8, val_every=2, checkpoint_every=3, technique=technique, schedule="step",
              batchnorm_stats=bn)
    straight = finetune(config(cases, tmp_path / "a", **kw))
    cfg = config(cases, tmp_path / "b", **kw)
    paused = finetune(cfg, stop_after=4)
    assert paused.status == "stopped" and paused.iterations == 4
    assert load_checkpoint(paused.run_dir).iteration == 4
    resumed = finetune(load_run_config(paused.run_dir), resume=True)
    assert resumed.status == "done" and resumed.iterations == 8

    a = load_checkpoint(straight.run_dir)
    b = load_checkpoint(resumed.run_dir)
    for key, value in a.weights.items():
        assert torch.equal(value, b.weights[key]), key
    for key, value in a.optimizer["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, b.optimizer["state"][key][name]), (key, name)
    assert a.state["sampler_rng"] == b.state["sampler_rng"]
    assert straight.best_iteration == resumed.best_iteration
    assert straight.history == resumed.history
    wa, wb = weights(straight.model_path), weights(resumed.model_path)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    def rows(path):  # the logs agree except for timings
        return [line.rsplit(",", 1)[0] for line in (path / "train_log.csv").read_text().splitlines()]

    assert rows(straight.run_dir) == rows(resumed.run_dir)


def test_cancel_finishes_the_iteration_writes_a_checkpoint_and_keeps_the_model(cases, tmp_path):
    token = CancelToken()
    events = []

    def on_event(event):
        events.append(event)
        if event.kind == "validation":
            token.cancel("cancelled by test")

    cfg = config(cases, tmp_path, iterations=12, val_every=2, checkpoint_every=5)
    with pytest.raises(Cancelled, match="after iteration 2; resume with --resume"):
        finetune(cfg, on_event=on_event, cancel=token)
    assert events[-1].kind == "cancelled"
    run_dir = tmp_path / "model.run"
    assert load_checkpoint(run_dir).iteration == 2
    best = load_model(tmp_path / "model")
    assert best.card.provenance["iterations"] == 2
    result = finetune(load_run_config(run_dir), resume=True)
    assert result.iterations == 12 and result.status == "done"


def test_a_cancel_before_any_evaluation_still_leaves_a_model(cases, tmp_path):
    token = CancelToken()

    def on_event(event):
        if event.kind == "iteration":
            token.cancel("stop now")

    with pytest.raises(Cancelled, match="stop now after iteration 1"):
        finetune(config(cases, tmp_path, val_every=50, iterations=60), cancel=token, on_event=on_event)
    assert load_checkpoint(tmp_path / "model.run").iteration == 1
    assert load_model(tmp_path / "model").card.provenance["status"] == "cancelled"


def test_without_validation_cases_the_best_model_follows_the_training_loss(cases, tmp_path):
    result = finetune(config(cases, tmp_path, val_cases=[], iterations=6, val_every=2))
    assert set(result.best_metrics) == {"training_loss"}
    assert [h["iteration"] for h in result.history] == [2, 4, 6]
    best = min(result.history, key=lambda h: h["training_loss"])
    assert result.best_iteration == best["iteration"]
    assert load_model(result.model_path).card.provenance["selected_by"] == "training_loss"


def test_patience_stops_early(cases, tmp_path):
    result = finetune(config(cases, tmp_path, val_cases=[], iterations=40, val_every=1, patience=2, lr=1e-9))
    assert result.status == "early_stopped" and result.iterations < 40
    assert [h["best"] for h in result.history][-2:] == [False, False]
    assert load_checkpoint(result.run_dir).iteration == result.iterations


def test_hold_out_fraction_validates_on_held_out_training_cases(cases, tmp_path):
    result = finetune(config(cases, tmp_path, train_cases=cases[:3], val_cases=[], val_fraction=0.34,
                             iterations=2, val_every=2))
    data = load_model(result.model_path).card.provenance["data"]
    assert len(data["train"]) == 2 and len(data["val"]) == 1
    assert sorted(data["train"] + data["val"]) == ["phantom_000", "phantom_001", "phantom_002"]
    assert "dsc" in result.best_metrics


def test_fine_tuning_a_base_model_takes_its_card_and_starts_from_its_weights(cases, tmp_path):
    net, card = create_model("deepmedic", ["t1c", "flair"], TargetSpec.tumour_core("brats2017"), seed=5,
                             name="base", **TINY)
    card = card.replace(provenance={**card.provenance, "license_note": "phantom data"})
    base = save_model(tmp_path / "base", net, card)
    events = []
    result = finetune(config(cases, tmp_path, network={}, base_model=str(base), architecture=None, iterations=2,
                             val_every=2, lr=1e-12), on_event=events.append)
    loaded = load_model(result.model_path)
    assert loaded.card.channels == ("t1c", "flair")
    prov = loaded.card.provenance
    assert prov["base_model"]["name"] == "base" and prov["license_note"] == "phantom data"
    assert prov["base_provenance"]["init_seed"] == 5
    start = [e for e in events if e.kind == "start"][0]
    assert start.data["config"]["base_model"] == str(base)
    # lr 1e-12: the weights barely move from the base model's.
    for key, value in net.state_dict().items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(loaded.net.state_dict()[key], value, atol=1e-6, rtol=0)


def test_a_base_models_target_can_only_change_to_the_same_number_of_classes(cases, tmp_path):
    from asymseg.train.api import _model_source

    target = TargetSpec.from_dict({"classes": [{"name": "bg", "labels": [], "rare": False},
                                               {"name": "necrosis", "labels": [1], "rare": True},
                                               {"name": "enhancing", "labels": [4], "rare": True}]})
    net, card = create_model("deepmedic", ["flair", "t1c"], target, **TINY)
    base = save_model(tmp_path / "base3", net, card)
    cfg = config(cases, tmp_path, network={}, base_model=str(base), architecture=None, label_convention="brats2017")
    with pytest.raises(InputError, match="3 classes .* requested target 2"):
        _model_source(cfg, [])


@pytest.mark.parametrize("changes, error, pattern", [
    ({"train_cases": ["/nonexistent/case"]}, InputError, "/nonexistent/case: no such case folder"),
    ({"foreground_labels": [3]}, InputError, r"no rare-class \(tumour\) voxels in any training case"),
    ({"base_model": "/nonexistent/model", "architecture": None, "network": {}}, ModelError, "no such model"),
    ({"patch_output_size": [10, 10, 10]}, InputError, "patch-size"),
])
def test_bad_inputs_are_one_line_errors(cases, tmp_path, changes, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        finetune(config(cases, tmp_path, **changes))
    assert "\n" not in str(info.value)


def test_an_existing_output_or_run_is_not_overwritten_silently(cases, tmp_path):
    cfg = config(cases, tmp_path, iterations=1, val_every=1)
    finetune(cfg)
    with pytest.raises(InputError, match="already exists"):
        finetune(cfg)
    import shutil

    shutil.rmtree(tmp_path / "model")
    with pytest.raises(InputError, match="continue it with --resume"):
        finetune(cfg)
    assert finetune(cfg, overwrite=True).iterations == 1


def test_a_bare_model_name_goes_to_the_user_models_folder(cases, tmp_path, monkeypatch):
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))
    result = finetune(config(cases, tmp_path, output_model="tiny-model", iterations=1, val_every=1))
    assert result.model_path == tmp_path / "home" / "models" / "tiny-model"
    assert result.run_dir == tmp_path / "home" / "runs" / "tiny-model"
    assert load_model("tiny-model").card.name == "tiny-model"


@pytest.mark.slow
@pytest.mark.parametrize("technique", sorted(TECHNIQUES))
def test_every_preset_trains_without_nan(cases, tmp_path, technique):
    result = finetune(config(cases, tmp_path, technique=technique, iterations=3, val_every=3, batch_size=4))
    assert result.status == "done"
    assert all(np.isfinite(v) for v in result.last_losses.values())
    assert set(result.last_losses) == set(TECHNIQUES[technique].steps)
    for value in weights(result.model_path).values():
        assert torch.isfinite(value.float()).all()


def test_without_operating_point_choice_the_card_keeps_the_argmax(cases, tmp_path):
    result = finetune(config(cases, tmp_path, iterations=2, val_every=2, operating_point="none"))
    assert load_model(result.model_path).card.operating_point is None
    with pytest.raises(InputError, match="operating_point"):
        config(cases, tmp_path, operating_point="best")


def test_overwrite_replaces_only_a_model_folder_and_only_after_the_inputs_are_checked(cases, tmp_path):
    from asymseg.train.checkpoint import find_checkpoint

    # A user's data folder given as the output is never deleted.
    data = tmp_path / "my-data"
    data.mkdir()
    (data / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match="replaces only a model folder"):
        finetune(config(cases, tmp_path, output_model=str(data), iterations=1, val_every=1), overwrite=True)
    assert (data / "notes.txt").read_text() == "precious"
    # An existing model with a bad case: the old model and its checkpoint survive the refused run.
    cfg = config(cases, tmp_path, iterations=1, val_every=1)
    first = finetune(cfg)
    card_before = (first.model_path / "model.json").read_bytes()
    bad = cfg.replace(train_cases=(cases[0], str(tmp_path / "no-such-case")))
    with pytest.raises(InputError):
        finetune(bad, overwrite=True)
    assert (first.model_path / "model.json").read_bytes() == card_before
    assert find_checkpoint(first.run_dir) is not None
    # With good inputs the overwrite goes through.
    assert finetune(cfg, overwrite=True).iterations == 1


def test_a_fine_tuned_model_keeps_its_base_models_operating_point_marked_inherited(cases, tmp_path):
    """No validation cases: the base model's threshold and cleaning carry over, marked inherited_from;
    --operating-point none gives the argmax; validation cases choose a new one."""
    from asymseg.operating import OperatingPoint

    net, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.tumour_core("brats2017"), seed=5,
                             name="base", **TINY)
    card = card.replace(operating_point=OperatingPoint(threshold=-1.5, postprocess="largest", chosen_on="validation",
                                                       validation={"cases": ["a", "b"]}))
    base = save_model(tmp_path / "base", net, card)
    common = dict(network={}, base_model=str(base), architecture=None, iterations=2, val_every=2)
    kept = load_model(finetune(config(cases, tmp_path, val_cases=(), **common)).model_path).card.operating_point
    assert (kept.threshold, kept.postprocess, kept.chosen_on) == (-1.5, "largest", "validation")
    assert kept.validation == {"cases": ["a", "b"], "inherited_from": "base"}
    plain = finetune(config(cases, tmp_path, val_cases=(), operating_point="none", output_model=str(tmp_path / "p"),
                            **common))
    assert load_model(plain.model_path).card.operating_point is None
    chosen = finetune(config(cases, tmp_path, output_model=str(tmp_path / "v"), **common))
    point = load_model(chosen.model_path).card.operating_point
    assert point.validation["cases"] == ["phantom_002"] and "inherited_from" not in point.validation


@pytest.mark.parametrize("changes, pattern", [
    ({"train_cases": None}, "at least 2 training cases"),
    ({}, "without validation cases"),
    ({"val_cases": (), "val_fraction": 0.5}, "without validation cases"),
])
def test_cross_validation_refuses_what_it_cannot_use_before_training(cases, tmp_path, changes, pattern):
    if changes.get("train_cases", 1) is None:
        changes = {"train_cases": cases[:1], "val_cases": ()}
    with pytest.raises(InputError, match=pattern):
        finetune(config(cases, tmp_path, operating_point="cross-validation", **changes))
    assert not (tmp_path / "model").exists()


def test_cross_validation_trains_one_fold_per_case_and_records_the_operating_point(cases, tmp_path):
    """Three training cases, no validation: the model, then three fold models each holding out one case;
    the card's operating point names the three cases and the fold models that scored them. A second
    call (resume after the end) reuses the finished folds instead of training them again."""
    from asymseg.train.crossval import fold_folder

    events = []
    cfg = config(cases, tmp_path, train_cases=cases[:3], val_cases=(), iterations=4, val_every=4,
                 operating_point="cross-validation")
    result = finetune(cfg, on_event=events.append)
    point = load_model(result.model_path).card.operating_point
    assert point is not None and point.chosen_on == "validation"
    assert point.validation["cases"] == ["phantom_000", "phantom_001", "phantom_002"]
    folds = [fold_folder(result.run_dir, i, f"phantom_00{i}") for i in range(3)]
    assert point.validation["models"] == [str(f / "model") for f in folds]
    for i, fold in enumerate(folds):
        fold_card = load_model(fold / "model").card
        held_out = f"phantom_00{i}"
        assert held_out not in fold_card.provenance["data"]["train"] and fold_card.provenance["data"]["val"] == []
        assert fold_card.operating_point is None and fold_card.provenance["iterations_run"] == 4
    progress = [e for e in events if e.kind == "progress" and e.stage == "cross-validation"]
    assert progress[-1].done == progress[-1].total == 12
    assert [e.kind for e in events].count("done") == 1 and events[-1].kind == "done"

    before = {f: (f / "model" / "model.safetensors").stat().st_mtime_ns for f in folds}
    again = []
    finetune(cfg, on_event=again.append, resume=True)
    assert {f: (f / "model" / "model.safetensors").stat().st_mtime_ns for f in folds} == before
    assert sum("is done already" in (e.message or "") for e in again) == 3
    assert load_model(result.model_path).card.operating_point.validation["cases"] == point.validation["cases"]


def test_strict_refuses_a_training_case_with_the_skull_left_in_before_training(cases, tmp_path):
    """A 2.35-litre "brain" (the skull still in): with strict the run stops naming the case and the fix,
    before any iteration and without an output model; the command line's --strict sets it."""
    from asymseg.cli import build_parser
    from helpers.broken import write_head_case

    head = write_head_case(tmp_path / "head")
    events = []
    with pytest.raises(InputError, match=r"the brain mask derived from the background is 2,352 ml.*skull-strip it"):
        finetune(config(cases, tmp_path, train_cases=(str(head), cases[0]), strict=True, foreground_labels=(1,)),
                 on_event=events.append)
    assert not [e for e in events if e.kind == "iteration"] and not (tmp_path / "model").exists()
    args = build_parser().parse_args(["finetune", "--train-case", str(head), "--output-model", "m", "--strict"])
    assert args.strict is True


def test_a_case_listed_again_is_drawn_again_but_read_once(cases, tmp_path, monkeypatch):
    import asymseg.train.api as api
    from asymseg.train.data import PatchSampler

    reads = []
    real_load = api._load

    def counting_load(files, *args, **kwargs):  # the real reader, counted
        reads.append(files.case_id)
        return real_load(files, *args, **kwargs)

    monkeypatch.setattr(api, "_load", counting_load)
    drawn = []
    real_draw = PatchSampler.draw

    def recording_draw(self, batch_size, rng):
        out = real_draw(self, batch_size, rng)
        drawn.extend(self.cases[i].case_id for i in out.case)
        return out

    monkeypatch.setattr(PatchSampler, "draw", recording_draw)
    result = finetune(config(cases, tmp_path, train_cases=[cases[0], cases[0], cases[0], cases[1]], iterations=30,
                             batch_size=4, val_every=30))
    assert result.status == "done"
    assert sorted(reads) == ["phantom_000", "phantom_001", "phantom_002"]  # two training cases, one validation
    assert load_model(result.model_path).card.provenance["data"]["train"] == [
        "phantom_000", "phantom_000#2", "phantom_000#3", "phantom_001"]
    # Three of the four entries are phantom_000: about three quarters of the patches come from it.
    first = sum(case_id.startswith("phantom_000") for case_id in drawn) / len(drawn)
    assert len(drawn) == 120 and 0.6 < first < 0.9
