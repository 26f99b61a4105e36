"""The bad-input matrix: every input problem through the real CLI of segment, finetune, evaluate, analyze.

Each row breaks one thing (a file, a grid, a model, an output path, the disk, the memory) and
expects, for each command it applies to: the documented exit code, exactly one line on stderr
that names the file (or option) and the problem, and no partial output (neither the output nor
any temporary file in its folder). Rows whose input is valid (a case without tumour, a constant
prediction) expect exit 0 and the normal output. docs/ROBUSTNESS.md shows the same matrix as a
table.

Most rows run in-process (the ``cli`` fixture; log lines are captured from the real stderr with
``capfd``); a representative subset, and everything needing a resource limit, runs as a real
``python -m asymseg`` subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from asymseg import constants as C
from helpers import broken as B

resource = pytest.importorskip("resource", reason="resource limits are POSIX")

COMMANDS = ("segment", "finetune", "evaluate", "analyze")
HELPERS = Path(__file__).resolve().parent / "helpers"
TINY_NET = {"normal_features": [4, 4], "lowres_features": [4, 4], "fc_features": [8], "dropout": [0.0, 0.0]}


# -- the workspace: two good phantom cases and a tiny untrained model --------------------------------
@dataclass
class Workspace:
    root: Path
    case: Path       # the case each row copies and breaks
    other: Path      # a second good case (analyze's training case)
    model: Path


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    from asymseg.modelfile import create_model, save_model
    from asymseg.phantom import write_phantom_cases
    from asymseg.target import TargetSpec

    root = tmp_path_factory.mktemp("matrix")
    cases = write_phantom_cases(root / "cases", 2, size=(32, 32, 32), seed=11)
    net, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.tumour_core("brats2017"), seed=1,
                             name="tiny", **TINY_NET)
    model = save_model(root / "tiny", net, card)
    return Workspace(root, cases[0], cases[1], model)


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    """Registry names resolve in a private, empty user folder (inherited by subprocesses)."""
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))


# -- what a row gives each command ------------------------------------------------------------------
@dataclass
class Spec:
    """One command of one row.

    Args:
        argv: the asymseg arguments.
        code: the expected exit code.
        names: strings the single stderr line must contain (the file or option, the problem).
        watch: folders that must hold nothing afterwards but ``keep`` (failures), or ``expect``
            (successes); no temporary file may be left in them either way.
        expect: for exit 0: relative paths that must exist under ``watch[0]``.
        keep: for failures: entries of ``watch`` that may stay (they existed before, or are the
            run folder of an interrupted fine-tuning, which holds no model).
        limits: resource limits for the subprocess, e.g. {resource.RLIMIT_FSIZE: 5000}.
        memory_mb: run through helpers/memory_limit.py: address space limited to what the process
            maps after its imports plus this many MiB.
        logs: fragments of log lines (WARNING ...) that must appear besides the result.
        warnings: WARNING log lines (the automatic tile fallback) may come before the single
            error line; they are not counted.
        check: an extra check of the result (exit 0 rows).
    """

    argv: list
    code: int
    names: tuple[str, ...] = ()
    watch: tuple[Path, ...] = ()
    expect: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    limits: dict = field(default_factory=dict)
    memory_mb: float | None = None
    logs: tuple[str, ...] = ()
    warnings: bool = False
    check: Callable | None = None


def out_dir(tmp: Path) -> Path:
    folder = tmp / "out"
    folder.mkdir(exist_ok=True)
    return folder


def segment(ws: Workspace, tmp: Path, case: Path, *extra, model: Path | str | None = None,
            output: Path | str | None = None) -> list:
    return ["segment", "--model", model or ws.model, "--case", case, "--output",
            output or out_dir(tmp) / "seg.nii.gz", "--progress", "none", *extra]


def finetune(ws: Workspace, tmp: Path, case: Path, *extra, model: Path | str | None = None,
             output: Path | str | None = None) -> list:
    return ["finetune", "--train-case", case, "--base-model", model or ws.model, "--output-model",
            output or out_dir(tmp) / "model", "--iterations", "2", "--batch-size", "2", "--val-every", "2",
            "--seed", "0", "--progress", "none", *extra]


def analyze(ws: Workspace, tmp: Path, case: Path, *extra, model: Path | str | None = None,
            output: Path | str | None = None) -> list:
    return ["analyze", "--model", model or ws.model, "--train-case", ws.other, "--test-case", case,
            "--out", output or out_dir(tmp) / "analysis", "--progress", "none", *extra]


def evaluate(prediction: Path, reference: Path, *extra) -> list:
    return ["evaluate", "--prediction", prediction, "--reference", reference, *extra]


def broken_case(ws: Workspace, tmp: Path, role: str, damage: Callable[[Path], object]) -> tuple[Path, str]:
    """A copy of the good case whose ``role`` file got ``damage``; returns (folder, damaged file name)."""
    case = B.copy_case(ws.case, tmp / "bad_case")
    path = B.role_file(case, role)
    damage(path)
    return case, path.name


def broken_prediction(ws: Workspace, tmp: Path, damage: Callable[[Path], object]) -> tuple[Path, Path]:
    """(damaged prediction, good reference): the prediction is a copy of the case's label map."""
    prediction = tmp / "prediction.nii.gz"
    shutil.copyfile(B.role_file(ws.case, B.SEG), prediction)
    damage(prediction)
    return prediction, B.role_file(ws.case, B.SEG)


