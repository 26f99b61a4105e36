"""``asymseg segment`` end to end: real NIfTI files, real model directories, real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from asymseg.errors import Cancelled
from asymseg.events import CancelToken
from asymseg.target import TargetClass, TargetSpec

NARROW = {"normal_features": [6] * 8, "lowres_features": [6] * 8, "fc_features": [12, 12]}


def save_narrow_model(folder: Path, target: TargetSpec, channels=("flair", "t1c"), seed: int = 0) -> Path:
    from asymseg.modelfile import create_model, save_model

    net, card = create_model("deepmedic", list(channels), target, seed=seed, name=folder.name, **NARROW)
    with torch.no_grad():  # a small tumour-ish share of foreground for a random net
        net.classifier.bias[:] = torch.tensor([0.0] * (target.num_classes - 1) + [0.5])
    return save_model(folder, net, card)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from asymseg.phantom import write_phantom_cases

    root = tmp_path_factory.mktemp("segment")
    cases = write_phantom_cases(root / "cases", 3, size=(30, 28, 26), seed=3, channels=("flair", "t1c"))
    model = save_narrow_model(root / "model", TargetSpec.tumour_core("brats2017"))
    return root, cases, model


def label_file(case: Path) -> Path:
    return next(case.glob("*_seg.nii.gz"))


def test_oblique_anisotropic_geometry_is_kept_exactly(tmp_path, cli, workspace):
    from asymseg.infer import predict_volume
    from asymseg.io import discover_case, load_case
    from asymseg.modelfile import load_model

    _, _, model = workspace
    angle = np.deg2rad(25.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(0.3), -np.sin(0.3)], [0.0, np.sin(0.3), np.cos(0.3)]])
    direction = (rotation @ tilt).ravel().tolist()
    rng = np.random.default_rng(5)
    shape_zyx = (17, 23, 29)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape_zyx), indexing="ij")
    brain = (zz ** 2 + yy ** 2 + xx ** 2) < 0.7
    case = tmp_path / "oblique"
    case.mkdir()
    for name in ("flair", "t1c"):
        array = np.where(brain, 100 + 20 * rng.standard_normal(shape_zyx), 0).astype(np.float32)
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.9, 1.3, 2.1))
        image.SetOrigin((-10.5, 20.25, 3.0))
        image.SetDirection(direction)
        sitk.WriteImage(image, str(case / f"case_{name}.nii.gz"))
    out = tmp_path / "out" / "oblique_seg.nrrd"
    result = cli("segment", "--model", model, "--case", case, "--output", out, "--probabilities", "--progress", "none")
    assert result.code == 0, result.err
    reference = sitk.ReadImage(str(case / "case_flair.nii.gz"))
    for path in (out, tmp_path / "out" / "oblique_prob.nrrd"):
        written = sitk.ReadImage(str(path))
        assert written.GetSize() == reference.GetSize()
        np.testing.assert_allclose(written.GetSpacing(), reference.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-6)
    # The voxels are in the input's order: the file equals the engine's output on the loaded case.
    loaded = load_model(model)
    files = discover_case(case)
    data = load_case(files, channels=loaded.card.channels)
    expected = predict_volume(loaded.net, data.image, data.mask, device="cpu")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected.labels)
    probabilities = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "oblique_prob.nrrd")))
    np.testing.assert_allclose(probabilities, expected.probabilities, atol=1e-6)


def test_reference_gives_the_metrics_of_the_written_mask(tmp_path, cli, workspace):
    from asymseg.metrics import case_metrics

    _, cases, model = workspace
    out = tmp_path / "seg.nii.gz"
    result = cli("segment", "--model", model, "--case", cases[0], "--output", out, "--reference",
                 label_file(cases[0]), "--json", "--progress", "none")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    metrics = summary["cases"][0]["metrics"]
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    reference_image = sitk.ReadImage(str(label_file(cases[0])))
    core = np.isin(sitk.GetArrayFromImage(reference_image), (1, 4))  # BraTS 2017 tumour core
    expected = case_metrics(predicted == 1, core, reference_image.GetSpacing())
    assert 0 < expected["tp"] and core.sum() > 0
    for key in ("dsc", "sensitivity", "precision", "hd95", "tp", "fp", "fn"):
        assert metrics[key] == pytest.approx(expected[key])


def test_progress_jsonl_is_one_json_object_per_line(tmp_path, workspace, asymseg_proc):
    _, cases, model = workspace
    out = tmp_path / "seg.nii.gz"
    proc = asymseg_proc("segment", "--model", model, "--case", cases[1], "--output", out, "--logits",
                        "--reference", label_file(cases[1]), "--progress", "jsonl", "--tile", "9",
                        env={"ASYMSEG_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    events = [json.loads(line) for line in lines]  # every line is valid JSON
    assert all(isinstance(e, dict) and "event" in e for e in events)
    infer = [e for e in events if e["event"] == "progress" and e["stage"] == "infer"]
    assert len(infer) >= 3 and infer[-1]["done"] == infer[-1]["total"] == len(infer) - 1
    assert [e["done"] for e in infer] == sorted(e["done"] for e in infer)
    assert {e["stage"] for e in events if e["event"] == "progress"} >= {"load", "infer", "write"}
    done = events[-1]
    assert done["event"] == "done" and [e["event"] for e in events].count("done") == 1
    assert done["outputs"]["labels"] == str(out) and Path(done["outputs"]["logits"]).is_file()
    assert Path(done["outputs"]["logits"]).name == "seg_dz.nii.gz"
    assert set(done["metrics"]) >= {"dsc", "sensitivity", "precision", "specificity", "hd95"}
    assert done["device"] == "cpu" and done["seconds"] > 0


def test_batch_from_a_case_list_names_outputs_by_case(tmp_path, cli, workspace):
    root, cases, model = workspace
    listing = tmp_path / "cases.txt"
    listing.write_text("# two cases\n" + "\n".join(os.path.relpath(c, tmp_path) for c in cases[:2]) + "\n")
    out = tmp_path / "out"
    result = cli("segment", "--model", model, "--cases-from", listing, "--output", out, "--probabilities",
                 "--evaluate", "--progress", "jsonl", "--tile", "15")
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out.splitlines()]
    done = [e for e in events if e["event"] == "done"]
    assert [e.get("case_id") for e in done[:2]] == ["phantom_000", "phantom_001"]
    assert len(done) == 3 and len(done[-1]["cases"]) == 2
    for case_id in ("phantom_000", "phantom_001"):
        assert (out / f"{case_id}_seg.nii.gz").is_file() and (out / f"{case_id}_prob.nii.gz").is_file()
    assert all("dsc" in e["metrics"] for e in done[:2])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{c}_{kind}.nii.gz" for c in ("phantom_000", "phantom_001") for kind in ("seg", "prob"))


def test_multiclass_models_write_one_logit_file_per_class(tmp_path, cli, workspace):
    _, cases, _ = workspace
    target = TargetSpec((TargetClass("background", (), False), TargetClass("oedema", (2,), False),
                         TargetClass("core", (1, 4), True)))
    model = save_narrow_model(tmp_path / "multi", target)
    out = tmp_path / "m_seg.nii.gz"
    result = cli("segment", "--model", model, "--case", cases[0], "--output", out, "--logits",
                 "--reference", label_file(cases[0]), "--json", "--progress", "none", "--tile", "15")
    assert result.code == 0, result.err
    case = json.loads(result.out)["cases"][0]
    class_files = case["outputs"]["class_logits"]
    assert sorted(class_files) == ["background", "core", "oedema"]
    assert Path(class_files["core"]).name == "m_dz_core.nii.gz"
    z = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(class_files[n])) for n in ("background", "oedema", "core")])
    dz = sitk.GetArrayFromImage(sitk.ReadImage(case["outputs"]["logits"]))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    inside = np.abs(z).sum(axis=0) > 0
    np.testing.assert_allclose(dz[inside], (z[2] - z[:2].max(axis=0))[inside], atol=1e-5)
    np.testing.assert_array_equal(labels[inside], z.argmax(axis=0)[inside])
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert set(case["metrics"]["per_class"]) == {"oedema", "core"}


def test_missing_channel_exits_2_naming_the_case_and_channel(tmp_path, cli, workspace):
    _, cases, model = workspace
    flair = next(cases[0].glob("*_flair.nii.gz"))
    result = cli("segment", "--model", model, "--channel", f"flair={flair}", "--output", tmp_path / "s.nii.gz")
    assert result.code == 2
    assert "no t1c channel" in result.err and str(flair) in result.err
    assert not (tmp_path / "s.nii.gz").exists()


def test_a_channel_the_model_does_not_take_exits_2(tmp_path, cli, workspace):
    _, cases, model = workspace
    flair = next(cases[0].glob("*_flair.nii.gz"))
    t1c = next(cases[0].glob("*_t1ce.nii.gz"))
    result = cli("segment", "--model", model, "--channel", f"flair={flair}", "--channel", f"t1c={t1c}",
                 "--channel", f"t2={flair}", "--output", tmp_path / "s.nii.gz")
    assert result.code == 2
    assert "takes 2 channel(s)" in result.err and "t2" in result.err


def test_model_problems_exit_3(tmp_path, cli, workspace):
    _, cases, _ = workspace
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    result = cli("segment", "--model", empty, "--case", cases[0], "--output", tmp_path / "s.nii.gz")
    assert result.code == 3, result.err
    assert "not-a-model" in result.err


def test_cancel_from_an_event_raises_and_writes_nothing(tmp_path, workspace):
    from asymseg.infer.cases import OutputPaths, segment_case
    from asymseg.io import discover_case
    from asymseg.modelfile import load_model

    _, cases, model = workspace
    token = CancelToken()

    def on_event(event):
        if event.kind == "progress" and event.stage == "infer" and event.done == 1:
            token.cancel("test")

    outputs = OutputPaths(tmp_path / "c_seg.nii.gz", tmp_path / "c_prob.nii.gz", tmp_path / "c_dz.nii.gz")
    with pytest.raises(Cancelled):
        segment_case(load_model(model), discover_case(cases[0]), outputs, device="cpu", tile=9,
                     on_event=on_event, cancel=token)
    assert list(tmp_path.iterdir()) == []


def test_sigint_stops_between_tiles_with_exit_130_and_no_output(tmp_path, workspace):
    _, cases, model = workspace
    out = tmp_path / "seg.nii.gz"
    env = dict(os.environ, ASYMSEG_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "asymseg", "segment", "--model", str(model), "--case",
                             str(cases[2]), "--output", str(out), "--progress", "jsonl", "--tile", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("stage") == "infer" and event.get("done", 0) >= 1:
                proc.send_signal(signal.SIGINT)
                break
        proc.stdout.read()
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 130, proc.stderr.read()
    assert "cancelled" in proc.stderr.read()
    assert list(tmp_path.iterdir()) == []


def test_torchrun_ranks_take_every_other_case(tmp_path, cli, workspace, monkeypatch):
    _, cases, model = workspace
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    args = ["segment", "--model", model, "--output", tmp_path / "out", "--progress", "none", "--tile", "15"]
    for case in cases:
        args += ["--case", case]
    result = cli(*args)
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["phantom_001_seg.nii.gz"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_configure_malloc_applies_only_where_the_user_and_the_limits_allow_it():
    # Its effect (no page faults when a freed tile is reused) is a speed property, measured by
    # `asymseg bench inference` (CPU time per tile), not asserted here: fault counts vary with the host.
    script = (
        "import resource, sys\n"
        "if sys.argv[1] == 'capped':\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (64 * 2 ** 30, resource.RLIM_INFINITY))\n"
        "from asymseg.infer.memory import configure_malloc\n"
        "print(configure_malloc())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")}

    def applied(mode, extra=None):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True,
                             env={**env, **(extra or {})})
        return out.stdout.split()[0]

    assert applied("plain") == "True"
    assert applied("plain", {"MALLOC_MMAP_MAX_": "65536"}) == "False"   # the user's own setting wins
    assert applied("capped") == "False"     # under an address-space limit freed tiles go back to the system


@pytest.mark.parametrize("role", ["output-flair", "probabilities-t1c", "output-label", "hard-link", "reference"])
def test_an_output_never_replaces_an_input_of_the_run(tmp_path, cli, workspace, role):
    import shutil

    _, cases, model = workspace
    case = tmp_path / "case"
    shutil.copytree(cases[0], case)
    flair, t1c = next(case.glob("*_flair.nii.gz")), next(case.glob("*_t1ce.nii.gz"))
    label = label_file(case)
    args = ["segment", "--model", model, "--case", case, "--progress", "none"]
    if role == "output-flair":
        args += ["--output", flair]
        victim = flair
    elif role == "probabilities-t1c":
        args += ["--output", tmp_path / "seg.nii.gz", "--probabilities", case / ".." / "case" / t1c.name]
        victim = t1c
    elif role == "output-label":
        args += ["--output", label]
        victim = label
    elif role == "hard-link":
        link = tmp_path / "other-name.nii.gz"
        os.link(t1c, link)
        args += ["--output", tmp_path / "seg.nii.gz", "--logits", link]
        victim = t1c
    else:
        reference = tmp_path / "reference.nii.gz"
        shutil.copyfile(label, reference)
        args += ["--output", tmp_path / "seg.nii.gz", "--probabilities", reference, "--reference", reference]
        victim = reference
    before = victim.read_bytes()
    result = cli(*args)
    assert result.code == 2 and "an input of this run" in result.err and len(result.err.strip().splitlines()) == 1
    assert victim.read_bytes() == before
    assert not (tmp_path / "seg.nii.gz").exists()


def test_a_crafted_header_is_refused_before_torch_and_the_model_are_loaded(tmp_path):
    """A 125-byte .mha claiming 1200^3 voxels: segment refuses it from the header, before importing
    torch or reading the model (so the refusal costs a Python start, not a network's memory)."""
    case = tmp_path / "bomb"
    case.mkdir()
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 1200 1200 1200\nElementType = MET_FLOAT\n"
              "ElementSpacing = 1 1 1\nElementDataFile = LOCAL\n")
    for name in ("flair", "t1ce"):
        (case / f"bomb_{name}.mha").write_text(header)
    code = ("import sys\n"
            "from asymseg.cli import main\n"
            f"code = main(['segment', '--model', 'asymseg-starter-deepmedic', '--case', {str(case)!r}, "
            f"'--output', {str(tmp_path / 'seg.nii.gz')!r}, '--progress', 'none'])\n"
            "print(code, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False"], proc.stdout + proc.stderr
    assert "1200 x 1200 x 1200" in proc.stderr and "bomb_flair.mha" in proc.stderr
    assert not (tmp_path / "seg.nii.gz").exists()
