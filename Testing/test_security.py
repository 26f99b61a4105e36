"""Untrusted files and the network: a crafted pickle never runs, archives cannot escape, nothing connects.

- A pickle whose unpickling would create a marker file, saved as model.pt, model.pth, model.ckpt
  and renamed model.safetensors, is refused by ``load_model`` and by every command that takes a
  model (segment, analyze, finetune --base-model, models show/import), and the marker never appears.
- ``asymseg models import`` refuses archive entries that leave the target folder (``..``, absolute
  paths, backslashes), symbolic and hard links and repeated entries, with exit 3 and one line, and
  leaves nothing behind: no model, no staging folder, no file outside.
- segment, finetune, analyze, evaluate, info and models run in an interpreter whose sockets
  refuse and record every connection and name lookup: nothing is recorded. (The engine has no
  network code at all; see docs/ROBUSTNESS.md.)
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from asymseg import constants as C
from asymseg.errors import ModelError
from asymseg.modelfile import CARD_FILE, WEIGHTS_FILE, sha256_file
from asymseg.registry import load_model
from helpers import broken as B

HELPERS = Path(__file__).resolve().parent / "helpers"
TINY_NET = {"normal_features": [4, 4], "lowres_features": [4, 4], "fc_features": [8], "dropout": [0.0, 0.0]}
PICKLE_NAMES = ("model.pt", "model.pth", "model.ckpt", "model.safetensors")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A tiny model and one 32^3 phantom case."""
    from asymseg.modelfile import create_model, save_model
    from asymseg.phantom import write_phantom_cases
    from asymseg.target import TargetSpec

    root = tmp_path_factory.mktemp("security")
    net, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.tumour_core("brats2017"), seed=2,
                             name="tiny", **TINY_NET)
    model = save_model(root / "tiny", net, card)
    (case,) = write_phantom_cases(root / "cases", 1, size=(32, 32, 32), seed=4)
    return root, model, case


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    monkeypatch.setenv("ASYMSEG_HOME", str(folder))
    return folder


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# -- crafted pickles --------------------------------------------------------------------------------
def _pickled_model(folder: Path, name: str, marker: Path, good_model: Path, protocol: int) -> Path:
    """A folder holding the crafted pickle as ``name``; model.safetensors also gets a card whose
    SHA256 matches the pickle, so nothing but the content check stands in the way."""
    folder.mkdir()
    (folder / name).write_bytes(B.crafted_pickle(marker, protocol))
    if name == WEIGHTS_FILE:
        card = json.loads((good_model / CARD_FILE).read_text())
        card["weights"]["sha256"] = sha256_file(folder / name)
        (folder / CARD_FILE).write_text(json.dumps(card))
    return folder


def test_the_crafted_pickle_really_creates_the_marker(tmp_path):
    marker = tmp_path / "marker"
    pickle.loads(B.crafted_pickle(marker))
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("name", PICKLE_NAMES)
def test_a_crafted_pickle_is_refused_by_every_entry_point_and_never_runs(ws, tmp_path, home, cli, capfd, name,
                                                                         protocol):
    root, good, case = ws
    marker = tmp_path / "marker"
    model = _pickled_model(tmp_path / "evil", name, marker, good, protocol)
    with pytest.raises(ModelError, match="pickle checkpoints are refused"):
        load_model(model)
    if name != WEIGHTS_FILE:
        with pytest.raises(ModelError, match="pickle checkpoints are refused"):
            load_model(model / name)
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in model.iterdir():
            zf.write(path, f"evil/{path.name}")
    out = tmp_path / "out"
    runs = {
        "segment": ("segment", "--model", model, "--case", case, "--output", out / "seg.nii.gz", "--progress", "none"),
        "finetune": ("finetune", "--train-case", case, "--base-model", model, "--output-model", out / "m",
                     "--iterations", "1", "--progress", "none"),
        "models show": ("models", "show", model),
        "models import": ("models", "import", model),
        "models import archive": ("models", "import", archive),
    }
    for what, argv in runs.items():
        capfd.readouterr()
        result = cli(*argv)
        err = result.err + capfd.readouterr().err
        assert result.code == C.EXIT_MODEL, f"{what}: {err}"
        line = _one_line(err)
        assert name in line and "pickle checkpoints are refused" in line, f"{what}: {line}"
    assert not marker.exists()
    assert B.listing(out) == []
    assert B.listing(home) in ([], ["models"])  # nothing imported, no staging folder left


def test_analyze_refuses_the_pickle_before_reading_cases(ws, tmp_path, cli, capfd):
    root, good, case = ws
    marker = tmp_path / "marker"
    model = _pickled_model(tmp_path / "evil", "model.pt", marker, good, 4)
    other = B.copy_case(case, tmp_path / "other_case")
    capfd.readouterr()
    result = cli("analyze", "--model", model, "--train-case", case, "--test-case", other, "--out", tmp_path / "a",
                 "--progress", "none")
    err = result.err + capfd.readouterr().err
    assert result.code == C.EXIT_MODEL and "model.pt: pickle checkpoints are refused" in _one_line(err)
    assert not marker.exists() and not (tmp_path / "a").exists()