def file_row(role: str, damage: Callable[[Path], object], problem: str, *, prediction: bool = True,
             code: int = C.EXIT_USAGE, label_problem: str | None = None) -> Callable[[Workspace, Path], dict[str, Spec]]:
    """A row that damages one file of the case (segment, finetune, analyze) and the prediction (evaluate);
    ``label_problem``: what evaluate says when the prediction, a label map, differs from an image."""

    def build(ws: Workspace, tmp: Path) -> dict[str, Spec]:
        case, name = broken_case(ws, tmp, role, damage)
        out = out_dir(tmp)
        specs = {cmd: Spec(fn(ws, tmp, case), code, (name, problem), (out,))
                 for cmd, fn in (("segment", segment), ("finetune", finetune), ("analyze", analyze))}
        if prediction:
            pred, ref = broken_prediction(ws, tmp, damage)
            specs["evaluate"] = Spec(evaluate(pred, ref), code, (pred.name, label_problem or problem), (out,))
        return specs

    return build


# -- the rows -----------------------------------------------------------------------------------------
def missing_file(ws, tmp):
    out = out_dir(tmp)
    missing = tmp / "no_such_case"
    flair = tmp / "missing_flair.nii.gz"
    return {
        "segment": Spec(["segment", "--model", ws.model, "--channel", f"flair={flair}",
                         "--channel", f"t1c={B.role_file(ws.case, B.T1C)}", "--output", out / "seg.nii.gz",
                         "--progress", "none"], 2, ("missing_flair.nii.gz", "no such"), (out,)),
        "finetune": Spec(finetune(ws, tmp, missing), 2, ("no_such_case", "no such"), (out,)),
        "evaluate": Spec(evaluate(tmp / "missing_pred.nii.gz", B.role_file(ws.case, B.SEG)), 2,
                         ("missing_pred.nii.gz", "no such"), (out,)),
        "analyze": Spec(analyze(ws, tmp, missing), 2, ("no_such_case", "no such"), (out,)),
    }


def mhd_without_data(ws, tmp):
    """A MetaImage header whose data file is missing: ITK prints to fd 2 itself (one line is still kept)."""
    out = out_dir(tmp)
    header = tmp / "flair.mhd"
    header.write_text("ObjectType = Image\nNDims = 3\nDimSize = 32 32 32\nElementType = MET_FLOAT\n"
                      "ElementDataFile = flair.raw\n")
    prediction = tmp / "prediction.mhd"
    shutil.copyfile(header, prediction)
    return {
        "segment": Spec(["segment", "--model", ws.model, "--channel", f"flair={header}",
                         "--channel", f"t1c={B.role_file(ws.case, B.T1C)}", "--output", out / "seg.nii.gz",
                         "--progress", "none"], 2, ("flair.mhd", "cannot read", "data file"), (out,)),
        "evaluate": Spec(evaluate(prediction, B.role_file(ws.case, B.SEG)), 2,
                         ("prediction.mhd", "cannot read", "data file"), (out,)),
    }


