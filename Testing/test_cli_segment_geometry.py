"""segment on clinical geometry: the working grid at the model's spacing, results back on the reference
channel's original grid, bit-identical output when nothing needs resampling, checks before the network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from asymseg.io import Geometry

TINY_NET = {"normal_features": [4, 4], "lowres_features": [4, 4], "fc_features": [8], "dropout": [0.0, 0.0]}
ROTATED = (0.9659258262890683, -0.25881904510252074, 0.0, 0.25881904510252074, 0.9659258262890683, 0.0,
           0.0, 0.0, 1.0)  # 15 degrees about z


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same tiny network twice: a card without spacing and one trained at 1 mm, LPS axes."""
    from asymseg.modelfile import create_model, save_model
    from asymseg.target import TargetSpec

    root = tmp_path_factory.mktemp("models")
    net, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.tumour_core("brats2017"), seed=3,
                             name="tiny", **TINY_NET)
    return {"none": save_model(root / "no-spacing", net, card),
            "1mm": save_model(root / "at-1mm", net, card.replace(spacing=(1.0, 1.0, 1.0), orientation="LPS"))}


def _head(folder, geometry: Geometry):
    """flair + t1c of one physical head (brain ball 16 mm, lesion 5 mm) sampled on ``geometry``."""
    folder.mkdir(parents=True, exist_ok=True)
    image = geometry.apply_to(sitk.Image(list(geometry.size), sitk.sitkFloat32))
    points = np.stack([np.asarray(image.TransformIndexToPhysicalPoint(tuple(int(v) for v in reversed(idx))))
                       for idx in np.ndindex(*geometry.shape_zyx)]).reshape(*geometry.shape_zyx, 3)
    radius = np.linalg.norm(points - np.array([20.0, 20.0, 16.0]), axis=-1)
    rng = np.random.default_rng(0)
    for name, mean in (("flair", 300.0), ("t1c", 120.0)):
        array = np.where(radius < 16, rng.normal(mean, 20.0, geometry.shape_zyx), 0.0).astype(np.float32)
        array[radius < 5] += 2 * mean
        sitk.WriteImage(geometry.apply_to(sitk.GetImageFromArray(array)), str(folder / f"{name}.nii.gz"))
    label = np.where(radius < 5, 1, np.where(radius < 8, 2, 0)).astype(np.uint8)  # core 1, oedema 2
    sitk.WriteImage(geometry.apply_to(sitk.GetImageFromArray(label)), str(folder / "seg.nii.gz"))
    return folder


def _read(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), Geometry.from_image(image)