# -- archives -----------------------------------------------------------------------------------------
def _zip(model: Path, path: Path, extra: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(model / CARD_FILE, f"core/{CARD_FILE}")
        zf.write(model / WEIGHTS_FILE, f"core/{WEIGHTS_FILE}")
        for info, data in extra:
            zf.writestr(info, data)
    return path


def _link(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _tar(model: Path, path: Path, extra: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        tf.add(model / CARD_FILE, f"core/{CARD_FILE}")
        tf.add(model / WEIGHTS_FILE, f"core/{WEIGHTS_FILE}")
        for info, data in extra:
            info.size = len(data) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            tf.addfile(info, io.BytesIO(data) if data else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


ESCAPES = {
    "zip-dotdot": (".zip", lambda t: [("core/../../escaped.txt", b"evil")], "outside the archive folder"),
    "zip-backslash": (".zip", lambda t: [("core\\..\\..\\escaped.txt", b"evil")], "outside the archive folder"),
    "zip-absolute": (".zip", lambda t: [(str(t / "escaped.txt"), b"evil")], "absolute path"),
    "zip-symlink": (".zip", lambda t: [(_link("core/model.json.link", str(t)), str(t).encode())], "symbolic link"),
    "zip-repeated": (".zip", lambda t: [(f"core/{CARD_FILE}", b"{}")], "appears twice"),
    "tar-dotdot": (".tar.gz", lambda t: [(_member("../escaped.txt"), b"evil")], "outside the archive folder"),
    "tar-absolute": (".tar.gz", lambda t: [(_member(str(t / "escaped.txt")), b"evil")], "absolute path"),
    "tar-symlink": (".tar.gz", lambda t: [(_member("core/out", tarfile.SYMTYPE, str(t)), b""),
                                           (_member("core/out/escaped.txt"), b"evil")], "symbolic link"),
    "tar-hardlink": (".tar.gz", lambda t: [(_member("core/hard", tarfile.LNKTYPE, "/etc/hostname"), b"")],
                     "hard link"),
    "tar-device": (".tar.gz", lambda t: [(_member("core/null", tarfile.CHRTYPE), b"")], "special file"),
}


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("kind", list(ESCAPES))
def test_models_import_refuses_unsafe_archives_and_leaves_nothing(ws, tmp_path, home, cli, capfd, kind):
    root, model, _ = ws
    suffix, entries, problem = ESCAPES[kind]
    target = tmp_path / "target"
    target.mkdir()
    make = _zip if suffix == ".zip" else _tar
    archive = make(model, tmp_path / f"bad{suffix}", entries(target))
    before = B.listing(tmp_path)
    capfd.readouterr()
    result = cli("models", "import", archive)
    err = result.err + capfd.readouterr().err
    assert result.code == C.EXIT_MODEL, err
    line = _one_line(err)
    assert f"bad{suffix}" in line and problem in line, line
    assert not (target / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not (home.parent.parent / "escaped.txt").exists()
    after = [p for p in B.listing(tmp_path) if p not in before]
    assert after in ([], ["home", "home/models"]), after  # the user folder may be created, empty
    listed = json.loads(cli("models", "list", "--json").out)["models"]
    assert [m["name"] for m in listed if m["source"] == "user"] == []


def test_a_clean_archive_imports_and_verifies(ws, tmp_path, home, cli):
    """The refusals above are not a blanket refusal: the same archive without the bad entry imports."""
    root, model, _ = ws
    archive = _zip(model, tmp_path / "good.zip", [])
    result = cli("models", "import", archive, "--name", "core")
    assert result.code == 0, result.err
    assert load_model("core").card.name == "core"


def _tar_flood_then_truncated(model: Path, path: Path, entries: int) -> Path:
    """A .tar.gz whose first ``entries`` members are empty files, followed by one member whose
    compressed data is cut short: a reader that lists every member before applying the limit
    runs into the cut (or, on a real flood, spends its time and memory listing), one that
    streams refuses at the limit and never reaches it."""
    import gzip
    import os

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        tf.add(model / CARD_FILE, f"core/{CARD_FILE}")
        for i in range(entries):
            tf.addfile(tarfile.TarInfo(f"core/pad/{i:05d}"), io.BytesIO(b""))
        tail = os.urandom(1 << 16)
        info = tarfile.TarInfo("core/pad/tail")
        info.size = len(tail)
        tf.addfile(info, io.BytesIO(tail))
    path.write_bytes(gzip.compress(buffer.getvalue())[:-8192])
    return path


def _zip_declaring(model: Path, path: Path, entries: int) -> Path:
    """A real zip whose end-of-central-directory record declares ``entries`` entries."""
    _zip(model, path, [])
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x05\x06")
    data[at + 8:at + 12] = entries.to_bytes(2, "little") * 2  # entries on this disk, entries in all
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_an_archive_with_too_many_entries_is_refused_while_streaming(ws, tmp_path, home, cli, capfd, kind):
    """The entry limit applies as the archive is read, not after the whole listing is built."""
    from asymseg.registry import MAX_ARCHIVE_ENTRIES

    root, model, _ = ws
    if kind == "tar":
        archive = _tar_flood_then_truncated(model, tmp_path / "flood.tar.gz", MAX_ARCHIVE_ENTRIES + 5)
    else:
        archive = _zip_declaring(model, tmp_path / "flood.zip", 60_000)
    capfd.readouterr()
    result = cli("models", "import", archive)
    line = _one_line(result.err + capfd.readouterr().err)
    assert result.code == C.EXIT_MODEL
    assert f"flood.{'tar.gz' if kind == 'tar' else 'zip'}: more than {MAX_ARCHIVE_ENTRIES} entries" in line, line
    assert list((home / "models").iterdir()) == []


def test_import_errors_name_the_archive_not_the_staging_folder(ws, tmp_path, home, cli, capfd):
    """A card that fails only when the network is built is reported against the archive's member."""
    root, model, _ = ws
    bad = B.copy_model(model, tmp_path / "core")
    B.edit_card(bad, architecture={"name": "deepmedic", "hparams": {**TINY_NET, "dropout": [2.0, 0.0]}})
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(bad, "core")
    capfd.readouterr()
    result = cli("models", "import", archive)
    line = _one_line(result.err + capfd.readouterr().err)
    assert result.code == C.EXIT_MODEL and "dropout" in line, line
    assert f"{archive}/" in line and ".tmp" not in line and ".import." not in line, line


# -- the network ---------------------------------------------------------------------------------------
def _guarded(tmp_path: Path, commands: list[list]) -> tuple[list[int], list[dict], subprocess.CompletedProcess]:
    log = tmp_path / "network.jsonl"
    plan = tmp_path / "commands.json"
    plan.write_text(json.dumps([[str(a) for a in argv] for argv in commands]))
    proc = subprocess.run([sys.executable, str(HELPERS / "socket_guard.py"), str(log), str(plan)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return codes, calls, proc


def test_the_socket_guard_catches_a_real_request(tmp_path):
    codes, calls, _ = _guarded(tmp_path, [["--probe-network"]])
    assert codes == [-1]
    assert calls and calls[0]["call"] in ("create_connection", "getaddrinfo", "socket.connect")


@pytest.mark.slow
def test_no_command_touches_the_network(ws, tmp_path, home):
    root, model, case = ws
    other = B.copy_case(case, tmp_path / "other")
    archive = tmp_path / "tiny.zip"
    out = tmp_path / "out"
    commands = [
        ["models", "list"],
        ["models", "export", model, "--out", archive],
        ["models", "import", archive, "--name", "imported"],
        ["models", "show", "imported"],
        ["info", case],
        ["segment", "--model", "imported", "--case", case, "--output", out / "seg.nii.gz", "--probabilities",
         "--progress", "none"],
        ["evaluate", "--prediction", out / "seg.nii.gz", "--reference", B.role_file(case, B.SEG)],
        ["analyze", "--model", model, "--train-case", case, "--test-case", other, "--out", out / "analysis",
         "--progress", "none"],
        ["finetune", "--train-case", case, "--val-case", other, "--base-model", model, "--output-model",
         out / "tuned", "--iterations", "2", "--batch-size", "2", "--val-every", "2", "--progress", "none"],
        ["finetune", "--resume", out / "tuned.run", "--iterations", "3", "--progress", "none"],
    ]
    codes, calls, proc = _guarded(tmp_path, commands)
    assert codes == [0] * len(commands), proc.stderr
    assert calls == []
    assert (out / "seg.nii.gz").exists() and (out / "analysis" / "analysis.json").exists()
    assert load_model(out / "tuned").card.provenance["iterations"] == 3
    shutil.rmtree(out)


def test_an_error_line_is_bounded_whatever_value_it_echoes(ws, tmp_path, home, cli, capfd):
    """A 200,000-character model name is named in the error, shortened: one line of at most 1000
    characters (after the command's prefix) that keeps the start and the end of the message."""
    from asymseg.cli import MAX_ERROR_CHARS

    root, model, case = ws
    name = "m" * 200_000
    capfd.readouterr()
    result = cli("segment", "--model", name, "--case", case, "--output", tmp_path / "seg.nii.gz",
                 "--progress", "none")
    line = _one_line(result.err + capfd.readouterr().err)
    assert result.code in (C.EXIT_USAGE, C.EXIT_MODEL)
    assert len(line) <= MAX_ERROR_CHARS + len("asymseg segment: error: "), len(line)
    assert line.startswith("asymseg segment: error: ") and "mmmm" in line and "characters]..." in line, line[:200]
    assert not (tmp_path / "seg.nii.gz").exists()