def grid_row(what: str):
    """A channel on another grid of the same physical space is resampled (exit 0, outputs written);
    a prediction on another grid than its reference is still an error for evaluate."""
    def build(ws, tmp):
        case, name = broken_case(ws, tmp, B.T1C, lambda p: B.change_grid(p, what))
        out = out_dir(tmp)
        specs = {
            "segment": Spec(segment(ws, tmp, case), 0, watch=(out,), expect=("seg.nii.gz",)),
            "finetune": Spec(finetune(ws, tmp, case), 0, watch=(out,), expect=("model/model.json",)),
            "analyze": Spec(analyze(ws, tmp, case), 0, watch=(out,), expect=("analysis/analysis.json",)),
        }
        pred, ref = broken_prediction(ws, tmp, lambda p: B.change_grid(p, what))
        specs["evaluate"] = Spec(evaluate(pred, ref), 2, (pred.name, ref.name, "different grids", what), (out,))
        return specs

    return build


def far_apart(role: str):
    """A file whose physical extent barely overlaps the reference channel's (another visit): refused."""
    def build(ws, tmp):
        if role == B.MASK:
            case = B.copy_case(ws.case, tmp / "bad_case")
            name = B.brain_mask_file(case, grid="far").name
        else:
            case, name = broken_case(ws, tmp, role, lambda p: B.change_grid(p, "far"))
        out = out_dir(tmp)
        return {cmd: Spec(fn(ws, tmp, case), 2, (name, "overlap by only", "register them first"), (out,))
                for cmd, fn in (("segment", segment), ("finetune", finetune), ("analyze", analyze))}

    return build


def empty_mask(ws, tmp):
    case = B.copy_case(ws.case, tmp / "bad_case")
    name = B.brain_mask_file(case, empty=True).name
    out = out_dir(tmp)
    return {cmd: Spec(fn(ws, tmp, case), 2, (name, "mask is empty"), (out,))
            for cmd, fn in (("segment", segment), ("finetune", finetune), ("analyze", analyze))}


def constant_image(ws, tmp):
    case, name = broken_case(ws, tmp, B.FLAIR, B.make_constant)
    out = out_dir(tmp)
    specs = {cmd: Spec(fn(ws, tmp, case), 2, (name, "constant"), (out,))
             for cmd, fn in (("segment", segment), ("finetune", finetune), ("analyze", analyze))}
    # evaluate: a constant (all-background) prediction is valid input: BraTS empty rules, exit 0.
    pred, ref = broken_prediction(ws, tmp, lambda p: B.rewrite(p, np.zeros_like))

    def check(out_text):
        metrics = json.loads(out_text)["metrics"]
        assert metrics["dsc"] == 0.0 and metrics["hd95"] == C.BRATS_HD95_CAP

    specs["evaluate"] = Spec(evaluate(pred, ref, "--json"), 0, check=check)
    return specs


def label_outside_convention(ws, tmp):
    """Label value 3 in a brats2017 case (the model's target): refused, not silently background."""
    case, name = broken_case(ws, tmp, B.SEG, lambda p: B.rewrite(p, lambda a: np.where(a == 2, 3, a)))
    out = out_dir(tmp)
    reference = B.role_file(case, B.SEG)
    prediction = B.role_file(ws.case, B.SEG)
    return {
        # segment does not use the label (only --reference/--evaluate do): scoring refuses it.
        "segment": Spec(segment(ws, tmp, case, "--evaluate"), 2, (name, "brats2017"), (out,)),
        "finetune": Spec(finetune(ws, tmp, case), 2, (name, "brats2017"), (out,)),
        "evaluate": Spec(evaluate(prediction, reference, "--label-convention", "brats2017"), 2,
                         (name, "brats2017"), (out,)),
        "analyze": Spec(analyze(ws, tmp, case), 2, (name, "brats2017"), (out,)),
    }


def label_no_convention(ws, tmp):
    """Label values that fit no BraTS convention (7) without --foreground-labels."""
    case, name = broken_case(ws, tmp, B.SEG, lambda p: B.rewrite(p, lambda a: np.where(a == 2, 7, a)))
    out = out_dir(tmp)
    return {
        "finetune": Spec(finetune(ws, tmp, case), 2, (name, "brats2017"), (out,)),
        "evaluate": Spec(evaluate(B.role_file(ws.case, B.SEG), B.role_file(case, B.SEG)), 2,
                         (name, "fit no BraTS convention"), (out,)),
    }


