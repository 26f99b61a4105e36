"""The operating point: threshold, connected components, choice on validation, TTA and segment's options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from asymseg.errors import InputError
from asymseg.operating import (
    OperatingPoint,
    ValidationMaps,
    choose_operating_point,
    components,
    decide,
    parse_postprocess,
    postprocess,
    threshold_curve,
)
from asymseg.target import TargetSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs():
    """A 20^3 volume with a 27-voxel blob, an 8-voxel blob and a single voxel."""
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[2:5, 2:5, 2:5] = True
    mask[10:12, 10:12, 10:12] = True
    mask[17, 17, 17] = True
    return mask


@pytest.mark.parametrize("text, expected", [("none", "none"), (" Largest ", "largest"), ("min-ml:0.50", "min-ml:0.5"),
                                            (None, "none")])
def test_postprocess_names(text, expected):
    assert parse_postprocess(text) == expected


@pytest.mark.parametrize("text", ["biggest", "min-ml:0", "min-ml:-1", "min-ml:x", "min-ml:inf"])
def test_bad_postprocess_names_are_refused(text):
    with pytest.raises(InputError, match="min-ml"):
        parse_postprocess(text)


def test_components_are_26_connected_and_postprocessing_keeps_what_it_says():
    mask = blobs()
    mask[5, 5, 5] = True                                   # touches the first blob at a corner only
    labelled, counts = components(mask)
    assert sorted(counts.tolist()) == [1, 8, 28]
    assert postprocess(mask, "largest", (1, 1, 1)).sum() == 28
    # 2 mm voxels: 8 ml per 1000 voxels -> the 8-voxel blob is 0.064 ml, the big one 0.224 ml.
    kept = postprocess(mask, "min-ml:0.05", (2.0, 2.0, 2.0))
    assert kept.sum() == 36 and not kept[17, 17, 17]
    assert postprocess(mask, "none", (1, 1, 1)).sum() == mask.sum()
    assert not postprocess(np.zeros_like(mask), "largest", (1, 1, 1)).any()


def test_decide_thresholds_dz_inside_the_mask_and_picks_classes_for_more_than_two():
    dz = np.array([[[-1.0, 0.0, 0.5, 2.0]]], dtype=np.float32)
    brain = np.array([[[True, True, True, False]]])
    assert decide(dz, brain, (1, 1, 1), OperatingPoint()).tolist() == [[[0, 0, 1, 0]]]
    assert decide(dz, brain, (1, 1, 1), OperatingPoint(threshold=-1.5)).tolist() == [[[1, 1, 1, 0]]]
    # Three classes, classes 1 and 2 rare: the larger rare logit wins where dz > t.
    logits = np.array([[[[0.0, 0.0, 0.0, 0.0]]], [[[1.0, -1.0, 3.0, 0.0]]], [[[2.0, -2.0, 1.0, 0.0]]]],
                      dtype=np.float32)
    rare = [False, True, True]
    dz3 = logits[1:].max(axis=0) - logits[0]
    labels = decide(dz3, None, (1, 1, 1), OperatingPoint(threshold=1.5), logits=logits, rare=rare)
    assert labels.tolist() == [[[2, 0, 1, 0]]]


def test_the_threshold_curve_matches_direct_counting():
    rng = np.random.default_rng(0)
    reference = blobs()
    dz = rng.normal(size=reference.shape).astype(np.float32) + 2.0 * reference
    brain = np.ones_like(reference)
    brain[:, :, 19] = False
    curve = threshold_curve(dz, reference, brain, [-1.0, 0.0, 1.25])
    for row in curve:
        predicted = (dz > row["threshold"]) & brain
        tp = (predicted & reference).sum()
        dsc = 2 * tp / (predicted.sum() + reference.sum())
        assert row["dsc"] == pytest.approx(dsc, abs=1e-12)
        assert row["sensitivity"] == pytest.approx(tp / reference.sum(), abs=1e-12)


def _case(case_id, dz, reference, tta=None):
    return ValidationMaps(case_id, dz, reference, np.ones_like(reference), (1.0, 1.0, 1.0), tta)


def test_an_over_segmenting_model_gets_a_higher_threshold_and_cleaning_only_where_every_case_gains():
    rng = np.random.default_rng(1)
    cases = []
    for seed in range(2):
        reference = np.zeros((24, 24, 24), dtype=bool)
        reference[6:14, 6:14, 6:14] = True
        dz = np.where(reference, 3.0, -1.0) + 0.3 * rng.normal(size=reference.shape)
        dz[14:17, 6:14, 6:14] = 1.5                        # a rim of "oedema" the model calls tumour
        dz[20, 20, 20 - seed] = 4.0                        # a stray false positive far away
        cases.append(_case(f"c{seed}", dz.astype(np.float32), reference))
    point = choose_operating_point(cases)
    assert point.chosen_on == "validation" and 1.5 <= point.threshold < 3.0
    assert point.postprocess in ("largest", "min-ml:0.1", "min-ml:0.5", "min-ml:1")
    final = point.validation["final"]
    assert all(row["dsc"] > 0.99 for row in final)
    steps = {s["step"]: s for s in point.validation["steps"]}
    assert all(a <= b for a, b in zip(steps["argmax"]["dsc"], steps["postprocess"]["dsc"]))
    assert "tta" not in steps                               # no mirrored maps given


def test_a_change_that_hurts_one_case_is_not_adopted():
    reference = np.zeros((10, 10, 10), dtype=bool)
    reference[2:6, 2:6, 2:6] = True
    good = np.where(reference, 1.0, -1.0).astype(np.float32)
    # Case b: a larger threshold would help a but lose b's true voxels at dz 0.5.
    a = good.copy()
    a[6:8, 2:6, 2:6] = 0.5
    b = good.copy()
    b[reference] = 0.4
    point = choose_operating_point([_case("a", a, reference), _case("b", b, reference)])
    assert point.threshold < 0.4
    # TTA is adopted only when it helps: here the mirrored maps are worse for one case.
    worse = np.where(reference, -1.0, 1.0).astype(np.float32)
    point = choose_operating_point([_case("a", good, reference, tta=good), _case("b", good, reference, tta=worse)])
    assert point.tta is False and point.validation["steps"][-1]["step"] == "tta"


def test_operating_point_round_trip_override_and_errors():
    point = OperatingPoint(threshold=1.5, postprocess="largest", tta=True, chosen_on="validation",
                           validation={"cases": ["a"]})
    assert OperatingPoint.from_dict(json.loads(json.dumps(point.to_dict()))) == point
    assert point.override() is point
    user = point.override(threshold=0.25)
    assert (user.threshold, user.postprocess, user.chosen_on) == (0.25, "largest", "user")
    assert OperatingPoint().is_default and not point.is_default
    for bad, match in (({"threshold": float("nan")}, "finite"), ({"tta": "yes"}, "tta"),
                       ({"chosen_on": "guess"}, "chosen_on"), ({"colour": 1}, "unknown")):
        with pytest.raises(InputError, match=match):
            OperatingPoint.from_dict(bad)


@pytest.fixture(scope="module")
def model_and_case(tmp_path_factory):
    from asymseg.modelfile import create_model, save_model
    from asymseg.phantom import write_phantom_cases

    root = tmp_path_factory.mktemp("operating")
    (case,) = write_phantom_cases(root / "cases", 1, size=(30, 28, 26), seed=3, channels=("flair", "t1c"))
    net, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.tumour_core("brats2017"), seed=0,
                             name="op", normal_features=[6] * 8, lowres_features=[6] * 8, fc_features=[12, 12])
    with torch.no_grad():
        net.classifier.bias[:] = torch.tensor([0.0, 0.5])
    return root, case, save_model(root / "model", net, card)


def test_default_operating_point_gives_the_argmax_labels_bit_for_bit(model_and_case):
    from asymseg.infer import predict_volume
    from asymseg.infer.tta import predict_with_operating_point
    from asymseg.io import discover_case, load_case
    from asymseg.modelfile import load_model

    _, case_dir, model_dir = model_and_case
    model = load_model(model_dir)
    case = load_case(discover_case(case_dir), channels=model.card.channels)
    plain = predict_volume(model.net, case.image, case.mask, rare=model.card.target.rare, return_logits=True)
    ours = predict_with_operating_point(model.net, case.image, case.mask, OperatingPoint(),
                                        spacing=case.geometry.spacing, rare=model.card.target.rare)
    assert np.array_equal(plain.labels, ours.labels)
    assert np.array_equal(plain.probabilities, ours.probabilities)
    assert np.array_equal(plain.decision, ours.decision)
    # TTA: 8 passes, mirrored back; a mirror-symmetric input gives the same maps as one pass.
    tta = predict_with_operating_point(model.net, case.image, case.mask, OperatingPoint(tta=True),
                                       spacing=case.geometry.spacing, rare=model.card.target.rare)
    assert tta.info["passes"] == 8 and tta.labels.shape == plain.labels.shape
    symmetric = case.image + case.image[:, ::-1] + case.image[:, :, ::-1] + case.image[:, ::-1, ::-1]
    symmetric = symmetric + symmetric[:, :, :, ::-1]
    mask = np.ones(case.mask.shape, dtype=bool)
    eight = predict_with_operating_point(model.net, symmetric, mask, OperatingPoint(tta=True),
                                         spacing=case.geometry.spacing, rare=model.card.target.rare)
    np.testing.assert_allclose(eight.decision, (eight.decision + eight.decision[::-1, ::-1, ::-1]) / 2, atol=1e-4)


def test_segment_applies_the_cards_operating_point_and_the_options_override_it(model_and_case, cli, tmp_path):
    from asymseg.modelfile import load_model, read_card, write_card

    root, case_dir, model_dir = model_and_case
    plain = cli("segment", "--model", model_dir, "--case", case_dir, "--output", tmp_path / "plain.nii.gz",
                "--logits", "--json", "--progress", "none")
    assert plain.code == 0, plain.err
    dz = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain_dz.nii.gz")))
    inside = dz != 0
    threshold = float(np.quantile(dz[inside], 0.9))
    card = read_card(model_dir)
    stored = root / "stored"
    import shutil

    shutil.copytree(model_dir, stored)
    write_card(stored, card.replace(operating_point=OperatingPoint(threshold=threshold, postprocess="largest",
                                                                   chosen_on="validation")))
    assert load_model(stored).card.operating_point.threshold == threshold
    result = cli("segment", "--model", stored, "--case", case_dir, "--output", tmp_path / "card.nii.gz",
                 "--json", "--progress", "none")
    assert result.code == 0, result.err
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "card.nii.gz")))
    expected = postprocess(dz > threshold, "largest", (1, 1, 1))
    assert np.array_equal(labels.astype(bool), expected)
    record = json.loads(result.out)["cases"][0]["operating_point"]
    assert record["threshold"] == threshold and record["postprocess"] == "largest"
    # --threshold 0 --postprocess none gives the argmax again.
    again = cli("segment", "--model", stored, "--case", case_dir, "--output", tmp_path / "user.nii.gz",
                "--threshold", "0", "--postprocess", "none", "--progress", "none")
    assert again.code == 0, again.err
    assert "operating point" not in again.out
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "user.nii.gz"))),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "plain.nii.gz"))))
    with pytest.raises(SystemExit) as exit_info:
        cli("segment", "--model", stored, "--case", case_dir, "--output", tmp_path / "bad.nii.gz",
            "--postprocess", "biggest")
    assert exit_info.value.code == 2 and not (tmp_path / "bad.nii.gz").exists()


def test_operating_point_command_chooses_on_unseen_cases_and_writes_the_card(model_and_case, cli, tmp_path):
    import shutil

    from asymseg.modelfile import load_model
    from asymseg.phantom import write_phantom_cases
    from asymseg.registry import bundled_models_dir

    _, _, model_dir = model_and_case
    cases = write_phantom_cases(tmp_path / "val", 2, size=(30, 28, 26), seed=8, channels=("flair", "t1c"))
    mine = tmp_path / "mine"
    shutil.copytree(model_dir, mine)
    result = cli("operating-point", "--model", mine, "--val-case", cases[0], "--val-case", cases[1],
                 "--fold-model", model_dir, "--fold-model", mine, "--write", "--json", "--progress", "none")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    point = data["operating_point"]
    assert data["written"] and point["chosen_on"] == "validation"
    assert point["validation"]["cases"] == [c.name for c in cases] and len(point["validation"]["models"]) == 2
    steps = point["validation"]["steps"]
    assert [s["step"] for s in steps] == ["argmax", "threshold", "postprocess"]
    # The chosen point never scores a case below the argmax.
    assert all(f >= a - 1e-12 for f, a in zip(steps[-1]["dsc"], steps[0]["dsc"]))
    assert load_model(mine).card.operating_point.to_dict() == point
    table = cli("operating-point", "--model", mine, "--val-case", cases[0], "--progress", "none")
    assert table.code == 0 and "operating point: tumour where dz >" in table.out and cases[0].name in table.out

    bad = cli("operating-point", "--model", mine, "--val-case", cases[0], "--fold-model", mine, "--fold-model", mine)
    assert bad.code == 2 and "one per case" in bad.err
    bundled = next(p for p in bundled_models_dir().iterdir() if p.is_dir())
    refused = cli("operating-point", "--model", bundled, "--val-case", cases[0], "--write", "--progress", "none")
    assert refused.code == 3 and "read-only" in refused.err