def test_a_case_at_the_model_spacing_gives_bit_identical_outputs(cli, models, tmp_path, one_torch_thread):
    case = _head(tmp_path / "c", Geometry((40, 40, 32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    outputs = {}
    for key, model in models.items():
        seg = tmp_path / key / "seg.nii.gz"
        result = cli("segment", "--model", model, "--case", case, "--output", seg, "--probabilities", "--logits",
                     "--json", "--progress", "none")
        assert result.code == 0, result.err
        summary = json.loads(result.out)["cases"][0]
        assert summary["working_grid"]["resampled"] is False and summary["warnings"] == []
        outputs[key] = [_read(seg.with_name(n))[0] for n in ("seg.nii.gz", "seg_prob.nii.gz", "seg_dz.nii.gz")]
    for without, with_spacing in zip(outputs["none"], outputs["1mm"]):
        assert without.dtype == with_spacing.dtype and np.array_equal(without, with_spacing)


@pytest.mark.parametrize("geometry", [
    Geometry((44, 44, 7), (0.9, 0.9, 5.5), (0.0, 0.0, 0.0)),
    Geometry((36, 36, 30), (1.2, 1.2, 1.2), (4.0, -6.0, 1.5), ROTATED),
    Geometry((40, 40, 32), (1.0, 1.0, 1.0), (39.0, 39.0, 0.0), (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)),
], ids=["0.9x0.9x5.5mm", "tilted-1.2mm", "flipped"])
def test_outputs_go_back_onto_the_reference_channels_original_grid(cli, models, tmp_path, geometry, one_torch_thread):
    case = _head(tmp_path / "c", geometry)
    seg = tmp_path / "out" / "seg.nii.gz"
    result = cli("segment", "--model", models["1mm"], "--case", case, "--output", seg, "--probabilities", "--logits",
                 "--progress", "jsonl")
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    done = lines[-1]
    assert done["event"] == "done" and done["working_grid"]["spacing"] == [1.0, 1.0, 1.0]
    assert done["working_grid"]["resampled"] is True
    for name in ("seg.nii.gz", "seg_prob.nii.gz", "seg_dz.nii.gz"):
        array, out_geometry = _read(seg.with_name(name))
        assert array.shape == geometry.shape_zyx and out_geometry.differences(geometry, tol=1e-6) == [], name
    warned = [line for line in lines if line["event"] == "log" and line.get("check") == "slice-thickness"]
    assert len(warned) == (2 if max(geometry.spacing) > 2.5 else 0)
    if warned:
        assert warned[0]["level"] == "warning" and "5.5 mm thick" in warned[0]["warning"]


def test_strict_refuses_a_skull_before_the_network_runs(cli, models, tmp_path, capfd):
    folder = tmp_path / "head"
    folder.mkdir()
    rng = np.random.default_rng(1)
    geometry = Geometry((140, 140, 120), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    for name in ("flair", "t1c"):  # no constant border: the derived mask is the whole 2,352 ml head
        array = rng.uniform(10, 400, geometry.shape_zyx).astype(np.float32)
        sitk.WriteImage(geometry.apply_to(sitk.GetImageFromArray(array)), str(folder / f"{name}.nii.gz"))
    out = tmp_path / "out"
    result = cli("segment", "--model", models["1mm"], "--case", folder, "--output", out / "seg.nii.gz", "--strict",
                 "--progress", "jsonl")
    assert result.code == 2
    assert not any(json.loads(line).get("stage") == "infer" for line in result.out.splitlines())
    assert result.err.strip().splitlines()[-1] == (
        f"asymseg segment: error: {folder}: the brain mask derived from the background is 2,352 ml, more than a "
        "brain (2,000 ml at most); the skull is probably still in: skull-strip it first (e.g. HD-BET, or Slicer's "
        "SwissSkullStripper extension) or pass the brain mask with --mask (refused with --strict; run without it "
        "to go on anyway)")
    assert not (out / "seg.nii.gz").exists()


def test_flipped_axes_give_the_same_segmentation_exactly(cli, models, tmp_path, one_torch_thread):
    """Axes reversed in the file: the case is turned back to the card's LPS axes, exactly, and back."""
    plain = _head(tmp_path / "case-plain", Geometry((40, 40, 32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    flipped = tmp_path / "case-flipped"
    flipped.mkdir()
    for name in ("flair", "t1c"):  # the same voxels, stored with x and y reversed
        array, _ = _read(plain / f"{name}.nii.gz")
        geometry = Geometry((40, 40, 32), (1.0, 1.0, 1.0), (39.0, 39.0, 0.0), (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
        sitk.WriteImage(geometry.apply_to(sitk.GetImageFromArray(array[:, ::-1, ::-1].copy())),
                        str(flipped / f"{name}.nii.gz"))
    arrays = {}
    for name, case in (("plain", plain), ("flipped", flipped)):
        seg = tmp_path / name / "seg.nii.gz"
        result = cli("segment", "--model", models["1mm"], "--case", case, "--output", seg, "--probabilities",
                     "--progress", "none")
        assert result.code == 0, result.err
        arrays[name] = [_read(seg.with_name(n))[0] for n in ("seg.nii.gz", "seg_prob.nii.gz")]
    assert arrays["plain"][0].any()
    for plain_array, flipped_array in zip(arrays["plain"], arrays["flipped"]):
        assert np.array_equal(plain_array, flipped_array[:, ::-1, ::-1])


def test_reference_channel_puts_the_outputs_on_its_grid(cli, models, tmp_path, one_torch_thread):
    case = _head(tmp_path / "c", Geometry((40, 40, 32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    tilted = Geometry((36, 36, 30), (1.2, 1.2, 1.2), (4.0, -6.0, 1.5), ROTATED)
    t1c, geometry = _read(case / "t1c.nii.gz")
    moved = sitk.Resample(geometry.apply_to(sitk.GetImageFromArray(t1c)), list(tilted.size), sitk.Transform(),
                          sitk.sitkLinear, tilted.origin, tilted.spacing, tilted.direction, 0.0, sitk.sitkFloat32)
    sitk.WriteImage(moved, str(case / "t1c.nii.gz"))
    seg = tmp_path / "out" / "seg.nii.gz"
    result = cli("segment", "--model", models["1mm"], "--case", case, "--output", seg, "--reference-channel", "T1ce",
                 "--progress", "none")
    assert result.code == 0, result.err
    assert _read(seg)[1].differences(tilted, tol=1e-6) == []
    missing = cli("segment", "--model", models["1mm"], "--case", case, "--output", seg, "--reference-channel", "t2",
                  "--progress", "none")
    assert missing.code == 2
    assert missing.err.strip().splitlines()[-1] == (f"asymseg segment: error: {case}: --reference-channel t2: the case "
                                                   "has no t2 channel (found: flair, t1c)")


def test_finetune_takes_thick_slice_cases_onto_the_base_models_spacing(cli, models, tmp_path, capfd, monkeypatch,
                                                                        one_torch_thread):
    import asymseg.io

    loaded = []
    real_load_case = asymseg.io.load_case

    def recording_load_case(*args, **kwargs):  # the real loader; only the grids it returns are noted
        case = real_load_case(*args, **kwargs)
        loaded.append(case.geometry)
        return case

    monkeypatch.setattr(asymseg.io, "load_case", recording_load_case)
    case = _head(tmp_path / "c", Geometry((44, 44, 7), (0.9, 0.9, 5.5), (0.0, 0.0, 0.0)))
    out = tmp_path / "tuned"
    result = cli("finetune", "--train-case", case, "--base-model", models["1mm"], "--output-model", out,
                 "--iterations", 2, "--batch-size", 2, "--val-every", 2, "--seed", 0, "--label-convention", "brats2017",
                 "--progress", "none")
    assert result.code == 0, result.err
    card = json.loads((out / "model.json").read_text())
    assert card["spacing"] == [1.0, 1.0, 1.0] and card["orientation"] == "LPS"
    assert loaded and all(g.spacing == (1.0, 1.0, 1.0) and g.size == (40, 40, 38) for g in loaded)
    logged = capfd.readouterr().err
    assert f"{case / 'flair.nii.gz'}: voxels are 5.5 mm thick, far above the 1 mm the model was trained at" in logged


def _t1c_on(case, geometry: Geometry) -> None:
    t1c, original = _read(case / "t1c.nii.gz")
    moved = sitk.Resample(original.apply_to(sitk.GetImageFromArray(t1c)), list(geometry.size), sitk.Transform(),
                          sitk.sitkLinear, geometry.origin, geometry.spacing, geometry.direction, 0.0,
                          sitk.sitkFloat32)
    sitk.WriteImage(moved, str(case / "t1c.nii.gz"))


def test_finetune_and_analyze_take_the_reference_channel_as_segment_does(cli, models, tmp_path, monkeypatch,
                                                                         one_torch_thread):
    import asymseg.io

    loaded = []
    real_load_case = asymseg.io.load_case

    def recording_load_case(files, *args, **kwargs):  # the real loader; only its reference and grid are noted
        case = real_load_case(files, *args, **kwargs)
        loaded.append((files.reference_channel, case.geometry))
        return case

    monkeypatch.setattr(asymseg.io, "load_case", recording_load_case)
    case = _head(tmp_path / "c", Geometry((40, 40, 32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    tilted = Geometry((36, 36, 30), (1.0, 1.0, 1.0), (4.0, -6.0, 1.5), ROTATED)
    _t1c_on(case, tilted)
    out = tmp_path / "tuned"
    result = cli("finetune", "--train-case", case, "--base-model", models["1mm"], "--output-model", out,
                 "--iterations", 1, "--batch-size", 2, "--val-fraction", 0, "--label-convention", "brats2017",
                 "--reference-channel", "t1ce", "--progress", "none")
    assert result.code == 0, result.err
    assert [reference for reference, _ in loaded] == ["t1c"]
    assert loaded[0][1].differences(tilted, tol=1e-6) == []  # the T1c's grid, at the model's 1 mm already
    assert json.loads((out.parent / "tuned.run" / "train_config.json").read_text())["reference_channel"] == "t1c"

    loaded.clear()
    import shutil

    unseen = shutil.copytree(case, tmp_path / "unseen")
    analysis = cli("analyze", "--model", out, "--train-case", case, "--test-case", unseen, "--out", tmp_path / "an",
                   "--reference-channel", "t1c", "--progress", "none")
    assert analysis.code == 0, analysis.err
    assert [reference for reference, _ in loaded] == ["t1c", "t1c"]
    assert all(g.differences(tilted, tol=1e-6) == [] for _, g in loaded)

    missing = cli("finetune", "--train-case", case, "--base-model", models["1mm"], "--output-model", tmp_path / "x",
                  "--iterations", 1, "--reference-channel", "t2", "--progress", "none")
    assert missing.code == 2 and not (tmp_path / "x").exists()
    assert missing.err.strip().splitlines()[-1] == (
        f"asymseg finetune: error: {case}: --reference-channel t2: the training case has no t2 channel "
        "(found: flair, t1c)")