def no_tumour(ws, tmp):
    case, name = broken_case(ws, tmp, B.SEG, lambda p: B.rewrite(p, np.zeros_like))
    out = out_dir(tmp)

    def empty_reference(out_text):
        metrics = json.loads(out_text)["metrics"]
        assert metrics["dsc"] == 0.0 and metrics["hd95"] == C.BRATS_HD95_CAP and metrics["sensitivity"] is None

    return {
        "segment": Spec(segment(ws, tmp, case), 0, watch=(out,), expect=("seg.nii.gz",)),
        "finetune": Spec(finetune(ws, tmp, case), 2, ("bad_case", "no rare-class (tumour) voxels"), (out,)),
        "evaluate": Spec(evaluate(B.role_file(ws.case, B.SEG), B.role_file(case, B.SEG), "--json"), 0,
                         check=empty_reference),
        "analyze": Spec(analyze(ws, tmp, case), 0, watch=(out,),
                        expect=("analysis", "analysis/analysis.json", "analysis/logits.png")),
    }


def wrong_channels(ws, tmp):
    """A model that takes flair, t1c and t2 on a case with flair and t1c only."""
    from asymseg.modelfile import create_model, save_model
    from asymseg.target import TargetSpec

    net, card = create_model("deepmedic", ["flair", "t1c", "t2"], TargetSpec.tumour_core("brats2017"), **TINY_NET)
    model = save_model(tmp / "three_channels", net, card)
    out = out_dir(tmp)
    # analyze loads its training case (ws.other) first, so that is the folder its message names.
    return {cmd: Spec(fn(ws, tmp, ws.case, model=model), 2, (first.name, "no t2 channel"), (out,))
            for cmd, fn, first in (("segment", segment, ws.case), ("finetune", finetune, ws.case),
                                   ("analyze", analyze, ws.other))}


def model_row(make: Callable[[Path, Path], Path | str], names: tuple[str, ...], code: int = C.EXIT_MODEL):
    def build(ws, tmp):
        model = make(ws.model, tmp)
        out = out_dir(tmp)
        return {cmd: Spec(fn(ws, tmp, ws.case, model=model), code, names, (out,))
                for cmd, fn in (("segment", segment), ("finetune", finetune), ("analyze", analyze))}

    return build


def _bad_json(model, tmp):
    copy = B.copy_model(model, tmp / "bad_json")
    (copy / "model.json").write_text('{"format_version": 1, "name": "tiny",')
    return copy


def _nested(model, tmp):
    copy = B.copy_model(model, tmp / "nested")
    text = (copy / "model.json").read_text().rstrip()
    (copy / "model.json").write_text(text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return copy


def _huge_number(model, tmp):
    copy = B.copy_model(model, tmp / "huge_number")
    text = (copy / "model.json").read_text()
    (copy / "model.json").write_text(text.replace('"format_version": 1', '"format_version": ' + "9" * 5000, 1))
    return copy


def _overflow(model, tmp):
    copy = B.copy_model(model, tmp / "overflow")
    text = (copy / "model.json").read_text()
    (copy / "model.json").write_text(text.replace('"format_version": 1', '"format_version": 1e999', 1))
    return copy


def _version(model, tmp):
    return B.edit_card(B.copy_model(model, tmp / "future"), format_version=99)


def _sha(model, tmp):
    copy = B.copy_model(model, tmp / "tampered")
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    return copy


def _pickle(model, tmp):
    folder = tmp / "pickled"
    folder.mkdir()
    (folder / "model.pt").write_bytes(B.crafted_pickle(tmp / "marker"))
    return folder


def unwritable(where: str):
    """Output paths that cannot be written: under a regular file, in sysfs, a file where a folder is needed."""

    def build(ws, tmp):
        blocker = tmp / "file.txt"
        blocker.write_text("a regular file\n")
        out = out_dir(tmp)
        if where == "under-a-file":
            targets = {"segment": blocker / "out.nii.gz", "finetune": blocker / "model",
                       "analyze": blocker / "analysis"}
            names = ("file.txt",)
        elif where == "sysfs":
            targets = {c: Path("/sys/kernel") / f"asymseg-test-{c}{'.nii.gz' if c == 'segment' else ''}"
                       for c in ("segment", "finetune", "analyze")}
            names = ("/sys/kernel/asymseg-test",)
        else:  # a file where a folder is needed, a folder where a file is needed
            folder = out / "existing_folder.nii.gz"
            folder.mkdir()
            (folder / "keep.txt").write_text("x")
            targets = {"segment": out / "seg.txt", "finetune": folder, "analyze": blocker}
            names = ()
        keep = ("existing_folder.nii.gz",) if where == "other" else ()
        return {cmd: Spec(fn(ws, tmp, ws.case, output=targets[cmd]), 2, names + (Path(targets[cmd]).name,), (out,),
                          keep=keep)
                for cmd, fn in (("segment", segment), ("finetune", finetune), ("analyze", analyze))}

    return build


def out_of_disk(ws, tmp):
    """RLIMIT_FSIZE below the size of the outputs (SIGXFSZ is ignored by Python, so writes fail with EFBIG)."""
    out = out_dir(tmp)
    return {
        # the label map (~1 kB) fits, the probability map does not: neither may stay.
        "segment": Spec(segment(ws, tmp, ws.case, "--probabilities"), 4, ("seg_prob.nii.gz", "file size limit"),
                        (out,), limits={resource.RLIMIT_FSIZE: 4000}),
        "finetune": Spec(finetune(ws, tmp, ws.case), 4, ("out/model: cannot write the model", "file size limit"),
                         (out,), keep=("model.run",), limits={resource.RLIMIT_FSIZE: 4000}),
        "analyze": Spec(analyze(ws, tmp, ws.case), 4, ("analysis", "File too large"), (out,),
                        limits={resource.RLIMIT_FSIZE: 4000}),
    }


def _memory_workspace(ws: Workspace) -> tuple[Path, Path, Path]:
    """A 64^3 case (brain box about 48^3), a second one, and a wider tiny model, made once: a
    48^3 tile of this model needs tens of MiB of activations, a 24^3 tile a few."""
    from asymseg.modelfile import create_model, save_model
    from asymseg.phantom import write_phantom_cases
    from asymseg.target import TargetSpec

    root = ws.root / "memory"
    if not root.exists():
        write_phantom_cases(root / "cases", 2, size=(64, 64, 64), seed=3)
        net, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.tumour_core("brats2017"), seed=1,
                                 name="wide", normal_features=[16, 16], lowres_features=[16, 16], fc_features=[64],
                                 dropout=[0.0, 0.0])
        save_model(root / "wide", net, card)
    return root / "cases" / "phantom_000", root / "cases" / "phantom_001", root / "wide"


