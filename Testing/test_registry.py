"""Model registry: user folder, name lookup, safe import of archives, export round trip."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from asymseg import registry
from asymseg.errors import InputError, ModelError
from asymseg.modelfile import CARD_FILE, WEIGHTS_FILE, create_model, read_card, save_model
from asymseg.registry import load_model
from asymseg.target import TargetSpec

SMALL_UNET = {"depth": 2, "base_features": 4, "training_output_size": 8}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """$ASYMSEG_HOME in tmp_path, and an empty bundled folder next to it."""
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: bundled)
    return tmp_path / "home"


@pytest.fixture
def model_dir(tmp_path) -> Path:
    net, card = create_model("unet", ["flair", "t1c"], TargetSpec.tumour_core("brats2017"), seed=2, name="core",
                             **SMALL_UNET)
    return save_model(tmp_path / "src" / "core", net, card)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_user_models_dir_follows_asymseg_home(monkeypatch, tmp_path):
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "h"))
    assert registry.user_models_dir() == tmp_path / "h" / "models"
    monkeypatch.delenv("ASYMSEG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "u"))
    assert registry.user_models_dir() == tmp_path / "u" / ".asymseg" / "models"


def test_imported_directory_is_listed_and_found_by_name(home, model_dir):
    assert registry.list_models() == []
    path = registry.import_model(model_dir)
    assert path == home / "models" / "core" and sorted(p.name for p in path.iterdir()) == [CARD_FILE, WEIGHTS_FILE]
    infos = registry.list_models()
    assert [(i.name, i.source, i.card.architecture) for i in infos] == [("core", "user", "unet")]
    assert registry.find_model("core") == path
    assert registry.find_model(str(model_dir)) == model_dir
    assert not any(p.name.startswith(".") for p in (home / "models").iterdir())  # staging removed


def test_import_under_another_name_renames_the_card(home, model_dir):
    path = registry.import_model(model_dir, name="core-v2")
    assert read_card(path).name == "core-v2"
    load_model("core-v2")  # the rewritten card still verifies
    with pytest.raises(ModelError, match="a user model named 'core-v2' exists already"):
        registry.import_model(model_dir, name="core-v2")
    registry.import_model(model_dir, name="core-v2", overwrite=True)
    with pytest.raises(InputError, match="invalid model name '../x'"):
        registry.import_model(model_dir, name="../x")


def test_unknown_name_lists_the_available_models(home, model_dir):
    registry.import_model(model_dir)
    with pytest.raises(ModelError, match=r"unknown model 'nope'; available: core \(see asymseg models list\)"):
        registry.find_model("nope")


def test_bundled_names_cannot_be_taken_and_duplicates_are_ambiguous(home, model_dir, tmp_path):
    bundled = registry.bundled_models_dir()
    net, card = create_model("unet", ["flair"], TargetSpec.foreground([1]), name="core", **SMALL_UNET)
    save_model(bundled / "core", net, card)
    with pytest.raises(ModelError, match="'core' is the name of a bundled model"):
        registry.import_model(model_dir)
    assert registry.find_model("core") == bundled / "core"
    save_model(home / "models" / "core", net, card)  # copied by hand
    with pytest.raises(ModelError, match="'core' is both a bundled model .* and a user model"):
        registry.find_model("core")
    assert [i.source for i in registry.list_models()] == ["bundled", "user"]


def test_invalid_user_models_are_listed_with_their_error(home, model_dir):
    broken = home / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / CARD_FILE).write_text("{")
    [info] = registry.list_models()
    assert info.card is None and "invalid JSON" in info.error


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_export_then_import_round_trip(home, model_dir, tmp_path, suffix):
    archive = registry.export_model(model_dir, tmp_path / f"core{suffix}")
    path = registry.import_model(archive, name="copy")
    a, b = load_model(model_dir), load_model(path)
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(a.net(x), b.net(x))
    with pytest.raises(InputError, match="exists already"):
        registry.export_model(model_dir, archive)
    with pytest.raises(InputError, match="must end in .zip or .tar.gz"):
        registry.export_model(model_dir, tmp_path / "core.rar")


def _zip_with(model_dir: Path, path: Path, name: str, data: bytes = b"x", mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(model_dir / CARD_FILE, f"core/{CARD_FILE}")
        zf.write(model_dir / WEIGHTS_FILE, f"core/{WEIGHTS_FILE}")
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        zf.writestr(info, data)
    return path


def _tar_with(model_dir: Path, path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        tf.add(model_dir / CARD_FILE, f"core/{CARD_FILE}")
        tf.add(model_dir / WEIGHTS_FILE, f"core/{WEIGHTS_FILE}")
        tf.addfile(member, io.BytesIO(data) if data else None)
    return path


def _tarinfo(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


@pytest.mark.parametrize("entry,match", [
    ("../../evil.txt", "points outside the archive folder"),
    ("core/../../evil.txt", "points outside the archive folder"),
    ("/tmp/evil.txt", "has an absolute path"),
])
def test_zip_entries_escaping_the_folder_are_refused(home, model_dir, tmp_path, entry, match):
    archive = _zip_with(model_dir, tmp_path / "bad.zip", entry)
    before = _files(tmp_path)
    with pytest.raises(ModelError, match=match):
        registry.import_model(archive)
    assert _files(tmp_path) - before <= {"home", "home/models"}
    assert registry.list_models() == []


def test_zip_symlink_entries_are_refused(home, model_dir, tmp_path):
    archive = _zip_with(model_dir, tmp_path / "link.zip", "core/extra", b"/etc/passwd", stat.S_IFLNK | 0o777)
    with pytest.raises(ModelError, match="'core/extra' is a symbolic link"):
        registry.import_model(archive)
    assert registry.list_models() == []


@pytest.mark.parametrize("member,data,match", [
    (_tarinfo("../../evil.txt", size=4), b"evil", "points outside the archive folder"),
    (_tarinfo("/tmp/evil.txt", size=4), b"evil", "has an absolute path"),
    (_tarinfo("core/link", tarfile.SYMTYPE, link="../../../etc/passwd"), b"", "is a symbolic link"),
    (_tarinfo("core/hard", tarfile.LNKTYPE, link="/etc/passwd"), b"", "is a hard link"),
    (_tarinfo("core/dev", tarfile.CHRTYPE), b"", "is a special file"),
    (_tarinfo("core/fifo", tarfile.FIFOTYPE), b"", "is a special file"),
])
def test_tar_entries_escaping_the_folder_or_special_are_refused(home, model_dir, tmp_path, member, data, match):
    archive = _tar_with(model_dir, tmp_path / "bad.tar.gz", member, data)
    before = _files(tmp_path)
    with pytest.raises(ModelError, match=match):
        registry.import_model(archive)
    assert _files(tmp_path) - before <= {"home", "home/models"}
    assert not (tmp_path.parent / "evil.txt").exists()
    assert registry.list_models() == []


def test_archive_with_a_wrong_checksum_is_refused(home, model_dir, tmp_path):
    card = json.loads((model_dir / CARD_FILE).read_text())
    card["weights"]["sha256"] = "0" * 64
    (model_dir / CARD_FILE).write_text(json.dumps(card))
    archive = tmp_path / "core.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(model_dir / CARD_FILE, CARD_FILE)
        zf.write(model_dir / WEIGHTS_FILE, WEIGHTS_FILE)
    with pytest.raises(ModelError, match="SHA256 mismatch"):
        registry.import_model(archive)
    assert registry.list_models() == [] and list((home / "models").iterdir()) == []


def test_archive_without_a_card_and_pickle_files_are_refused(home, model_dir, tmp_path):
    archive = tmp_path / "nothing.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/readme.txt", "hello")
    with pytest.raises(ModelError, match=f"no {CARD_FILE} at the top of the archive"):
        registry.import_model(archive)
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(ModelError, match="pickle checkpoints are refused"):
        registry.import_model(tmp_path / "model.pt")
