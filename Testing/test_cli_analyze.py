"""``asymseg analyze`` end to end: real phantom files, a real (untrained) model, the real inference engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asymseg.diagnostics import analyze_model
from asymseg.phantom import write_phantom_cases

TINY = ["--hparam", "normal_features=[4,4]", "--hparam", "lowres_features=[4,4]",
        "--hparam", "fc_features=[8]", "--hparam", "dropout=[0,0]"]
CORE = (1, 4)  # BraTS 2017-2021 tumour core, the phantoms' convention


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Three 32^3 phantom cases and an untrained tiny DeepMedic made with ``asymseg models create``."""
    from helpers.engine import run_asymseg

    root = tmp_path_factory.mktemp("analyze")
    cases = write_phantom_cases(root / "cases", 3, size=(32, 32, 32), seed=5)
    created = run_asymseg("models", "create", "--architecture", "deepmedic", "--channels", "flair,t1c",
                          "--out", root / "model", "--seed", "1", *TINY)
    assert created.returncode == 0, created.stderr
    return root, cases, root / "model"


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path}: non-strict JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _loaded(case_dir):
    from asymseg.io import discover_case, load_case

    return load_case(discover_case(case_dir), channels=["flair", "t1c"], require_label=True)


def test_analyze_writes_strict_json_and_a_figure_with_the_recorded_cap(workspace, cli):
    root, cases, model = workspace
    out = root / "out_cli"
    result = cli("analyze", "--model", model, "--train-case", cases[0], "--train-case", cases[1],
                 "--test-case", cases[2], "--out", out, "--max-nonrare", "3000", "--seed", "4",
                 "--progress", "none", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["settings"]["max_nonrare"] == 3000 and summary["settings"]["seed"] == 4
    data = _strict_json(out / "analysis.json")
    numbers = data["classes"]["tumour_core"]
    for group, group_cases in (("train", cases[:2]), ("test", cases[2:])):
        loaded = [_loaded(c) for c in group_cases]
        rare = sum(int(np.isin(c.label, CORE)[c.mask].sum()) for c in loaded)
        brain = sum(int(c.mask.sum()) for c in loaded)
        stats = numbers["groups"][group]
        assert stats["rare"]["count"] == rare > 0
        assert stats["nonrare_total"] == brain - rare
        assert stats["nonrare_kept"] == stats["nonrare"]["count"] == min(3000, brain - rare)
        assert [c["case_id"] for c in numbers["cases"][group]] == [c.case_id for c in loaded]
    assert numbers["shift"]["rare"] == pytest.approx(
        numbers["groups"]["test"]["rare"]["mean"] - numbers["groups"]["train"]["rare"]["mean"])
    assert data["meta"]["cases"] == {"train": ["phantom_000", "phantom_001"], "test": ["phantom_002"]}
    png = (out / "logits.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_the_numbers_equal_dz_from_a_direct_inference(workspace):
    from asymseg.infer import predict_volume
    from asymseg.modelfile import load_model

    _, cases, model = workspace
    loaded = load_model(model)
    result = analyze_model(loaded, [cases[0]], [cases[2]], max_nonrare=None, device="cpu")
    for group, case_dir in (("train", cases[0]), ("test", cases[2])):
        case = _loaded(case_dir)
        logits = predict_volume(loaded.net, case.image, case.mask, device="cpu", return_logits=True).logits
        dz = (logits[1] - logits[0])[case.mask]
        rare = np.isin(case.label, CORE)[case.mask]
        stats = result.classes["tumour_core"]["groups"][group]
        assert stats["rare"]["mean"] == pytest.approx(float(dz[rare].mean()), abs=1e-5)
        assert stats["nonrare"]["mean"] == pytest.approx(float(dz[~rare].mean()), abs=1e-5)
        assert stats["rare"]["wrong_side"] == pytest.approx(float((dz[rare] < 0).mean()))
        assert stats["nonrare"]["wrong_side"] == pytest.approx(float((dz[~rare] > 0).mean()))


def test_multiclass_model_gives_one_panel_per_rare_class(workspace, cli):
    from asymseg.modelfile import create_model, save_model
    from asymseg.target import TargetClass, TargetSpec

    root, cases, _ = workspace
    target = TargetSpec((TargetClass("background", (), False), TargetClass("necrosis", (1,), True),
                         TargetClass("enhancing", (4,), True)))
    net, card = create_model("deepmedic", ["flair", "t1c"], target, seed=2, normal_features=[4, 4],
                             lowres_features=[4, 4], fc_features=[8], dropout=[0.0, 0.0])
    model = save_model(root / "model3", net, card)
    out = root / "out_multi"
    result = cli("analyze", "--model", model, "--train-case", cases[0], "--test-case", cases[1],
                 "--out", out, "--progress", "none")
    assert result.code == 0, result.err
    data = _strict_json(out / "analysis.json")
    assert list(data["classes"]) == ["necrosis", "enhancing"]
    assert [data["classes"][n]["class_index"] for n in ("necrosis", "enhancing")] == [1, 2]
    case = _loaded(cases[1])
    for name, value in (("necrosis", 1), ("enhancing", 4)):
        assert data["classes"][name]["groups"]["test"]["rare"]["count"] == int((case.label == value)[case.mask].sum())
        assert (out / f"logits_{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "necrosis shift test - train" in result.out and "enhancing shift test - train" in result.out


def test_jsonl_progress_reports_one_step_per_case(workspace, cli):
    root, cases, model = workspace
    result = cli("analyze", "--model", model, "--train-case", cases[0], "--test-case", cases[1],
                 "--out", root / "out_jsonl", "--progress", "jsonl")
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out.splitlines() if line.startswith("{")]
    steps = [e["done"] for e in events if e["event"] == "progress" and e.get("stage") == "analyze"]
    assert steps == [1, 2]
    assert events[-1]["event"] == "done" and "shift" in events[-1]


@pytest.mark.parametrize("args, code, pattern", [
    (["--train-case", "{c0}"], 2, "no test case given"),
    (["--train-case", "{c0}", "--test-case", "{c0}"], 2, "given both as a training and as an unseen case"),
    (["--train-case", "{c0}", "--test-case", "{missing}"], 2, "missing_case"),
    (["--train-case", "{c0}", "--test-case", "{c1}", "--max-nonrare", "-1"], 2, "--max-nonrare must be >= 0"),
])
def test_bad_input_exits_with_one_line_naming_the_problem(workspace, cli, args, code, pattern):
    root, cases, model = workspace
    filled = [a.format(c0=cases[0], c1=cases[1], missing=root / "missing_case") for a in args]
    result = cli("analyze", "--model", model, "--out", root / "out_bad", "--progress", "none", *filled)
    assert result.code == code
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and pattern in lines[0], result.err


def test_a_missing_model_exits_3_naming_it(workspace, cli):
    root, cases, _ = workspace
    result = cli("analyze", "--model", root / "no_model", "--train-case", cases[0], "--test-case", cases[1],
                 "--out", root / "out_nomodel", "--progress", "none")
    assert result.code == 3, result.err
    assert "no_model" in result.err and len(result.err.strip().splitlines()) == 1


def test_strict_refuses_a_case_with_the_skull_left_in(workspace, cli, tmp_path):
    """--strict: the 2.35-litre "brain" of a head with its skull is refused, exit 2, nothing written."""
    from helpers.broken import write_head_case

    root, cases, model = workspace
    head = write_head_case(tmp_path / "head", seed=2)
    out = tmp_path / "analysis"
    result = cli("analyze", "--model", model, "--train-case", cases[0], "--test-case", head, "--out", out,
                 "--strict", "--progress", "none")
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert "2,352 ml" in lines[-1] and "skull" in lines[-1] and str(head) in lines[-1], result.err
    assert not out.exists() or not any(out.iterdir())