def tile_too_large(ws, tmp):
    """--tile 64 with 40 MiB to spare: the first tiles do not fit, halved ones do (automatic fallback)."""
    case, _, model = _memory_workspace(ws)
    out = out_dir(tmp)
    return {"segment": Spec(segment(ws, tmp, case, "--probabilities", "--tile", "64", model=model), 0, watch=(out,),
                            expect=("seg.nii.gz", "seg_prob.nii.gz"), memory_mb=40, logs=("retrying with",),
                            warnings=True)}


def out_of_memory(ws, tmp):
    """10 MiB to spare: not even the smallest tiles fit. Exit 4, one error line, no output."""
    case, other, model = _memory_workspace(ws)
    out = out_dir(tmp)
    analysis = ["analyze", "--model", model, "--train-case", other, "--test-case", case, "--out", out / "analysis",
                "--tile", "64", "--progress", "none"]
    return {"segment": Spec(segment(ws, tmp, case, "--probabilities", "--tile", "64", model=model), 4,
                            ("out of memory", "free memory"), (out,), memory_mb=10, warnings=True),
            "analyze": Spec(analysis, 4, ("out of memory", "free memory"), (out,), memory_mb=10, warnings=True)}


ROWS: dict[str, tuple[str, Callable]] = {
    "missing-file": ("missing file", missing_file),
    "truncated-nii-gz": ("truncated .nii.gz", file_row(B.FLAIR, B.truncate, "truncated")),
    "corrupt-gzip": ("corrupt gzip data in a .nii.gz", file_row(B.FLAIR, B.corrupt_gzip, "corrupt")),
    "empty-file": ("empty (0-byte) image file", file_row(B.T1C, B.empty_file, "not a readable image")),
    "not-an-image": ("a file that is not an image", file_row(B.FLAIR, B.not_an_image, "not a readable image")),
    "header-without-data": ("header whose data file is missing (ITK prints to fd 2)", mhd_without_data),
    "2d-image": ("2-D image", file_row(B.FLAIR, B.two_d, "2-D")),
    "4d-image": ("4-D image with 3 volumes", file_row(B.FLAIR, B.four_d, "4-D")),
    "grid-size": ("channels on different grids: size", grid_row("size")),
    "grid-spacing": ("channels on different grids: spacing", grid_row("spacing")),
    "grid-origin": ("channels on different grids: origin", grid_row("origin")),
    "grid-direction": ("channels on different grids: direction", grid_row("direction")),
    "channel-far-apart": ("channels that barely overlap in physical space (another visit)", far_apart(B.T1C)),
    "label-far-apart": ("label that barely overlaps the channels", far_apart(B.SEG)),
    "mask-far-apart": ("brain mask that barely overlaps the channels", far_apart(B.MASK)),
    "nan-voxels": ("NaN voxels", file_row(B.FLAIR, lambda p: B.put_nonfinite(p, np.nan), "NaN")),
    "inf-voxels": ("Inf voxels", file_row(B.T1C, lambda p: B.put_nonfinite(p, np.inf), "infinite")),
    "beyond-float32": ("float64 voxels beyond the float32 range (1e300)",
                       file_row(B.FLAIR, B.put_beyond_float32, "beyond the float32 range",
                                label_problem="1e+300 are beyond the int32 range")),
    "nifti-zero-pixdim": ("NIfTI header with a zero voxel size (pixdim)",
                          file_row(B.T1C, B.zero_pixdim, "voxel size (pixdim) is not positive")),
    "constant-image": ("constant image", constant_image),
    "empty-mask": ("empty brain mask", empty_mask),
    "label-outside-convention": ("label value outside the convention", label_outside_convention),
    "label-fits-no-convention": ("label values that fit no convention", label_no_convention),
    "no-tumour": ("case without any tumour", no_tumour),
    "wrong-channels": ("wrong number of channels for the model", wrong_channels),
    "unknown-model": ("unknown model name",
                      model_row(lambda m, t: "no-such-model", ("no-such-model", "unknown model"))),
    "card-invalid-json": ("model card with invalid JSON", model_row(_bad_json, ("model.json", "invalid JSON"))),
    "card-nested": ("model card nested 100,000 deep", model_row(_nested, ("model.json", "nested too deeply"))),
    "card-huge-integer": ("model card with a 5,000-digit integer",
                          model_row(_huge_number, ("model.json", "5,000 digits is out of range"))),
    "card-overflowing-number": ("model card with a number that overflows (1e999)",
                                model_row(_overflow, ("model.json", "1e999 is out of range"))),
    "card-version": ("model card with an unknown format version",
                     model_row(_version, ("model.json", "format_version"))),
    "weights-sha256": ("weights whose SHA256 does not match",
                       model_row(_sha, ("model.safetensors", "SHA256 mismatch"))),
    "pickle-checkpoint": ("a pickle checkpoint", model_row(_pickle, ("model.pt", "pickle checkpoints are refused"))),
    "output-under-a-file": ("output path under a regular file", unwritable("under-a-file")),
    "output-read-only": ("output in a read-only location (sysfs)", unwritable("sysfs")),
    "output-wrong-kind": ("output: wrong file type, or a file/folder where the other is needed", unwritable("other")),
    "out-of-disk": ("running out of disk while writing (RLIMIT_FSIZE)", out_of_disk),
    "tile-too-large": ("a tile too large for memory (automatic fallback)", tile_too_large),
    "out-of-memory": ("out of memory even with the smallest tiles (RLIMIT_AS)", out_of_memory),
}

#: (row, command) pairs that run as a real subprocess: the rows where ITK prints to fd 2 itself,
#: and the resource limits; the rest run in-process to keep the matrix fast.
SUBPROCESS = {("header-without-data", "segment"), ("header-without-data", "evaluate"),
              ("out-of-disk", "segment"), ("out-of-disk", "finetune"),
              ("out-of-disk", "analyze"), ("tile-too-large", "segment"), ("out-of-memory", "segment"),
              ("out-of-memory", "analyze")}

#: Which commands each row applies to (the others are marked n/a in docs/ROBUSTNESS.md).
APPLIES = {
    "header-without-data": ("segment", "evaluate"),
    "channel-far-apart": ("segment", "finetune", "analyze"),
    "label-far-apart": ("segment", "finetune", "analyze"),
    "mask-far-apart": ("segment", "finetune", "analyze"),
    "empty-mask": ("segment", "finetune", "analyze"),
    "label-fits-no-convention": ("finetune", "evaluate"),
    "wrong-channels": ("segment", "finetune", "analyze"),
    "unknown-model": ("segment", "finetune", "analyze"),
    "card-invalid-json": ("segment", "finetune", "analyze"),
    "card-nested": ("segment", "finetune", "analyze"),
    "card-huge-integer": ("segment", "finetune", "analyze"),
    "card-overflowing-number": ("segment", "finetune", "analyze"),
    "card-version": ("segment", "finetune", "analyze"),
    "weights-sha256": ("segment", "finetune", "analyze"),
    "pickle-checkpoint": ("segment", "finetune", "analyze"),
    "output-under-a-file": ("segment", "finetune", "analyze"),
    "output-read-only": ("segment", "finetune", "analyze"),
    "output-wrong-kind": ("segment", "finetune", "analyze"),
    "out-of-disk": ("segment", "finetune", "analyze"),
    "tile-too-large": ("segment",),
    "out-of-memory": ("segment", "analyze"),
}

CELLS = [pytest.param(row, cmd, id=f"{row}-{cmd}",
                      marks=[pytest.mark.slow] if (row, cmd) in SUBPROCESS else [])
         for row in ROWS for cmd in APPLIES.get(row, COMMANDS)]


# -- running a cell -------------------------------------------------------------------------------------
def _run_subprocess(spec: Spec, tmp: Path):
    from helpers.engine import run_asymseg

    if spec.memory_mb is not None:
        proc = subprocess.run([sys.executable, str(HELPERS / "memory_limit.py"), str(spec.memory_mb), "--threads", "1",
                               *map(str, spec.argv)], capture_output=True, text=True, timeout=300, cwd=tmp,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1"})
        return proc.returncode, proc.stdout, proc.stderr
    limits = dict(spec.limits)

    def preexec():
        for which, value in limits.items():
            resource.setrlimit(which, (value, value))

    proc = run_asymseg(*spec.argv, timeout=300, cwd=tmp, preexec_fn=preexec if limits else None,
                       env={"OMP_NUM_THREADS": "1"})
    return proc.returncode, proc.stdout, proc.stderr


def _run_in_process(spec: Spec, cli, capfd):
    capfd.readouterr()
    result = cli(*spec.argv)
    captured = capfd.readouterr()
    return result.code, result.out + captured.out, result.err + captured.err


def _sysfs_leftovers() -> list[str]:
    return sorted(n for n in os.listdir("/sys/kernel") if n.startswith("asymseg-test")) \
        if os.path.isdir("/sys/kernel") else []


@pytest.mark.parametrize("row, command", CELLS)
def test_bad_input_matrix(row, command, ws, tmp_path, cli, capfd):
    if row == "output-read-only" and not os.path.isdir("/sys/kernel"):
        pytest.skip("needs Linux sysfs (read-only even for root)")
    spec = ROWS[row][1](ws, tmp_path)[command]
    if spec.memory_mb is not None and not os.path.exists("/proc/self/status"):
        pytest.skip("the address-space limit is set relative to /proc/self/status (Linux)")
    if (row, command) in SUBPROCESS or spec.limits or spec.memory_mb is not None:
        code, out, err = _run_subprocess(spec, tmp_path)
    else:
        code, out, err = _run_in_process(spec, cli, capfd)
    lines = [line for line in err.splitlines() if line.strip()]
    for fragment in spec.logs:  # expected log lines (the automatic tile fallback) come before the result
        assert any(line.startswith("WARNING ") and fragment in line for line in lines), err
    lines = [line for line in lines if not (spec.warnings and line.startswith("WARNING "))]
    if spec.code == 0:
        assert code == 0, err
        assert not [line for line in lines if "error" in line.lower()], err
        if spec.watch:
            present = B.listing(spec.watch[0])
            assert all(e in present for e in spec.expect), present
            assert not [p for p in present if p.endswith(".tmp") or "/." in f"/{p}"], present
        if spec.check is not None:
            spec.check(out)
        return
    assert code == spec.code, f"exit {code}, expected {spec.code}: {err}"
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith(f"asymseg {command}: error: "), line
    for name in spec.names:
        assert name in line, f"{name!r} not in {line!r}"
    for folder in spec.watch:
        present = B.listing(folder)
        assert not [p for p in present if p.endswith(".tmp") or "/." in f"/{p}"], f"temporary files: {present}"
        left = [p for p in present if not any(p == k or p.startswith(k + "/") for k in spec.keep)]
        assert left == [], f"partial output left in {folder}: {left}"
    assert "Traceback" not in out
    assert _sysfs_leftovers() == []
    if command == "evaluate":
        assert out == ""
